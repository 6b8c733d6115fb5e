"""The bytes of a blob being uploaded: from any offset of a file that can be opened again, as a body ``requests``
streams with its length known, in pieces of :data:`PIECE` (the transfer deadline grants time for one piece)."""

from __future__ import annotations

from typing import BinaryIO, Callable, Iterator

from builder.errors import RegistryError
from builder.registry.transport import BIG_PIECE

READ_CHUNK = BIG_PIECE
OnProgress = Callable[[int], None]


class Body:
    """``length`` bytes of ``source`` from its current position, as an iterable requests streams (Content-Length
    known), reporting ``start + bytes sent`` to ``on_progress``."""

    piece = READ_CHUNK

    def __init__(self, source: BinaryIO, length: int, start: int, on_progress: OnProgress | None):
        self.source, self.length, self.start, self.on_progress = source, length, start, on_progress

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        left, sent = self.length, 0
        while left:
            data = self.source.read(min(READ_CHUNK, left))
            if not data:
                raise RegistryError(f"the file being uploaded ended {left} bytes early (it changed while pushing?)")
            left -= len(data)
            sent += len(data)
            yield data
            if self.on_progress:
                self.on_progress(self.start + sent)


class Source:
    """The bytes of a blob being uploaded, from any offset: the open file is sought back (or opened again with
    ``opener`` and skipped forward when it cannot seek) before every attempt, so a retried request never sends
    from where a broken one stopped reading."""

    def __init__(self, opener: Callable[[], BinaryIO]):
        self.opener, self.fh = opener, None

    def at(self, offset: int) -> BinaryIO:
        if self.fh is not None and self.fh.seekable():
            self.fh.seek(offset)
            return self.fh
        self.close()
        self.fh = self.opener()
        left = offset
        while left:
            skipped = self.fh.read(min(READ_CHUNK, left))
            if not skipped:
                break
            left -= len(skipped)
        return self.fh

    def body(self, offset: int, length: int, on_progress: OnProgress | None) -> Callable[[], Body]:
        return lambda: Body(self.at(offset), length, offset, on_progress)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
