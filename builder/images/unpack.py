"""One folder of an image's filesystem, extracted from its layer tars in the OCI layout: no engine, no container.

The layers are applied in order, as an engine would: a later file replaces an earlier one, ``.wh.<name>`` deletes
``<name>`` and ``.wh..wh..opq`` empties its folder. Only members under the folder are written, into ``dest``, and
every one that could put something outside it is refused in one line naming it: an absolute name or a ``..``, a
link whose target is absolute or leaves the folder, a hard link to a file outside it, a path passing through a link,
a device, fifo or socket, or the folder (or one of its parents) being a link or a file. Files get 0644 or 0755,
never setuid bits. Layer tars are read with seeks over member data, so a 700 MB layer that holds nothing of the
folder costs its headers only.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Iterable

from builder.errors import SwcliError
from builder.images.oci import CHUNK, Descriptor, Layout

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class UnpackError(SwcliError):
    """A layer holds something under the folder that must not be extracted, or the folder is not there."""


def _parts(name: str) -> tuple[list[str], bool]:
    """The path components of a member name and whether it is absolute or climbs (``..``)."""
    while name.startswith("./"):
        name = name[2:]
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts, name.startswith("/") or ".." in parts


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class _Folder:
    """``dest`` receiving the members of one image folder (``inside``), layer after layer."""

    def __init__(self, inside: str, dest: Path):
        self.inside = "/" + inside.strip("/")
        self.root = [p for p in inside.split("/") if p]
        self.dest = dest
        self.seen = False

    def where(self, rel: list[str]) -> str:
        return posixpath.join(self.inside, *rel)

    def _target(self, rel: list[str]) -> Path:
        """``dest/rel`` after checking no existing parent inside ``dest`` is a link."""
        path = self.dest
        for part in rel[:-1]:
            path = path / part
            if path.is_symlink():
                raise UnpackError(f"{self.where(rel)}: passes through the link {self.where(rel[:rel.index(part) + 1])}")
        return path / rel[-1] if rel else path

    def climbing(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        """An absolute or '..' name: refused when it could touch the folder, else (like the engine) ignored."""
        if parts[:len(self.root)] == self.root or self.root[:len(parts)] == parts or ".." in parts:
            raise UnpackError(f"{member.name}: an absolute or '..' name in a layer; refusing it")

    def whiteout(self, parts: list[str]) -> None:
        folder, name = parts[:-1], parts[-1]
        if name != OPAQUE and name[len(WHITEOUT):] in ("", ".", ".."):
            raise UnpackError(f"/{'/'.join(parts)}: a whiteout of no file; refusing it")
        if name == OPAQUE:
            if folder[:len(self.root)] == self.root:  # the folder itself or a subfolder is emptied
                target = self._target(folder[len(self.root):] + ["x"]).parent
                if target.is_dir() and not target.is_symlink():
                    for child in target.iterdir():
                        _clear(child)
            elif self.root[:len(folder)] == folder:  # a parent emptied: the folder is gone
                for child in self.dest.iterdir():
                    _clear(child)
            return
        gone = folder + [name[len(WHITEOUT):]]
        if gone[:len(self.root)] == self.root and len(gone) > len(self.root):
            _clear(self._target(gone[len(self.root):]))
        elif self.root[:len(gone)] == gone:
            for child in self.dest.iterdir():
                _clear(child)

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        if self.root[:len(parts)] == parts:  # the folder or one of its parents: must stay a folder
            if not member.isdir():
                raise UnpackError(f"/{'/'.join(parts)} is a {'link' if member.issym() or member.islnk() else 'file'}"
                                  f" in the image, not a folder; refusing to follow it")
            self.seen |= parts == self.root
            return
        if parts[:len(self.root)] != self.root:
            return
        rel = parts[len(self.root):]
        name = self.where(rel)
        self.seen = True
        if member.isdir():
            path = self._target(rel)
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                _clear(path)
            path.mkdir(parents=True, exist_ok=True)
            return
        path = self._target(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if member.issym():
            target = member.linkname
            if target.startswith("/") or posixpath.normpath(posixpath.join(*rel[:-1], target) if rel[:-1]
                                                            else target).split("/")[0] == "..":
                raise UnpackError(f"{name}: a link to {target!r}, outside {self.inside}; refusing it")
            _clear(path)
            os.symlink(target, path)
        elif member.islnk():
            link, bad = _parts(member.linkname)
            if bad or link[:len(self.root)] != self.root or len(link) == len(self.root):
                raise UnpackError(f"{name}: a hard link to {member.linkname!r}, outside {self.inside}; refusing it")
            source = self._target(link[len(self.root):])
            if source.is_symlink() or not source.is_file():
                raise UnpackError(f"{name}: a hard link to {member.linkname!r}, which is not a file here")
            _clear(path)
            shutil.copyfile(source, path)
            os.chmod(path, stat.S_IMODE(source.stat().st_mode))
        elif member.isreg():
            _clear(path)
            with tar.extractfile(member) as src, open(path, "xb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
        else:
            raise UnpackError(f"{name}: a device, fifo or socket in the image; refusing it")


def unpack(layout: Layout, layers: Iterable[Descriptor], inside: str, dest: Path) -> None:
    """Extract the image folder ``inside`` (e.g. ``/dataset``) into the existing folder ``dest``."""
    folder = _Folder(inside, Path(dest))
    for layer in layers:
        try:
            with tarfile.open(layout.blob_path(layer.digest), mode="r:") as tar:
                for member in tar:
                    parts, climbs = _parts(member.name)
                    if not parts:
                        continue
                    if climbs:
                        folder.climbing(member, parts)
                    elif parts[-1].startswith(WHITEOUT):
                        folder.whiteout(parts)
                    else:
                        folder.member(tar, member, parts)
        except tarfile.TarError as err:
            raise UnpackError(f"layer {layer.digest} is not a readable tar ({' '.join(str(err).split())})") from None
    if not folder.seen:
        raise UnpackError(f"{folder.inside} is not in the image")
