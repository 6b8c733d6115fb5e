"""Files in folders someone else may have prepared: output folders (``model eval -o``, ``--resume``,
``eval merge -o``, ``job run -o`` and its ``parts/``), the report file, the run lock.

Such a folder is hostile until checked: another user or program may have planted a link, a hard link or a FIFO at
any name swcli uses there. Every name is reached from a descriptor of its folder (``dir_fd``), never through a link:

- the output folder itself is opened ``O_DIRECTORY | O_NOFOLLOW`` (:func:`make_folder`); the folders swcli creates
  are made one level at a time under their parent's descriptor, so a link at any of them is refused, not followed
  (the path the user gave up to the folder is theirs, and is followed as usual);
- a file is written to a new temp name (``O_CREAT | O_EXCL | O_NOFOLLOW``, a random suffix from ``secrets``) and
  renamed over its name (:func:`write_file`, :func:`open_temp`), so a link or hard link at that name is replaced,
  never written through;
- a file opened in place (the run lock, run.json rewritten on a full disk, results appended on ``--resume``, any
  file read back) is opened ``O_NOFOLLOW | O_NONBLOCK``, then must be a regular file (and, to be written, have one
  link) before a byte moves: a FIFO never blocks, a hard link to a file elsewhere is never changed;
- JSON read back is bounded while it is read, before it is parsed (:func:`read_bytes`).

A refusal is an :class:`UnsafeFileError`: an ``OSError`` whose ``filename`` is the path and whose ``strerror`` says
what is there, so each caller's one-line handling of a file it cannot write names it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Iterator

MAX_RUN_JSON = 4 << 20  # a run.json read back: ours are a few KB (21k label names ~0.6 MB); the bound of an OCI config
MAX_METRICS = 256 << 20  # metrics.json read back: every ROC point is kept, so 100 labels over 1M records is ~120 MB

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IN_PLACE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """A name in a prepared folder that swcli will not open: a link, FIFO, socket, device, a folder where a file
    belongs, a file with other hard links where swcli writes in place, or one larger than swcli writes there."""

    def __init__(self, path: str | Path, what: str, *, through: bool = True):
        hint = "; swcli does not write or read through it (remove it, or use another folder)" if through else ""
        super().__init__(errno.EPERM, what + hint, str(path))


def _what(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISDIR, "a folder where a file belongs"), (stat.S_ISCHR, "a device"),
                        (stat.S_ISBLK, "a device")):
        if test(mode):
            return f"is {words}"
    return "is not a regular file"


def _at(path: Path, err: OSError) -> OSError:
    """``err`` of a call made relative to a folder's descriptor, naming the whole ``path`` instead of its last
    component (the one line the user sees names it)."""
    if isinstance(err, UnsafeFileError) or err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def _refuse_link_or_not_dir(path: Path, err: OSError) -> OSError:
    """The error for a folder that ``O_DIRECTORY | O_NOFOLLOW`` would not open."""
    with contextlib.suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            return UnsafeFileError(path, "is a symbolic link, not a folder")
        if not stat.S_ISDIR(mode):
            return UnsafeFileError(path, (_what(mode) or "is a file").replace(" where a file belongs", "")
                                   + ", not a folder")
    return err


@contextlib.contextmanager
def folder(path: str | Path, *, follow: bool = False) -> Iterator[int]:
    """A descriptor of the existing folder ``path``, its last component not followed if it is a link (unless
    ``follow``: a folder the user named as the place of a file, like ``eval report -o DIR/report.html``)."""
    path = Path(path)
    try:
        fd = os.open(path, _DIR & ~os.O_NOFOLLOW if follow else _DIR)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse_link_or_not_dir(path, err) from None
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def make_folder(path: str | Path) -> None:
    """Make sure ``path`` is a folder, not a link to one: the missing levels are created one at a time, each
    under its parent's descriptor and opened without following links; an existing ``path`` must be a real folder.
    The existing part of the path above it is the user's, followed as usual."""
    path = Path(os.path.abspath(path))
    missing: list[str] = []
    top = path
    while not os.path.lexists(top) and top != top.parent:
        missing.append(top.name)
        top = top.parent
    if not missing:
        with folder(path):
            return
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the user's path: followed
    try:
        for name in reversed(missing):
            top = top / name
            try:
                os.mkdir(name, 0o777, dir_fd=fd)
            except FileExistsError:  # made meanwhile: opened below, so a link is refused
                pass
            except OSError as err:
                raise _at(top, err) from None
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _refuse_link_or_not_dir(top, err) from None
                raise _at(top, err) from None
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def lstat(path: str | Path) -> os.stat_result | None:
    """The entry at ``path`` itself (a link not followed), or None when there is none; its folder not followed."""
    path = Path(path)
    with folder(path.parent) as fd:
        try:
            return os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise _at(path, err) from None


