"""Layers as deterministic tars written straight into the OCI layout, and a cache keyed by their inputs.

A layer holds files at their place in the image (``opt/swcli/env/...``), with the build-context rules of
``context.py``: sorted entries, parent folders included (0755), owner 0:0 with no names, mtime 0, modes 0644 or
0755, plain ustar/GNU headers (no PAX times, no xattrs). Files that are hard links of each other stay hard links.
The tar is hashed as it is written, so its digest (the layer's diff_id) costs no second read.

The cache maps a key made from a layer's inputs to the layer's blob: for an environment, every file's path, size,
mtime and mode (hashing gigabytes of wheels on every build would be waste); for code, weights and data, their
content digests. A layer whose key is known and whose blob is in the layout is never tarred again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from builder.images import recipes
from builder.images.context import EPOCH, ContextEntry
from builder.images.oci import MEDIA_LAYER, Descriptor, Layout, canonical_json
from builder.files import sha256_file


def placed(entries: Iterable[ContextEntry], src: str, dest: str) -> list[ContextEntry]:
    """Context entries under ``src/`` moved to ``dest/`` (an absolute path in the image): what ``COPY src/ dest/``
    does. An entry equal to ``src`` itself (a single file) lands at ``dest``."""
    src = src.rstrip("/")
    dest = dest.strip("/")
    out = []
    for entry in entries:
        if entry.arcname == src:
            name = dest
        elif entry.arcname.startswith(src + "/"):
            name = f"{dest}/{entry.arcname[len(src) + 1:]}" if dest else entry.arcname[len(src) + 1:]
        else:
            continue
        out.append(ContextEntry(name, entry.source, entry.data, entry.executable, entry.link))
    return out


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parents(names: Iterable[str]) -> list[str]:
    dirs = set()
    for name in names:
        for parent in PurePosixPath(name).parents:
            if str(parent) != ".":
                dirs.add(str(parent))
    return sorted(dirs)


def write_tar(entries: list[ContextEntry], fileobj) -> None:
    """The deterministic layer tar of ``entries`` (arcnames are image paths without the leading ``/``)."""
    entries = sorted(entries, key=lambda e: e.arcname)
    names = [e.arcname for e in entries]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"layer has duplicate entries: {', '.join(dupes[:5])}")
    seen_inodes: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for directory in _parents(names):
            if directory not in names:
                tar.addfile(_info(directory, tarfile.DIRTYPE, 0o755))
        for entry in entries:
            if entry.link is not None:
                info = _info(entry.arcname, tarfile.SYMTYPE, 0o777)
                info.linkname = entry.link
                tar.addfile(info)
            elif entry.data is not None:
                tar.addfile(_info(entry.arcname, tarfile.REGTYPE, 0o644, len(entry.data)), io.BytesIO(entry.data))
            else:
                st = entry.stat()
                if st.st_nlink > 1:
                    first = seen_inodes.setdefault((st.st_dev, st.st_ino), entry.arcname)
                    if first != entry.arcname:
                        info = _info(entry.arcname, tarfile.LNKTYPE, 0o755 if entry.executable else 0o644)
                        info.linkname = first
                        tar.addfile(info)
                        continue
                mode = 0o755 if entry.executable else 0o644
                with open(entry.source, "rb") as fh:
                    tar.addfile(_info(entry.arcname, tarfile.REGTYPE, mode, st.st_size), fh)


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")


def _recipe_parts(entries: list[ContextEntry], store_root: Path) -> list | None:
    """:func:`write_tar`'s bytes of ``entries`` as recipe parts (header, padding and literal bytes, store files in
    place), or None when a file is not in the store."""
    entries = sorted(entries, key=lambda e: e.arcname)
    names = [e.arcname for e in entries]
    if len(set(names)) != len(names):
        return None  # write_tar says which
    parts: list = []

    def put(data: bytes) -> None:
        if parts and isinstance(parts[-1], bytes):
            parts[-1] += data
        else:
            parts.append(data)

    for directory in _parents(names):
        if directory not in names:
            put(_header(_info(directory, tarfile.DIRTYPE, 0o755)))
    seen_inodes: dict[tuple[int, int], str] = {}
    for entry in entries:
        mode = 0o755 if entry.executable else 0o644
        if entry.link is not None:
            info = _info(entry.arcname, tarfile.SYMTYPE, 0o777)
            info.linkname = entry.link
            put(_header(info))
        elif entry.data is not None:
            put(_header(_info(entry.arcname, tarfile.REGTYPE, 0o644, len(entry.data))) + entry.data
                + bytes(-len(entry.data) % tarfile.BLOCKSIZE))
        else:
            st = entry.stat()
            first = seen_inodes.setdefault((st.st_dev, st.st_ino), entry.arcname) if st.st_nlink > 1 else None
            if first is not None and first != entry.arcname:
                info = _info(entry.arcname, tarfile.LNKTYPE, mode)
                info.linkname = first
                put(_header(info))
                continue
            part = recipes.file_part(store_root, entry.source)
            if part is None or part.size != st.st_size:
                return None
            put(_header(_info(entry.arcname, tarfile.REGTYPE, mode, part.size)))
            parts.append(part)
            put(bytes(-part.size % tarfile.BLOCKSIZE))
    put(bytes(2 * tarfile.BLOCKSIZE))
    total = sum(map(recipes.part_size, parts))
    put(bytes(-total % tarfile.RECORDSIZE))  # what a stream-mode tarfile pads its close to
    return parts


def write_recipe_layer(layout: Layout, entries: list[ContextEntry]) -> Descriptor:
    """A layer of big store files kept in ``layout`` as a recipe (:mod:`builder.images.recipes`): :func:`write_tar`'s
    header blocks and padding as bytes, the store files' bytes in place, so the same digest as the tar written out
    with no second copy of the files. Entries with a file outside the store beside the layout are tarred as usual."""
    parts = _recipe_parts(entries, layout.root.parent)
    if parts is None:
        return write_layer(layout, entries)
    return layout.put_recipe(MEDIA_LAYER, parts)


def write_layer(layout: Layout, entries: list[ContextEntry]) -> Descriptor:
    """Tar ``entries`` into the layout; returns the blob (its digest is the diff_id)."""
    with layout.writer(MEDIA_LAYER) as out:
        write_tar(entries, out)
    return out.descriptor  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------- cache


def stat_key(label: str, entries: Iterable[ContextEntry]) -> str:
    """A key from every file's place, size, mtime and mode (links by target, literal bytes by content)."""
    h = hashlib.sha256(f"stat\0{label}\n".encode())
    for e in sorted(entries, key=lambda e: e.arcname):
        if e.source is not None:
            st = e.stat()
            h.update(f"{e.arcname}\0{st.st_size}\0{st.st_mtime_ns}\0{int(e.executable)}\n".encode())
        else:
            h.update(f"{e.arcname}\0{e.link}\0{hashlib.sha256(e.data or b'').hexdigest()}\n".encode())
    return h.hexdigest()


