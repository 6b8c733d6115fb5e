"""Whole files, written and read back safely: an atomic write (readers never see half a file, and never one written
through a link), a file's sha256, the umask, and whether the process a file is named after still lives.

The store, the OCI layout, caches and memos all write through here; a write that fails is a :class:`StoreError`
naming the path and what the system said (:func:`file_error`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
