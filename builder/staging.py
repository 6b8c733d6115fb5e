"""Staging folders: where a store entry is written before it is published, each held by the ``flock`` of its lock.

``tmp/<kind>-XXXX/`` is guarded by ``tmp/<kind>-XXXX.lock``, created and locked before the folder exists. The
kernel drops the lock when its process dies (even by ``kill -9``), so a cleaner that can take the lock knows the
folder is left over from a dead build and removes it; it never touches a live one's. Folders of a kind without any
lock (an older swcli, a half-finished cleanup) go too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from builder.files import file_error

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def stage(tmp_dir: Path, kind: str, kinds: tuple[str, ...]) -> Iterator[Path]:
    """A fresh staging directory in ``tmp_dir``, removed on exit unless it was moved into place meanwhile.

    The directory is held by an ``flock`` on ``<dir>.lock`` for the whole block; staging of dead processes
    (whose locks the kernel released) is removed first.
    """
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise file_error(tmp_dir, "cannot create the staging folder", err) from None
    clean_stale(tmp_dir, kinds)
    lock_fd, staged = _locked_staging(tmp_dir, kind)
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(f"{staged}{LOCK_SUFFIX}")
        os.close(lock_fd)


def _locked_staging(tmp_dir: Path, kind: str) -> tuple[int, Path]:
    """Create ``tmp/<kind>-XXXX.lock``, lock it, then create the folder it guards. The lock comes first, so a
    cleaner never sees a live folder without a held lock."""
    while True:
        try:
            fd, lock_path = tempfile.mkstemp(prefix=f"{kind}-", suffix=LOCK_SUFFIX, dir=tmp_dir)
        except OSError as err:
            raise file_error(tmp_dir, "cannot create a staging lock", err) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # a cleaner took it between mkstemp and flock, and removed it: try another name
            os.close(fd)
            continue
        staged = Path(lock_path[: -len(LOCK_SUFFIX)])
        try:
            staged.mkdir(mode=0o700)
        except OSError as err:
            os.unlink(lock_path)
            os.close(fd)
            raise file_error(staged, "cannot create the staging folder", err) from None
        return fd, staged


def clean_stale(tmp_dir: Path, kinds: tuple[str, ...]) -> list[Path]:
    """Remove the staging folders of ``kinds`` no live process holds; returns what was removed. Never raises."""
    removed: list[Path] = []
    try:
        names = sorted(os.listdir(tmp_dir))
    except OSError:
        return removed
    locks = {n for n in names if n.endswith(LOCK_SUFFIX)}
    for lock_name in sorted(locks):
        staged = _remove_unlocked(tmp_dir, lock_name)
        if staged is not None:
            removed.append(staged)
    for name in names:  # folders without any lock: left by an older swcli or a half-finished cleanup
        path = tmp_dir / name
        if name in locks or f"{name}{LOCK_SUFFIX}" in locks or name.startswith("."):
            continue
        if path.is_dir() and not path.is_symlink() and name.split("-", 1)[0] in kinds:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


def _remove_unlocked(tmp_dir: Path, lock_name: str) -> Path | None:
    """The staging folder of ``lock_name`` and its lock removed when no live process holds the lock; the folder,
    or None when it is held (or changed meanwhile, or could not go)."""
    lock_path = tmp_dir / lock_name
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # a live build holds it
    try:
        if os.stat(lock_path).st_ino != os.fstat(fd).st_ino:
            return None  # removed and recreated meanwhile: not the file we locked
        staged = tmp_dir / lock_name[: -len(LOCK_SUFFIX)]
        shutil.rmtree(staged, ignore_errors=True)
        if not staged.exists():
            os.unlink(lock_path)
            return staged
    except OSError:
        pass
    finally:
        os.close(fd)
    return None