def content_key(label: str, items: Iterable[tuple[str, str, bool, str | None]]) -> str:
    """A key from ``(image path, sha256 of the content, executable, link target)`` of every file."""
    h = hashlib.sha256(f"content\0{label}\n".encode())
    for path, sha, executable, link in sorted(items):
        h.update(f"{path}\0{sha}\0{int(executable)}\0{link}\n".encode())
    return h.hexdigest()


def entries_content_key(label: str, entries: Iterable[ContextEntry], known: dict[str, str] | None = None) -> str:
    """:func:`content_key` of context entries: a file's sha256 from ``known`` (arcname -> hex, e.g. from a
    manifest) where it is there, else hashed here; literal bytes by their hash; links by their target."""
    known = known or {}

    def digest(e: ContextEntry) -> str:
        if e.link is not None:
            return ""
        if e.source is None:
            return hashlib.sha256(e.data or b"").hexdigest()
        return known.get(e.arcname) or sha256_file(e.source)

    return content_key(label, ((e.arcname, digest(e), e.executable, e.link) for e in entries))


@dataclass
class LayerCache:
    """``<layout>/cache/layers/<key>.json`` -> the layer blob's descriptor."""

    layout: Layout
    hits: int = 0
    misses: int = 0

    @property
    def folder(self) -> Path:
        return self.layout.root / "cache" / "layers"

    def get(self, key: str) -> Descriptor | None:
        try:
            desc = Descriptor.from_json(json.loads((self.folder / f"{key}.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return desc if self.layout.has(desc.digest, desc.size) else None

    def put(self, key: str, desc: Descriptor) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(canonical_json(desc.to_json()))
        os.replace(tmp, self.folder / f"{key}.json")

    def forget(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{key}.json").unlink()

    def layer(self, key: str, entries_fn, *, verify: bool = False, write=None) -> Descriptor:
        """The cached blob of ``key``, or a new one from ``entries_fn()`` (called only on a miss), tarred by
        ``write(layout, entries)`` (default :func:`write_layer`). With ``verify``, a cached blob is re-hashed
        first, and one whose bytes changed is dropped and written again."""
        desc = self.get(key)
        if desc is not None and verify and not self.layout.verify(desc.digest):
            self.layout.discard(desc.digest)
            self.forget(key)
            desc = None
        if desc is not None:
            self.hits += 1
            return desc
        self.misses += 1
        desc = (write or write_layer)(self.layout, entries_fn())
        self.put(key, desc)
        return desc
