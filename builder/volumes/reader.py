"""Reading a dataset entry: :class:`DatasetReader`, random and sequential access that checks every record.

The index is checked whole (magic, version, size, CRC) when the reader opens; each record's header is checked
against its index entry and its own CRC, then its payload CRC, as it is read. Volumes are memory-mapped on first
use, never through a link, and a sequential walk hands the pages it has read back as it goes.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator, NamedTuple

from builder.errors import ShardCorruptError
from builder.volumes.format import (FORMAT_VERSION, INDEX_ENTRY, INDEX_HEADER, INDEX_MAGIC, INDEX_NAME, INDEX_TRAILER,
                                    RECORD_HEADER, RECORD_MAGIC, volume_name)
from builder.volumes.manifest import MANIFEST_NAME, manifest_layout

try:  # ISA-L's CRC-32 (the same function as zlib's): 0.1 us for a 3 KB record, zlib's 1.4 us
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - a model image may carry only the standard library
    _crc32 = zlib.crc32

RELEASE_EVERY = 32 << 20  # a sequential read hands back the pages it has read every this many bytes
_TAIL = struct.Struct("<QIII I")  # the header's fields after magic and header crc, as the writer packs them


class Record(NamedTuple):
    """One record: its position in the dataset, its data bytes and its label bytes (a tuple: cheap to make)."""

    index: int
    data: bytes
    label: bytes


def _map(path: Path) -> mmap.mmap | bytes:
    """Map a file read-only; a symlink in its place is refused (ELOOP), so a name cannot lead out of the entry."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ShardCorruptError(path, 0, "is a symlink; dataset files must be regular files") from None
        raise
    with open(fd, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


class DatasetReader:
    """Random and sequential access to a dataset directory, checking every record it returns.

    Volumes are memory-mapped on first use, so iterating a dataset larger than memory stays bounded by the page
    cache, and ``reader[i]`` costs one index lookup and one read.
    """

    def __init__(self, directory: str | Path, manifest: dict | None = None):
        self.directory = Path(directory)
        self.manifest = manifest if manifest is not None else self._load_manifest()
        # file names come from the manifest when it lists them (checked: plain names inside the entry); a bare
        # folder of volumes, or a manifest listing no files, uses the writer's names
        self._names: list[str] | None = None
        index_name = INDEX_NAME
        if isinstance(self.manifest, dict) and ("shards" in self.manifest or "index" in self.manifest):
            layout = manifest_layout(self.manifest, self.directory / MANIFEST_NAME)
            self._names, index_name = [s.file for s in layout.volumes], layout.index
        index_path = self.directory / index_name
        try:
            self._index = _map(index_path)
        except FileNotFoundError:
            raise ShardCorruptError(index_path, 0, "index file is missing") from None
        self._check_index(index_path)
        if self._names is not None and len(self._names) != self._volume_count:
            raise ShardCorruptError(index_path, 20, f"index counts {self._volume_count} volumes, the manifest lists "
                                                    f"{len(self._names)} shards")
        self._volumes: dict[int, mmap.mmap | bytes] = {}
        self._walk = (-1, 0)  # where the last iter_records left off: (volume, pages handed back up to there)

    def _load_manifest(self) -> dict:
        import json

        path = self.directory / MANIFEST_NAME
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, RecursionError) as err:
            raise ShardCorruptError(path, 0, f"manifest is not valid JSON: {err}") from None

    def volume_path(self, number: int) -> Path:
        if self._names is None:
            return self.directory / volume_name(number)
        if not 0 <= number < len(self._names):
            raise ShardCorruptError(self.directory / INDEX_NAME, 0, f"index names volume {number}, the manifest lists "
                                                                    f"{len(self._names)}")
        return self.directory / self._names[number]

    def _check_index(self, path: Path) -> None:
        idx = self._index
        if len(idx) < INDEX_HEADER.size + INDEX_TRAILER.size:
            raise ShardCorruptError(path, len(idx), "index is truncated")
        magic, version, _flags, count, entry_size, volumes, alignment, _ = INDEX_HEADER.unpack_from(idx, 0)
        if magic != INDEX_MAGIC:
            raise ShardCorruptError(path, 0, f"bad index magic {magic!r}")
        if version != FORMAT_VERSION or entry_size != INDEX_ENTRY.size:
            raise ShardCorruptError(path, 4, f"unsupported index version {version} (entry size {entry_size})")
        expected = INDEX_HEADER.size + count * INDEX_ENTRY.size + INDEX_TRAILER.size
        if len(idx) != expected:
            raise ShardCorruptError(path, len(idx), f"index is {len(idx)} bytes, expected {expected} for {count} records")
        body_end = expected - INDEX_TRAILER.size
        (stored,) = INDEX_TRAILER.unpack_from(idx, body_end)
        if _crc32(idx[:body_end]) != stored:
            raise ShardCorruptError(path, body_end, "index checksum mismatch")
        self._count = count
        self._volume_count = volumes
        self.alignment = alignment

    def __len__(self) -> int:
        return self._count

    def _volume(self, number: int) -> mmap.mmap | bytes:
        vol = self._volumes.get(number)
        if vol is None:
            path = self.volume_path(number)
            try:
                vol = _map(path)
            except FileNotFoundError:
                raise ShardCorruptError(path, 0, "volume file is missing") from None
            self._volumes[number] = vol
        return vol

    def __getitem__(self, i: int) -> Record:
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"record {i} out of range (dataset has {self._count})")
        entry = INDEX_ENTRY.unpack_from(self._index, INDEX_HEADER.size + i * INDEX_ENTRY.size)
        return self._read(i, *entry)

    def _read(self, i: int, volume: int, offset: int, data_len: int, label_len: int, crc: int) -> Record:
        """Check the record's header against the index and its own CRC, then its payload CRC; hot path."""
        buf = self._volumes.get(volume) or self._volume(volume)
        start = offset + RECORD_HEADER.size
        end = start + data_len + label_len
        if end > len(buf):
            raise ShardCorruptError(self.volume_path(volume), offset,
                                    f"truncated: record needs bytes up to {end}, file has {len(buf)}", record=i)
        magic, header_crc, index, h_data, h_label, h_crc, _ = RECORD_HEADER.unpack_from(buf, offset)
        if magic != RECORD_MAGIC or header_crc != _crc32(buf[offset + 8 : start]) or (index, h_data, h_label, h_crc) != (i, data_len, label_len, crc):
            what = f"bad record magic {magic!r}" if magic != RECORD_MAGIC else "record header does not match the index"
            raise ShardCorruptError(self.volume_path(volume), offset, what, record=i)
        data = buf[start : start + data_len]
        label = buf[start + data_len : end]
        if _crc32(label, _crc32(data)) != crc:
            raise ShardCorruptError(self.volume_path(volume), start, "payload checksum mismatch", record=i)
        return Record(i, data, label)

    def iter_records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records ``start`` to ``stop`` in order, each checked as :meth:`__getitem__` checks it.

        Index entries are decoded in blocks; a record's header is compared whole with the one the writer makes from
        its index entry (:func:`builder.volumes.format.record_header`), and only one that differs goes through
        :meth:`_read`'s field by field check, which raises (or accepts a header it would accept). Pages already
        read are handed back as the walk goes (every ``RELEASE_EVERY`` bytes, and a volume is unmapped when the
        walk leaves it), so the process's resident memory stays flat however large the dataset is. A walk in many
        calls that move forward (a ppl worker's chunks) hands pages back as one walk does."""
        stop = self._count if stop is None else min(stop, self._count)
        start = max(start, 0)
        current, released = self._walk
        if start < stop and current >= 0:
            volume, offset = INDEX_ENTRY.unpack_from(self._index, INDEX_HEADER.size + start * INDEX_ENTRY.size)[:2]
            if volume == current and offset < released:  # a walk that starts behind the last one hands back from here
                released = offset & ~(mmap.PAGESIZE - 1)
                self._walk = (current, released)
        for first in range(start, stop, 4096):
            yield from self._block(first, min(first + 4096, stop))

    def _block(self, first: int, last: int) -> Iterator[Record]:
        """Records ``first``..``last`` (the hot path of a walk): see :meth:`iter_records`."""
        raw = self._index[INDEX_HEADER.size + first * INDEX_ENTRY.size : INDEX_HEADER.size + last * INDEX_ENTRY.size]
        current, released = self._walk
        buf = self._volume(current) if current >= 0 else b""
        size = len(buf)
        tail, crc32, record, magic, head = _TAIL.pack, _crc32, tuple.__new__, RECORD_MAGIC, RECORD_HEADER.size
        for i, (volume, offset, data_len, label_len, crc) in enumerate(INDEX_ENTRY.iter_unpack(raw), first):
            if volume != current:
                if current >= 0:
                    self._unmap(current)
                current, released = volume, offset & ~(mmap.PAGESIZE - 1)
                self._walk = (current, released)
                buf = self._volume(volume)
                size = len(buf)
            elif offset - released >= RELEASE_EVERY:
                released = self._release(volume, released, offset)
                self._walk = (current, released)
            begin = offset + head
            mid = begin + data_len
            end = mid + label_len
            fields = tail(i, data_len, label_len, crc, 0)
            if end > size or buf[offset:begin] != magic + crc32(fields).to_bytes(4, "little") + fields:
                yield self._read(i, volume, offset, data_len, label_len, crc)
                continue
            data = buf[begin:mid]
            label = buf[mid:end]
            if crc32(label, crc32(data)) != crc:
                raise ShardCorruptError(self.volume_path(volume), begin, "payload checksum mismatch", record=i)
            yield record(Record, (i, data, label))

    def _unmap(self, number: int) -> None:
        vol = self._volumes.pop(number, None)
        if isinstance(vol, mmap.mmap):
            vol.close()

    def _release(self, number: int, start: int, end: int) -> int:
        """Drop the pages of volume ``number`` from ``start`` (page-aligned) up to the page holding ``end`` from this
        process's memory (they stay in the page cache); returns where the next release starts."""
        vol = self._volumes.get(number)
        end &= ~(mmap.PAGESIZE - 1)
        if isinstance(vol, mmap.mmap) and end > start and hasattr(vol, "madvise"):
            vol.madvise(mmap.MADV_DONTNEED, start, end - start)
        return end

    def __iter__(self) -> Iterator[Record]:
        return self.iter_records()

    def close(self) -> None:
        for vol in self._volumes.values():
            if isinstance(vol, mmap.mmap):
                vol.close()
        self._volumes.clear()
        if isinstance(self._index, mmap.mmap):
            self._index.close()

    def __enter__(self) -> DatasetReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
