"""A blob going up to a registry: the protocol (one ``PUT``, or ``PATCH`` chunks that resume) and the bytes.

Up to :data:`CHUNKED_THRESHOLD` a blob goes up in one ``PUT``. Above, in ``PATCH`` chunks of :data:`CHUNK_SIZE` with
``Content-Range``; after a broken chunk the upload resumes from the registry's ``Range``, or starts again in a new
session when the registry forgot it (404). :data:`MAX_RETRIES` failures in a row give up. The bytes come from any
offset of a file that can be opened again (:class:`Source`), as a body ``requests`` streams with its length known, in
pieces of :data:`READ_CHUNK` (the transfer deadline grants time for one piece).
"""

from __future__ import annotations

import re
from typing import BinaryIO, Callable, Iterator

from builder.errors import RegistryError
from builder.registry.session import Session, api_path, error_detail, with_query
from builder.registry.transport import BIG_PIECE, TransferError

CHUNKED_THRESHOLD = 32 << 20  # blobs above this size go up in PATCH chunks, so a broken upload can resume
CHUNK_SIZE = 32 << 20
MAX_RETRIES = 3               # failed attempts in a row (no progress between them) before an upload gives up
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


def upload_blob(session: Session, repository: str, digest: str, size: int, opener: Callable[[], BinaryIO],
                on_progress: OnProgress | None = None) -> None:
    """Upload ``size`` bytes that hash to ``digest``; ``opener()`` gives them from the start, again on retries (see
    the module docstring)."""
    if size > CHUNKED_THRESHOLD:
        _chunked(session, repository, digest, size, opener, on_progress)
    else:
        _monolithic(session, repository, digest, size, opener, on_progress)


def _start(session: Session, repository: str, what: str) -> str:
    response = session._request("POST", api_path(repository, "blobs") + "uploads/", scopes=session._scopes(
        repository, "pull,push"), what=what, expect=(202,))
    response.close()
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"registry {session.registry}: {what}: the registry gave no upload Location")
    return session._location(location, session._transport.base + "/", what)


def _finish(session: Session, repository: str, digest: str, location: str, what: str,
            body: Callable[[], object] | None, length: int) -> None:
    response = session._request("PUT", with_query(location, digest=digest), scopes=session._scopes(
        repository, "pull,push"), what=what, expect=(201, 400), body=body,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)})
    if response.status_code == 400:
        detail = error_detail(response)
        if "DIGEST_INVALID" in detail or "digest" in detail.lower():
            raise RegistryError(f"registry {session.registry}: the bytes uploaded for blob {digest} of "
                                f"{session._where(repository)} do not match that digest (did the file change?)")
        raise session._failure(response, what)
    response.close()


def _monolithic(session: Session, repository, digest, size, opener, on_progress) -> None:
    what = f"upload of blob {digest} to {session._where(repository)}"
    source = Source(opener)
    try:
        for attempt in range(1, MAX_RETRIES + 1):
            try:
                location = _start(session, repository, what)
                _finish(session, repository, digest, location, what, source.body(0, size, on_progress), size)
                return
            except TransferError:
                if attempt == MAX_RETRIES:
                    raise
    finally:
        source.close()


def _status(session: Session, repository: str, location: str, what: str) -> tuple[str, int] | None:
    """Where an upload session continues and how many bytes the registry holds of it (its ``Range``), or None
    when the registry forgot the session (or gave up on it)."""
    response = session._request("GET", location, scopes=session._scopes(repository, "pull,push"), what=what,
                                expect=(204, 404))
    response.close()
    if response.status_code == 404:
        return None
    match = re.fullmatch(r"\s*(?:bytes=)?0-(-?\d+)\s*", response.headers.get("Range", ""))
    end = int(match.group(1)) if match else 0
    return session._location(response.headers.get("Location") or location, location, what), end + 1 if end > 0 else 0


def _chunked(session: Session, repository, digest, size, opener, on_progress) -> None:
    what = f"upload of blob {digest} to {session._where(repository)}"
    scopes = session._scopes(repository, "pull,push")
    location, offset, failures, source = _start(session, repository, what), 0, 0, Source(opener)
    try:
        while offset < size:
            length = min(CHUNK_SIZE, size - offset)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                       "Content-Range": f"{offset}-{offset + length - 1}"}
            try:
                response = session._request("PATCH", location, scopes=scopes, what=what, expect=(202, 404, 416),
                                            headers=headers, body=source.body(offset, length, on_progress))
            except TransferError:
                failures += 1
                if failures >= MAX_RETRIES:
                    raise
                status = _status(session, repository, location, what)
            else:
                response.close()
                if response.status_code == 202:
                    location = session._location(response.headers.get("Location") or location, location, what)
                    offset, failures = offset + length, 0
                    continue
                failures += 1  # 404: the registry gave up on the session; 416: it holds another amount
                if failures >= MAX_RETRIES:
                    raise RegistryError(f"registry {session.registry}: {what} failed: the chunk at byte {offset} "
                                        f"was refused {failures} times (HTTP {response.status_code})")
                status = None if response.status_code == 404 else _status(session, repository, location, what)
            if status is None:  # the registry forgot the session (restarted, gave up): start again
                status = _start(session, repository, what), 0
            location, offset = status[0], min(status[1], size)
        _finish(session, repository, digest, location, what, None, 0)
    finally:
        source.close()