def is_file(path: str | Path) -> bool:
    """``path`` is a regular file (not a link to one)."""
    try:
        st = lstat(path)
    except OSError:
        return False
    return st is not None and stat.S_ISREG(st.st_mode)


def check_file(path: str | Path, *, single: bool = False) -> bool:
    """False when nothing is at ``path``; True for a regular file (with no other hard link, when ``single``: it is
    to be changed in place); :class:`UnsafeFileError` for anything else."""
    st = lstat(path)
    if st is None:
        return False
    what = _what(st.st_mode) or (_links(st.st_nlink) if single else None)
    if what:
        raise UnsafeFileError(path, what)
    return True


def _links(count: int) -> str | None:
    return f"has {count} hard links (a file elsewhere may be one of them)" if count > 1 else None


def _open_in_place(path: Path, flags: int, *, dir_fd: int, single: bool, mode: int = 0o666) -> int:
    """``path`` opened without following a link or blocking, checked to be a regular file (with one link when
    ``single``) before its descriptor is handed out, blocking again."""
    fd = os.open(path.name, flags | _IN_PLACE, mode, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        what = _what(st.st_mode)
        if what:
            raise UnsafeFileError(path, what)
        if single and st.st_nlink > 1:
            raise UnsafeFileError(path, _links(st.st_nlink))
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refused_open(path: Path, err: OSError, dfd: int) -> OSError:
    """What an open of ``path`` that failed found there, when it is not a regular file (ELOOP from O_NOFOLLOW is a
    link, ENXIO a FIFO without a reader, EISDIR a folder...); else ``err`` itself."""
    if isinstance(err, UnsafeFileError):
        return err
    with contextlib.suppress(OSError):
        what = _what(os.stat(path.name, dir_fd=dfd, follow_symlinks=False).st_mode)
        if what:
            return UnsafeFileError(path, what)
    return _at(path, err)


def open_in_place(path: str | Path, flags: int = os.O_RDWR, *, mode: int = 0o666) -> int:
    """A descriptor of the regular, singly-linked file ``path`` for writing in place (``flags`` may add
    ``O_CREAT``, ``O_APPEND``...); never through a link, never blocking on a FIFO."""
    path = Path(path)
    with folder(path.parent) as dfd:
        try:
            return _open_in_place(path, flags, dir_fd=dfd, single=True, mode=mode)
        except OSError as err:
            raise _refused_open(path, err, dfd) from None


def open_read(path: str | Path, *, follow_folder: bool = False) -> IO[bytes]:
    """``path`` opened for reading (binary), never through a link, never blocking on a FIFO. ``follow_folder``:
    see :func:`folder` (the store's ``runs/<id>`` are links to output folders)."""
    path = Path(path)
    with folder(path.parent, follow=follow_folder) as dfd:
        try:
            fd = _open_in_place(path, os.O_RDONLY, dir_fd=dfd, single=False)
        except OSError as err:
            raise _refused_open(path, err, dfd) from None
    return open(fd, "rb")


def read_bytes(path: str | Path, limit: int = MAX_RUN_JSON, *, follow_folder: bool = False) -> bytes:
    """The bytes of ``path`` (as :func:`open_read`), refused once more than ``limit`` have been read."""
    chunks, size = [], 0
    with open_read(path, follow_folder=follow_folder) as fh:
        while chunk := fh.read(1 << 16):  # in blocks: read(limit + 1) would allocate the whole limit each time
            size += len(chunk)
            if size > limit:
                raise UnsafeFileError(path, f"is larger than {limit} bytes, more than swcli writes there",
                                          through=False)
            chunks.append(chunk)
    return b"".join(chunks)


def unlink(path: str | Path) -> bool:
    """Remove the name ``path`` (a link itself, never its target); False when it was not there."""
    path = Path(path)
    with folder(path.parent) as dfd:
        try:
            os.unlink(path.name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise _at(path, err) from None
    return True


def replace(source: str | Path, target: str | Path) -> None:
    """Rename ``source`` over ``target`` in the same folder (names, not links, are moved and replaced)."""
    source, target = Path(source), Path(target)
    with folder(source.parent) as dfd:
        try:
            os.rename(source.name, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as err:
            raise _at(target, err) from None


class _Temp:
    """A new temp file beside ``target`` (random name, created exclusively), renamed over it by :meth:`commit`."""

    def __init__(self, target: Path, dfd: int):
        self.target, self.dfd = target, dfd
        for _ in range(100):
            self.name = f".{target.name[:200]}.{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                             dir_fd=dfd)
                break
            except FileExistsError:
                continue
            except OSError as err:
                raise _at(target, err) from None
        else:  # 100 collisions of 64 random bits: someone is guessing, and winning
            raise FileExistsError(errno.EEXIST, "no free temp name", str(target.parent / self.name))
        self.file = open(fd, "wb")

    def commit(self) -> None:
        """Rename the temp file over ``target``; a link, FIFO, folder... at that name is refused, not replaced."""
        self.file.close()
        try:
            st = os.stat(self.target.name, dir_fd=self.dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        what = st and _what(st.st_mode)
        if what:
            raise UnsafeFileError(self.target, what)
        try:
            os.rename(self.name, self.target.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
        except OSError as err:
            raise _at(self.target, err) from None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self.dfd)


@contextlib.contextmanager
def open_temp(target: str | Path, *, follow_folder: bool = False) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``target`` when the block ends without an error; removed otherwise. Written to a
    new random temp name beside it, then renamed over ``target``: a file there (a hard link to a file elsewhere
    included) is replaced, never written through; a link, FIFO or folder there is refused. The file gets
    ``0666 & ~umask``, like any written file. ``follow_folder``: see :func:`folder`."""
    target = Path(target)
    with folder(target.parent, follow=follow_folder) as dfd:
        temp = _Temp(target, dfd)
        try:
            yield temp.file
            temp.commit()
        except BaseException:
            temp.discard()
            raise


def write_file(target: str | Path, data: bytes, *, follow_folder: bool = False) -> None:
    """``data`` as ``target``, through :func:`open_temp`."""
    with open_temp(target, follow_folder=follow_folder) as fh:
        fh.write(data)


def create_new(path: str | Path, access: int = os.O_WRONLY) -> int:
    """A descriptor of ``path`` created anew for writing (``access``: ``O_RDWR`` to map it), for a fixed name a later
    run looks for (the results being written): a regular file there is removed first, a link or FIFO refused, and
    the file is created ``O_EXCL | O_NOFOLLOW``, so nothing at that name is written through."""
    path = Path(path)
    with folder(path.parent) as dfd:
        try:
            st = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            what = _what(st.st_mode)
            if what:
                raise UnsafeFileError(path, what)
            try:
                os.unlink(path.name, dir_fd=dfd)
            except OSError as err:
                raise _at(path, err) from None
        try:
            fd = os.open(path.name, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dfd)
        except OSError as err:
            raise _refused_open(path, err, dfd) from None
    return fd
