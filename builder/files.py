"""Whole files, written and read back safely: an atomic write (readers never see half a file, and never one written
through a link), a file's sha256, a writer that hashes what goes through it, the umask, and whether the process a file is named after still lives.

The store, the OCI layout, caches and memos all write through here; a write that fails is a :class:`StoreError`
naming the path and what the system said (:func:`file_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from builder.errors import StoreError


def file_error(path: Path, doing: str, err: OSError) -> StoreError:
    """One line for an ``OSError`` met while ``doing`` something at ``path``: the file it names, and why."""
    return StoreError(err.filename or path, f"{doing}: {err.strerror or err}")


def current_umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (for files named after their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_key(path: str | Path, *, follow: bool = True) -> tuple[int, int, int] | None:
    """What tells that a file changed since it was read, for a cache: (size, mtime_ns, inode); None when it is not
    there or cannot be stat'ed. A file replaced by a rename, or a link pointed elsewhere, has another inode."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def flock_wait(fd: int, seconds: float) -> bool:
    """Take an exclusive ``flock`` on ``fd``, polling for at most ``seconds``; False when another holder kept it that
    long (the caller says what that means: its locks are held briefly, so a long wait is an error, not a hang)."""
    import fcntl
    import time

    give_up = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > give_up:
                return False
            time.sleep(0.05)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over, so readers never see half a file; the
    file gets the umask's mode (mkstemp would leave 0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise file_error(path, "cannot write", err) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise file_error(path, "cannot write", err) from None
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON (indented, strict: no NaN) written to a new random temp name beside ``path`` and renamed over it, never
    through a link at either name (:func:`builder.outdir.write_file`); its folder is created when missing."""
    from builder import outdir  # the adapter for files in folders someone else may have prepared

    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        outdir.write_file(path, data, follow_folder=True)
    except OSError as err:
        raise file_error(path, "cannot write", err) from None


class HashingWriter:
    """A file object that hashes and counts what goes through it (to ``fh``, or nowhere when it is None).

    ``behind``: chunks of 64 KiB or more are hashed on a second thread while the caller writes them and reads the
    next (hashlib releases the GIL, so on two cores a big blob costs about the slower of hashing and writing, not
    their sum). The caller must then leave a chunk alone until the write after the next one returns, as
    :func:`builder.images.dataset_layers.write_volume_tar`'s two alternating buffers do."""

    def __init__(self, fh: IO[bytes] | None, *, behind: bool = False):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0
        self.behind = behind
        self._thread: threading.Thread | None = None

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def write(self, data) -> int:
        self._wait()
        if self.behind and len(data) >= 1 << 16:
            self._thread = threading.Thread(target=self.sha.update, args=(data,))
            self._thread.start()
        else:
            self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data) if self.fh is not None else len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def digest(self) -> str:
        self._wait()
        return "sha256:" + self.sha.hexdigest()


HASH_WINDOW = 64 << 20


def hash_fd(sha, fd: int, size: int) -> None:
    """Feed ``size`` bytes of the open file ``fd`` to ``sha`` through read-only maps of :data:`HASH_WINDOW` bytes:
    no copy out of the page cache, hashlib drops the GIL for each window, and the memory mapped at once stays one
    window whatever the file's size."""
    import mmap

    for offset in range(0, size, HASH_WINDOW):
        with mmap.mmap(fd, min(HASH_WINDOW, size - offset), prot=mmap.PROT_READ, offset=offset) as window:
            sha.update(window)


class QueuedHasher:
    """sha256 of pieces handed over through a short queue to a worker thread, which also writes them to ``fh``
    when one is given: the thread that receives the bytes only hands them over (hashlib drops the GIL, so on two
    cores the hash costs it nothing). Pieces must not change once handed over (``bytes``, or views of them).
    :meth:`close` waits for the worker and closes ``fh``; a write error is raised there."""

    def __init__(self, fh: IO[bytes] | None = None):
        self.fh, self._sha, self._error = fh, hashlib.sha256(), None
        self._queue: queue.Queue = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sha.update(piece)
                    if self.fh is not None:
                        self.fh.write(piece)
                except OSError as err:
                    self._error = err

    def write(self, piece) -> None:
        self._queue.put(piece)

    update = write

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
            if self.fh is not None:
                self.fh.close()
        if self._error is not None:
            raise self._error

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()
