"""Overlap the runner's own work with the model's: read ahead of ``ppl`` and import ``cmp``'s libraries early.

- :func:`read_ahead` reads and checks (CRCs) the next records in a background thread while ``ppl`` runs on the
  current ones. Records come out in the same order; an error reading record *i* (a corrupt shard) is raised by
  the consumer after records before *i* were handed out, exactly where a plain loop would have raised it. The
  read-ahead is bounded (``depth`` chunks of at most ``chunk_records`` records or ``chunk_bytes`` bytes), so memory
  stays flat whatever the dataset's size; closing the generator (Ctrl-C, a failed record) stops the thread.
- :func:`warm_imports` imports the modules ``cmp`` will need (scikit-learn for ``@multi_classification``) in a
  background thread, so the import costs no wall time when the model computes without holding the GIL. A failed
  import is ignored here: ``cmp`` imports again and reports it.

Both help most on a machine with a core to spare; on one core they cost a thread switch per chunk.
"""

from __future__ import annotations

import importlib
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


def warm_imports(modules: Iterable[str]) -> threading.Thread | None:
    """Start importing ``modules`` in a background thread (None when there is nothing to import)."""
    names = [m for m in modules if isinstance(m, str)]
    if not names:
        return None

    def load() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - cmp imports it again and reports the error
                return

    thread = threading.Thread(target=load, name="swcli-warm-imports", daemon=True)
    thread.start()
    return thread
