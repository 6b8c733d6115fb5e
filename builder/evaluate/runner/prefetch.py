"""Overlap the runner's own work with the model's: read ahead of ``ppl``.

- :func:`read_ahead` reads and checks (CRCs) the next records in a background thread while ``ppl`` runs on the
  current ones. Records come out in the same order; an error reading record *i* (a corrupt shard) is raised by
  the consumer after records before *i* were handed out, exactly where a plain loop would have raised it. The
  read-ahead is bounded (``depth`` chunks of at most ``chunk_records`` records or ``chunk_bytes`` bytes), so memory
  stays flat whatever the dataset's size; closing the generator (Ctrl-C, a failed record) stops the thread.

It helps most on a machine with a core to spare; on one core it costs a thread switch per chunk. ``cmp``'s
libraries are imported early too, in a helper process rather than a thread (:mod:`builder.evaluate.runner.metric_worker`):
an import holds the GIL nearly all the time and slowed ``ppl`` as much as it saved.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

CHUNK_RECORDS = 64
CHUNK_BYTES = 8 << 20
DEPTH = 2
_DONE = object()


class _Failed:
    """The exception the reader thread met, raised in the consumer when it gets there."""

    def __init__(self, err: BaseException):
        self.err = err


def read_ahead(records: Iterable, *, chunk_records: int = CHUNK_RECORDS, chunk_bytes: int = CHUNK_BYTES,
               depth: int = DEPTH) -> Iterator:
    """Yield ``records`` in order, read by a background thread up to ``depth`` chunks ahead."""
    chunks: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        chunk: list = []
        size = 0
        try:
            for rec in records:
                chunk.append(rec)
                size += len(rec.data) if isinstance(rec.data, (bytes, bytearray, memoryview)) else 0
                if len(chunk) >= chunk_records or size >= chunk_bytes:
                    if not put(chunk):
                        return
                    chunk, size = [], 0
            if chunk and not put(chunk):
                return
            put(_DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, in order
            if chunk and not put(chunk):
                return
            put(_Failed(err))

    thread = threading.Thread(target=read, name="swcli-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.err
            yield from item
    finally:
        stop.set()
        thread.join()
