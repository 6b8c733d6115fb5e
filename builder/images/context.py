"""Build-context entries (files from a tree, single files, literal bytes) and the ``--dockerfile-only`` folder.

The same entries become layer tars (``layers.write_tar``: sorted, 0:0, mtime 0, modes 0644/0755, no PAX times) or
are laid out as a new folder by ``write_context_dir`` so any builder can build the same image; it never writes
into a folder that has files.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import SwcliError

EPOCH = 0  # 1970-01-01: what reproducible-builds tools clamp to by default


@dataclass(frozen=True)
class ContextEntry:
    """One file of a build context: from a path on disk, or literal bytes (the Dockerfile, manifests)."""

    arcname: str
    source: Path | str | None = None  # a str from tree walks: cheaper than a Path per file
    data: bytes | None = None
    executable: bool = False
    link: str | None = None
    # the stat taken when the entry was made: size, mtime, mode and links read once per build, not once per use
    st: os.stat_result | None = field(default=None, compare=False, repr=False)

    def stat(self) -> os.stat_result:
        return self.st if self.st is not None else os.stat(self.source)


def from_bytes(arcname: str, data: bytes) -> ContextEntry:
    return ContextEntry(arcname, data=data)


def from_file(arcname: str, path: Path) -> ContextEntry:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ContextEntry(arcname, link=os.readlink(path))
    return ContextEntry(arcname, source=Path(path), executable=bool(st.st_mode & 0o111), st=st)


def from_tree(prefix: str, root: Path) -> list[ContextEntry]:
    """Every file under ``root`` (symlinks kept as links, never followed), placed under ``prefix/``.

    One ``os.scandir`` walk with plain string paths: an environment has tens of thousands of files, and building
    a ``Path`` for each costs more than the walk itself."""
    out = []
    stack = [("", os.fspath(root))]
    while stack:
        rel_dir, folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = rel_dir + entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel + "/", entry.path))
                elif stat.S_ISLNK(st.st_mode):
                    out.append(ContextEntry(f"{prefix}/{rel}", link=os.readlink(entry.path)))
                else:
                    out.append(ContextEntry(f"{prefix}/{rel}", source=entry.path, executable=bool(st.st_mode & 0o111), st=st))
    return out


class ContextDirError(SwcliError):
    """A ``--dockerfile-only`` folder that is not new or empty: swcli never writes over or beside a user's files."""

    def __init__(self, directory: Path, message: str):
        self.directory = str(directory)
        super().__init__(f"{directory}: {message}")


def check_context_dir(directory: Path) -> None:
    """Refuse ``directory`` unless it is missing or an empty folder. Cheap: callers run it before any other work
    (``swcli model build --dockerfile-only DIR`` checks ``DIR/runtime`` and ``DIR/model`` before building)."""
    directory = Path(directory)
    if not os.path.lexists(directory):
        return
    if directory.is_symlink():  # its target is someone else's folder: swcli writes no file through a link
        raise ContextDirError(directory, "is a symbolic link; give a new or empty folder for --dockerfile-only")
    if not directory.is_dir():
        raise ContextDirError(directory, "exists and is not a folder; give a new or empty folder for --dockerfile-only")
    try:
        empty = next(os.scandir(directory), None) is None
    except OSError as err:
        raise ContextDirError(directory, f"cannot read: {err.strerror or err}") from None
    if not empty:
        raise ContextDirError(directory, "exists and is not empty; give a new or empty folder for --dockerfile-only "
                                         "(an earlier output would mix with this one)")


def _lay_out(entries: list[ContextEntry], root: Path) -> None:
    for entry in sorted(entries, key=lambda e: e.arcname):
        dest = root / entry.arcname
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.link is not None:
            os.symlink(entry.link, dest)
        elif entry.data is not None:
            dest.write_bytes(entry.data)
            os.chmod(dest, 0o644)
        else:
            # a copy, not a hard link: editing the output in place (or the chmod below) must not touch the store
            shutil.copyfile(entry.source, dest)
            os.chmod(dest, 0o755 if entry.executable else 0o644)
    # folders 0755 whatever the umask: COPY keeps the context's modes, and the layers swcli writes use 0755
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755)


def write_context_dir(entries: list[ContextEntry], directory: Path) -> Path:
    """Lay the context out as a new folder (for `--dockerfile-only`); files are copied, never linked to the store.

    ``directory`` must be missing or empty (:func:`check_context_dir`). Everything is written into a temp sibling
    that is renamed into place at the end, so a failure leaves nothing half-written.
    """
    directory = Path(directory)
    check_context_dir(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    names = [e.arcname for e in entries]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"build context has duplicate entries: {', '.join(dupes[:5])}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        _lay_out(entries, tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, directory)  # replaces an empty folder; fails on one that filled up meanwhile
        except OSError as err:
            raise ContextDirError(directory, f"cannot move the context into place: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
