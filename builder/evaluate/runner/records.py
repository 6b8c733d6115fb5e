"""The records of a run as a range of a dataset reader: what forked ppl workers read for themselves, and what
``--resume`` skips to without reading the records before.

A dataset reader (:class:`builder.volumes.DatasetReader`) is its records ``0..len``; a :class:`RecordRange` is
records ``start..stop`` of one (a shard, or the rest after a worker got stuck). :func:`range_of` says whether an
iterable of records is one of these, and so can be read by index range; any other iterable is read in turn.
"""

from __future__ import annotations

from typing import Any, Iterator


class RecordRange:
    """Records ``start``..``stop`` of a dataset reader, resumable from any index without reading those before."""

    def __init__(self, reader: Any, start: int, stop: int):
        self.reader, self.start, self.stop = reader, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator:
        return self.reader.iter_records(self.start, self.stop)

    def iter_records(self, start: int) -> Iterator:
        return self.reader.iter_records(max(start, self.start), self.stop)


def range_of(records: Any) -> tuple[Any, int, int] | None:
    """``(reader, start, stop)`` when ``records`` can be read by index range (a dataset reader or a
    :class:`RecordRange`), which workers need; None for any other iterable."""
    from builder.volumes import DatasetReader

    if isinstance(records, RecordRange):
        return records.reader, records.start, records.stop
    if isinstance(records, DatasetReader):
        return records, 0, len(records)
    return None
