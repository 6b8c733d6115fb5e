"""Writing a dataset's volumes and index: :class:`VolumeWriter`, with each volume's sha256 taken while it is written.

Records are appended to aligned volumes (a new volume when the next record would overflow ``volume_size``); the
index is written on close. Two threads of their own (:class:`_Hasher`, the even and the odd volumes) hash the bytes
as they go out, so no volume is read back to be listed in the manifest. Records' CRC-32 come from ISA-L.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

try:  # the same CRC-32 as zlib's, ~30x faster (carry-less multiply): zlib's took a third of a dataset build
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - an image may carry only the standard library (it reads, never writes)
    from zlib import crc32

from builder.volumes.format import (FORMAT_VERSION, INDEX_ENTRY, INDEX_HEADER, INDEX_MAGIC, INDEX_NAME, INDEX_TRAILER,
                                    MAX_PART, RECORD_HEADER, align_up, record_header, volume_name)


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    records: int
    size: int
    sha256: str = ""


class _Hasher(threading.Thread):
    """sha256 of each volume, on a thread of its own while the writer writes: the bytes handed over are hashed in
    order; ``None`` ends a volume. hashlib drops the GIL for big buffers, so hashing and writing overlap on two
    cores. At most ``limit`` bytes wait to be hashed (or one record, if it is bigger): a writer ahead of the hash
    waits rather than holding records in memory."""

    BATCH = 1 << 20  # records smaller than this go over in batches: a hand-over per 200-byte record cost more
    #                  than hashing it (2-3x slower than hashing inline, measured on 300k records)

    def __init__(self, limit: int = 64 << 20):
        super().__init__(name="swds-hasher", daemon=True)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.digests: list[str] = []
        self.error: BaseException | None = None
        self._limit, self._pending = limit, 0
        self._room = threading.Condition()
        self._batch: list = []
        self._batch_size = 0

    def put(self, parts: tuple, size: int) -> None:
        self._batch.extend(parts)
        self._batch_size += size
        if self._batch_size >= self.BATCH:
            self._send()

    def _send(self) -> None:
        if not self._batch:
            return
        parts, size = tuple(self._batch), self._batch_size
        self._batch, self._batch_size = [], 0
        with self._room:
            while self._pending and self._pending + size > self._limit:
                self._room.wait()
            self._pending += size
        self.queue.put((parts, size))

    def end_volume(self) -> None:
        self._send()
        self.queue.put(None)

    def run(self) -> None:
        sha = hashlib.sha256()
        while True:
            item = self.queue.get()
            if item is None:
                self.digests.append(sha.hexdigest())
                sha = hashlib.sha256()
                continue
            if item is StopIteration:
                return
            parts, size = item
            if self.error is None:
                try:
                    for part in parts:
                        sha.update(part)
                except BaseException as err:  # noqa: BLE001 - handed to the writer's thread
                    self.error = err
            with self._room:
                self._pending -= size
                self._room.notify()

    def finish(self) -> list[str]:
        self._send()
        self.queue.put(StopIteration)
        self.join()
        if self.error is not None:
            raise self.error
        return self.digests


class VolumeWriter:
    """Appends records to aligned volumes and writes the index on :meth:`close`.

    A new volume starts whenever the next record would push the current one past ``volume_size``; a record larger
    than ``volume_size`` on its own gets a volume of its own. Writes are buffered; nothing is fsynced per record.
    Each volume's sha256 is computed while it is written (:class:`_Hasher`), so no volume is read back.
    """

    def __init__(self, directory: Path, alignment_size: int, volume_size: int, buffer_size: int = 1 << 20):
        if alignment_size <= 0 or alignment_size & (alignment_size - 1):
            raise ValueError(f"alignment_size must be a power of two, got {alignment_size}")
        self.directory = Path(directory)
        self.alignment = alignment_size
        self.volume_size = volume_size
        self._buffer_size = buffer_size
        self._entries = bytearray()
        self._count = 0
        self._volumes: list[VolumeInfo] = []
        self._fh: BinaryIO | None = None
        self._offset = 0
        self._volume_records = 0
        self._pad = bytes(alignment_size)
        # volumes are hashed by two threads in turn (even and odd volumes): one sha256 runs at ~1.7 GB/s, slower
        # than the writes, so with one the writer waited on it; with two both cores hash while the writer writes
        self._hashers = [_Hasher(), _Hasher()]
        for hasher in self._hashers:
            hasher.start()
        self._hasher = self._hashers[0]

    @property
    def count(self) -> int:
        return self._count

    def _roll(self) -> None:
        self._finish_volume()
        number = len(self._volumes)
        self._fh = open(self.directory / volume_name(number), "wb", buffering=self._buffer_size)
        self._hasher = self._hashers[number % len(self._hashers)]
        self._offset = 0
        self._volume_records = 0

    def _finish_volume(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._hasher.end_volume()
            self._volumes.append(VolumeInfo(volume_name(len(self._volumes)), self._volume_records, self._offset))
            self._fh = None

    def add(self, data: bytes, label: bytes) -> int:
        """Append one record; returns its index."""
        if len(data) > MAX_PART or len(label) > MAX_PART:
            raise ValueError(f"record {self._count}: data and label must each be under 4 GiB")
        size = align_up(RECORD_HEADER.size + len(data) + len(label), self.alignment)
        if self._fh is None or (self._volume_records and self._offset + size > self.volume_size):
            self._roll()
        crc = crc32(label, crc32(data))
        index = self._count
        fh = self._fh
        header = record_header(index, len(data), len(label), crc)
        pad = self._pad[: size - RECORD_HEADER.size - len(data) - len(label)]
        self._hasher.put((header, data, label, pad), size)
        fh.write(header)
        fh.write(data)
        fh.write(label)
        if pad:
            fh.write(pad)
        self._entries += INDEX_ENTRY.pack(len(self._volumes), self._offset, len(data), len(label), crc)
        self._offset += size
        self._volume_records += 1
        self._count += 1
        return index

    def close(self) -> list[VolumeInfo]:
        """Finish the last volume and write the index; returns the volumes written, with their sha256."""
        self._finish_volume()
        done = [hasher.finish() for hasher in self._hashers]
        digests = [done[n % len(done)][n // len(done)] for n in range(len(self._volumes))]
        self._volumes = [VolumeInfo(v.name, v.records, v.size, sha) for v, sha in zip(self._volumes, digests)]
        header = INDEX_HEADER.pack(
            INDEX_MAGIC, FORMAT_VERSION, 0, self._count, INDEX_ENTRY.size, len(self._volumes), self.alignment, 0
        )
        crc = zlib.crc32(self._entries, zlib.crc32(header))
        with open(self.directory / INDEX_NAME, "wb") as fh:
            fh.write(header)
            fh.write(self._entries)
            fh.write(INDEX_TRAILER.pack(crc))
        return list(self._volumes)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for hasher in self._hashers:
            if hasher.is_alive():
                hasher.queue.put(StopIteration)
                hasher.join()
