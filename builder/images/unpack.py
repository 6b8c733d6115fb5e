"""One folder of an image's filesystem, extracted from its layer tars in the OCI layout: no engine, no container.

The layers are applied in order, as an engine would: a later file replaces an earlier one, ``.wh.<name>`` deletes
``<name>`` and ``.wh..wh..opq`` empties its folder. Only members under the folder are written, into ``dest``, and
only those a :class:`Listing` names (what the entry's own manifest lists): a regular file at most its listed size,
a link to exactly its listed target, the folders on the way; a hard link between two listed files stays a hard
link. Everything else under the folder is refused in one line naming it: a member the listing does not name, a file
bigger than listed, an absolute name or a ``..``, a name with control characters or too long for a file system, a
link whose target is absolute or leaves the folder, a hard link to a file outside it, a path passing through a link,
a device, fifo or socket, or the folder (or one of its parents) being a link or a file. So the bytes written are at
most the listing's sizes, whatever the layer. Files get 0644 or 0755, never setuid bits. Layer tars are read with
bounded headers (:mod:`builder.images.layer_tar`) and seeks over member data, so a 700 MB layer that holds nothing of
the folder costs its headers only. :func:`read_member` reads one small file of the folder (the entry's manifest)
the same way, before the listing is known, and says which layers touch the folder at all.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from builder.errors import SwcliError
from builder.images import recipes
from builder.images.layer_tar import TarRefused, members, open_layer, shown
from builder.images.oci import CHUNK, Descriptor, Layout

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
NAME_MAX, PATH_MAX = 255, 4096  # bytes of one name and of a path, as Linux file systems take them


class UnpackError(SwcliError):
    """A layer holds something under the folder that must not be extracted, or the folder is not there."""


@dataclass(frozen=True)
class Listing:
    """What the folder may hold, relative to it: regular files with their largest size, links with their exact
    targets, and ``dropped``: files an image carries beside the entry (read up to that size, never written)."""

    files: dict[str, int]
    links: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dirs(self) -> set[str]:
        return {posixpath.dirname(p)[:i] for p in (*self.files, *self.links, *self.dropped)
                for i, c in enumerate(posixpath.dirname(p) + "/") if c == "/"} - {""}


def _parts(name: str) -> tuple[list[str], bool]:
    """The path components of a member name and whether it is absolute or climbs (``..``)."""
    while name.startswith("./"):
        name = name[2:]
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return parts, name.startswith("/") or ".." in parts


def _name_problem(parts: list[str]) -> str | None:
    if any(not c.isprintable() for part in parts for c in part):
        return "a name with control characters"
    if len("/".join(parts).encode("utf-8", "surrogateescape")) > PATH_MAX or \
            any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in parts):
        return f"a name longer than a file system takes ({NAME_MAX} bytes a part, {PATH_MAX} in all)"
    return None


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class _Folder:
    """``dest`` receiving the members of one image folder (``inside``), layer after layer: those ``listing``
    names; any other member under the folder is refused, or with ``strict`` off (a probe) passed over."""

    def __init__(self, inside: str, dest: Path, listing: Listing, *, strict: bool = True):
        self.inside = "/" + inside.strip("/")
        self.root = [p for p in inside.split("/") if p]
        self.dest = dest
        self.listing, self.dirs, self.strict = listing, listing.dirs, strict
        self.seen = False
        self.touched = False  # the current layer has a member under (or over) the folder
        self.linkable: dict[int, Path] = {}  # the current layer's members kept as content-named files, by offset

    def where(self, rel: list[str]) -> str:
        return shown(posixpath.join(self.inside, *rel))

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
            raise UnpackError(f"{shown(member.name)}: an absolute or '..' name in a layer; refusing it")

    def whiteout(self, parts: list[str]) -> None:
        folder, name = parts[:-1], parts[-1]
        if name != OPAQUE and name[len(WHITEOUT):] in ("", ".", ".."):
            raise UnpackError(f"{shown('/' + '/'.join(parts))}: a whiteout of no file; refusing it")
        if name == OPAQUE:
            if folder[:len(self.root)] == self.root:  # the folder itself or a subfolder is emptied
                self.touched = True
                target = self._target(folder[len(self.root):] + ["x"]).parent
                if target.is_dir() and not target.is_symlink():
                    for child in target.iterdir():
                        _clear(child)
            elif self.root[:len(folder)] == folder:  # a parent emptied: the folder is gone
                self.touched = True
                for child in self.dest.iterdir():
                    _clear(child)
            return
        gone = folder + [name[len(WHITEOUT):]]
        if gone[:len(self.root)] == self.root and len(gone) > len(self.root):
            self.touched = True
            _clear(self._target(gone[len(self.root):]))
        elif self.root[:len(gone)] == gone:
            self.touched = True
            for child in self.dest.iterdir():
                _clear(child)

    def _unlisted(self, name: str, what: str) -> bool:
        """Refuse (strict) a member the listing does not name; a probe passes over it (True)."""
        if self.strict:
            raise UnpackError(f"{name}: {what} the entry's manifest does not list; refusing it")
        return True

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str]) -> None:
        if self.root[:len(parts)] == parts:  # the folder or one of its parents: must stay a folder
            self.touched = True
            if not member.isdir():
                raise UnpackError(f"{shown('/' + '/'.join(parts))} is a "
                                  f"{'link' if member.issym() or member.islnk() else 'file'} in the image, not a "
                                  "folder; refusing to follow it")
            self.seen |= parts == self.root
            return
        if parts[:len(self.root)] != self.root:
            return
        rel = parts[len(self.root):]
        name = self.where(rel)
        self.seen = self.touched = True
        problem = _name_problem(rel)
        if problem:
            raise UnpackError(f"{name}: {problem}; refusing it")
        key = "/".join(rel)
        if member.isdir():
            if key not in self.dirs and self._unlisted(name, "a folder"):
                return
            path = self._target(rel)
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                _clear(path)
            path.mkdir(parents=True, exist_ok=True)
        elif member.issym():
            self._link(member, rel, name, key)
        elif member.islnk():
            self._hard_link(member, rel, name, key)
        elif member.isreg():
            self._file(tar, member, rel, name, key)
        else:
            raise UnpackError(f"{name}: a device, fifo or socket in the image; refusing it")

    def _link(self, member: tarfile.TarInfo, rel: list[str], name: str, key: str) -> None:
        target = member.linkname
        if target.startswith("/") or posixpath.normpath(posixpath.join(*rel[:-1], target) if rel[:-1]
                                                        else target).split("/")[0] == "..":
            raise UnpackError(f"{name}: a link to {shown(target)!r}, outside {self.inside}; refusing it")
        if self.listing.links.get(key) != target:
            if key in self.listing.links or key in self.listing.files or key in self.listing.dropped:
                raise UnpackError(f"{name}: a link to {shown(target)!r}, not what the entry's manifest lists; "
                                  "refusing it")
            self._unlisted(name, "a link")  # a probe makes it all the same: a later name through it is refused
        path = self._target(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear(path)
        os.symlink(target, path)

    def _hard_link(self, member: tarfile.TarInfo, rel: list[str], name: str, key: str) -> None:
        link, bad = _parts(member.linkname)
        if bad or link[:len(self.root)] != self.root or len(link) == len(self.root):
            raise UnpackError(f"{name}: a hard link to {shown(member.linkname)!r}, outside {self.inside}; "
                              "refusing it")
        if key not in self.listing.files and self._unlisted(name, "a hard link"):
            return
        source = self._target(link[len(self.root):])
        if source.is_symlink() or not source.is_file():
            raise UnpackError(f"{name}: a hard link to {shown(member.linkname)!r}, which is not a file here")
        path = self._target(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear(path)
        os.link(source, path)  # a link, not a copy: the layer's bytes are written once

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: list[str], name: str, key: str) -> None:
        path = self._target(rel)
        bound = self.listing.files.get(key, self.listing.dropped.get(key))
        if bound is None:
            self._unlisted(name, "a file")
            return
        if member.size > bound:
            raise UnpackError(f"{name}: {member.size} bytes in the layer, more than the {bound} the entry's "
                              "manifest allows; refusing it")
        if key in self.listing.dropped:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear(path)
        kept = self.linkable.get(member.offset_data)
        if kept is not None and os.stat(kept, follow_symlinks=False).st_size == member.size:
            os.link(kept, path, follow_symlinks=False)  # the pulled bytes, already on disk once: linked, not copied
            os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
            return
        with tar.extractfile(member) as src, open(path, "xb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)


def _apply(layout: Layout, layers: Iterable[Descriptor], folder: _Folder) -> list[Descriptor]:
    """Apply ``layers`` to ``folder``; the layers that touched it."""
    touched = []
    for layer in layers:
        folder.touched = False
        folder.linkable = recipes.linkable(layout.root, layer.digest.partition(":")[2], recipes.files_dir(layout))
        try:
            with layout.open_blob(layer.digest) as blob, open_layer(blob) as tar:
                for member in members(tar):
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
        except TarRefused as err:
            raise UnpackError(f"layer {layer.digest}: {err}") from None
        if folder.touched:
            touched.append(layer)
    if not folder.seen:
        raise UnpackError(f"{folder.inside} is not in the image")
    return touched


def read_member(layout: Layout, layers: Iterable[Descriptor], inside: str, name: str, limit: int,
                scratch: Path) -> tuple[bytes | None, list[Descriptor]]:
    """The bytes the layers leave at ``inside/name`` (None when none; more than ``limit`` bytes refused while
    reading the headers, never read), and the layers that touch ``inside`` (the only ones :func:`unpack` needs).
    ``scratch``: an empty folder to extract it into."""
    touched = _apply(layout, layers, _Folder(inside, scratch, Listing({name: limit}), strict=False))
    path = scratch / name
    if path.is_symlink() or not path.is_file():
        return None, touched
    return path.read_bytes(), touched


def unpack(layout: Layout, layers: Iterable[Descriptor], inside: str, dest: Path, listing: Listing) -> None:
    """Extract the image folder ``inside`` (e.g. ``/dataset``) into the existing folder ``dest``: only what
    ``listing`` names."""
    _apply(layout, layers, _Folder(inside, Path(dest), listing))
