"""One run at a time in an output folder: two would interleave their results and clear each other's files.

``swcli model eval -o OUT`` (and ``--resume``, and the model image's ``eval``) hold an exclusive ``flock`` on
``OUT/.swcli-run.lock`` for the whole run. A second run into the same folder stops at once with one line naming
the folder and the process that holds it; nothing of the first run is touched. The lock dies with its process
(``kill -9`` included), so a crashed run never leaves a folder locked; the file is removed when the run ends.
The lock file is opened without following a link or blocking (:mod:`builder.outdir`): a link, FIFO or hard link
planted at its name is refused, since the lock truncates it to write its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from builder import outdir
from builder.errors import EvalError

LOCK = ".swcli-run.lock"


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(outdir.read_bytes(path, 64).strip() or 0)  # never through a link or from a FIFO
        if pid:
            return f" (process {pid})"
    return ""


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold the run lock of ``output_dir`` (created if missing) for the block; EvalError when another run has it."""
    path = Path(output_dir) / LOCK
    try:
        outdir.make_folder(output_dir)  # not a link to a folder elsewhere
    except OSError as err:
        raise EvalError(f"output directory {output_dir} is not writable: {err.strerror or err}") from None
    while True:
        try:  # a link, FIFO or hard link planted at the lock's name is refused: it is truncated below
            fd = outdir.open_in_place(path, os.O_RDWR | os.O_CREAT, mode=0o644)
        except outdir.UnsafeFileError as err:
            raise EvalError(f"{path}: {err.strerror}") from None
        except OSError as err:
            raise EvalError(f"output directory {output_dir} is not writable: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EvalError(f"{output_dir} is in use by another run{_holder(path)}; wait for it to end, or give "
                            "another --output") from None
        except OSError:  # a filesystem without flock (some network mounts): run unlocked, as before
            os.close(fd)
            yield
            return
        try:  # the holder we waited on may have removed the file before we locked it: lock the one at the path
            st = outdir.lstat(path)
            if st is not None and os.fstat(fd).st_ino == st.st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the pid is only for the message; the lock holds without it
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            outdir.unlink(path)
        os.close(fd)
