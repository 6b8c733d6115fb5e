"""An append-only file written through a shared memory mapping: bytes handed to the OS without a system call.

The results of a run are handed to the OS after every ppl call, so that ``kill -9`` loses at most the call in
flight. A ``write(2)`` per call cost 1.5-2.5 us per record of a one-record handler on the 2-core test machine, more
than the rest of swcli's work for that record. Bytes copied into a ``MAP_SHARED`` mapping of the file are in the
page cache as soon as they are copied: a process killed then leaves them in the file like written ones.

- The file is mapped one window (:data:`WINDOW`) at a time; a window's blocks are reserved first
  (``posix_fallocate``), so a full disk or a quota is an ``OSError`` there, never a ``SIGBUS`` on a copy.
- The file's size runs ahead of what was written (up to the window's end, zeros): :meth:`MappedAppend.close` cuts it
  to what was written. A killed process leaves the zeros, which a reader of lines sees as one last line with no
  newline: cut by ``--resume`` like a line cut by the kill (:mod:`builder.evaluate.runner.resume`).
- When a window cannot be reserved or mapped (the disk is full, a filesystem without mappings) the file goes on
  with ``pwrite(2)``, which raises what a write raises; every error is an ``OSError`` for the caller to name.
"""

from __future__ import annotations

import mmap
import os

WINDOW = 1 << 20  # bytes mapped (and reserved) at a time


class MappedAppend:
    """Appends to the file open on ``fd`` (read-write) from byte ``pos``; the caller owns and closes ``fd``."""

    def __init__(self, fd: int, pos: int):
        self.fd, self.pos = fd, pos
        self._map: mmap.mmap | None = None
        self._base = self._end = 0
        self._mapping = hasattr(os, "posix_fallocate")  # False once a window could not be had: pwrite from then on

    def put(self, data: bytes) -> None:
        """Append ``data``; raises OSError."""
        pos, size = self.pos, len(data)
        if pos + size <= self._end:  # the hot path: the window holds it
            self._map[pos - self._base : pos - self._base + size] = data  # type: ignore[index]
            self.pos = pos + size
            return
        view = memoryview(data)
        while view:
            if self._mapping and self.pos >= self._end:
                self._window()
            if self._map is not None and self.pos < self._end:
                part = view[: self._end - self.pos]
                self._map[self.pos - self._base : self.pos - self._base + len(part)] = part
            else:
                part = view[: os.pwrite(self.fd, view, self.pos)]
            self.pos += len(part)
            view = view[len(part):]

    def _window(self) -> None:
        """Map the window holding ``pos``, its blocks reserved; on failure, stop mapping for good."""
        self._unmap()
        base = self.pos & ~(mmap.ALLOCATIONGRANULARITY - 1)
        try:
            os.posix_fallocate(self.fd, base, WINDOW)
            self._map = mmap.mmap(self.fd, WINDOW, offset=base)
            self._base, self._end = base, base + WINDOW
        except (OSError, ValueError):
            self._mapping = False
            os.ftruncate(self.fd, self.pos)  # nothing reserved past what was written

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._base = self._end = 0

    def close(self) -> None:
        """Unmap and cut the file to what was written (the caller closes ``fd``); raises OSError."""
        self._unmap()
        if os.fstat(self.fd).st_size != self.pos:
            os.ftruncate(self.fd, self.pos)
