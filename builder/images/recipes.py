"""Blobs kept as recipes: a layer whose bytes are mostly one big file of a store entry is not copied into the layout.

A model's weights file (or any file of 1 MiB or more that gets a layer of its own) already sits in its store
entry, which is immutable once published. Its layer is a tar: a few header blocks, the file's bytes, padding and
the end blocks. So the layout keeps, instead of a second copy, ``oci/recipes/<hex>.json``::

    {"digest": "sha256:<hex>", "size": N,
     "parts": [{"bytes": "<hex of header blocks>"},
               {"file": "models/<name>/<version>/src/w.safetensors", "size": S, "mtime_ns": M, "ino": I},
               {"bytes": "<hex of padding and end blocks>"}]}

Reading the blob (:class:`RecipeReader`) yields the parts in order: the same bytes a tar writer writes, so the
digest is the layer's diff_id, and push, ``docker load`` and pull read it like any blob. A file part names a path
under the store's root (the layout's parent folder), never absolute, never with ``..``, opened without following
a link; the recipe holds only while that file has the size, mtime and inode it had when the digest was made
(:func:`sound`), so a changed or removed file makes the blob missing, not wrong, and the next build writes it
again. Every reader still hashes what it sends (push, load) or what it checks (:meth:`Layout.verify`), as for a
file blob. A recipe is written after its digest is known and the blob pinned, under a temp name and renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.errors import SwcliError
from builder.files import hash_fd, write_bytes_atomic

MAX_RECIPE = 1 << 20  # bounded before it is parsed: a recipe is a few header blocks and one file reference
READ_CHUNK = 8 << 20


class RecipeError(SwcliError):
    """A recipe that is unreadable, malformed, or whose file changed: the blob counts as missing."""


@dataclass(frozen=True)
class FilePart:
    rel: str  # under the store root, POSIX
    size: int
    mtime_ns: int
    ino: int

    def matches(self, st: os.stat_result) -> bool:
        """Whether the file is as it was when the recipe was made."""
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)


def part_size(part) -> int:
    """Bytes of one part: literal bytes, or a :class:`FilePart`."""
    return len(part) if isinstance(part, bytes) else part.size


def _document(digest: str, size: int, parts: list) -> bytes:
    """A recipe's one serialisation (sorted keys, no spaces)."""
    return json.dumps({"digest": digest, "size": size, "parts": [
        {"bytes": p.hex()} if isinstance(p, bytes) else
        {"file": p.rel, "size": p.size, "mtime_ns": p.mtime_ns, "ino": p.ino} for p in parts]},
        sort_keys=True, separators=(",", ":")).encode()


def files_dir(layout) -> Path:
    """``oci/files``: big members of pulled layers, each named by the sha256 of its bytes
    (:mod:`builder.images.tar_split`)."""
    return layout.root / "files"


def folder(layout_root: Path) -> Path:
    return Path(layout_root) / "recipes"


def path_of(layout_root: Path, hexd: str) -> Path:
    return folder(layout_root) / f"{hexd}.json"


def file_part(store_root: Path, path: Path) -> FilePart | None:
    """The part for ``path`` when it lies under ``store_root`` (else None: the blob is written as a file)."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(store_root))
        st = os.stat(path, follow_symlinks=False)
    except (ValueError, OSError):
        return None
    return FilePart(rel.as_posix(), st.st_size, st.st_mtime_ns, st.st_ino)


def _checked_rel(rel: object) -> str:
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        raise RecipeError(f"file part {rel!r} is not a relative path")
    if any(p in ("", ".", "..") for p in PurePosixPath(rel).parts) or rel != PurePosixPath(rel).as_posix():
        raise RecipeError(f"file part {rel!r} is not a plain path under the store")
    return rel


def load(layout_root: Path, hexd: str) -> tuple[int, list]:
    """(size, parts) of a recipe, each part bytes or a :class:`FilePart`; :class:`RecipeError` when absent/bad."""
    try:
        with open(path_of(layout_root, hexd), "rb") as fh:
            data = fh.read(MAX_RECIPE + 1)
        doc = json.loads(data) if len(data) <= MAX_RECIPE else None
    except (OSError, ValueError, RecursionError) as err:
        raise RecipeError(f"recipe {hexd}: {err}") from None
    if not isinstance(doc, dict) or doc.get("digest") != f"sha256:{hexd}" or not isinstance(doc.get("size"), int) \
            or not isinstance(doc.get("parts"), list):
        raise RecipeError(f"recipe {hexd}: malformed")
    parts: list = []
    for part in doc["parts"]:
        if isinstance(part, dict) and isinstance(part.get("bytes"), str):
            try:
                parts.append(bytes.fromhex(part["bytes"]))
            except ValueError:
                raise RecipeError(f"recipe {hexd}: bytes part is not hex") from None
        elif isinstance(part, dict) and all(isinstance(part.get(k), int) for k in ("size", "mtime_ns", "ino")):
            parts.append(FilePart(_checked_rel(part.get("file")), part["size"], part["mtime_ns"], part["ino"]))
        else:
            raise RecipeError(f"recipe {hexd}: malformed part")
    if sum(map(part_size, parts)) != doc["size"]:
        raise RecipeError(f"recipe {hexd}: parts do not add up to its size")
    return doc["size"], parts


def _open_part(store_root: Path, part: FilePart):
    fd = os.open(Path(store_root) / part.rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if not part.matches(os.fstat(fd)):
        os.close(fd)
        raise RecipeError(f"{part.rel} changed since its layer was made")
    return os.fdopen(fd, "rb", buffering=0)


def linkable(layout_root: Path, hexd: str, under: Path) -> dict[int, Path]:
    """Where each file part under ``under`` starts in the blob -> its path, for a recipe blob whose files are all
    as they were (else, and for a file blob, nothing): an unpack hard-links such a member instead of copying it."""
    found = checked(layout_root, hexd)
    out, at = {}, 0
    for part in found[1] if found else ():
        path = Path(layout_root).parent / part.rel if isinstance(part, FilePart) else None
        if path is not None and path.parent == Path(under):
            out[at] = path
        at += part_size(part)
    return out


def adopt(layout, entry_dir: Path) -> int:
    """Before the store entry ``entry_dir`` is deleted: every file of it a recipe names is hard-linked into
    :func:`files_dir` (``x<sha256 of its old path>``, never taken for a content name) and the recipe repointed, so
    the images stay whole and the bytes stay on disk once. Returns how many files were kept."""
    root, kept = Path(layout.root), 0
    store = root.parent
    prefix = Path(os.path.realpath(entry_dir)).relative_to(os.path.realpath(store)).as_posix() + "/"
    for path in sorted(folder(root).glob("*.json")):
        try:
            size, parts = load(root, path.stem)
        except RecipeError:
            continue
        moved = []
        for part in parts:
            if isinstance(part, FilePart) and part.rel.startswith(prefix):
                new = files_dir(layout) / ("x" + hashlib.sha256(part.rel.encode()).hexdigest())
                new.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.link(store / part.rel, new, follow_symlinks=False)
                part = FilePart(new.relative_to(store).as_posix(), part.size, part.mtime_ns, part.ino)
                kept += 1
            moved.append(part)
        if moved != parts:
            write_bytes_atomic(path, _document(f"sha256:{path.stem}", size, moved))
    return kept


GRACE_SECONDS = 600  # a file this new may belong to a pull whose recipe is not written yet


def unused_files(layout_root: Path, files: Path) -> list[Path]:
    """The files of ``files`` no recipe names (older than :data:`GRACE_SECONDS`): what a collection removes."""
    if not files.is_dir():
        return []
    named = set()
    for path in folder(layout_root).glob("*.json"):
        with contextlib.suppress(RecipeError):
            named.update(p.rel for p in load(layout_root, path.stem)[1] if isinstance(p, FilePart))
    now, out = time.time(), []
    for path in files.iterdir():
        rel = path.relative_to(Path(layout_root).parent).as_posix()
        with contextlib.suppress(OSError):
            if not path.name.startswith(".") and rel not in named and now - path.lstat().st_ctime > GRACE_SECONDS:
                out.append(path)
    return out


def checked(layout_root: Path, hexd: str) -> tuple[int, list] | None:
    """(size, parts) of a recipe that is readable and every file of which is as it was; else None."""
    try:
        size, parts = load(layout_root, hexd)
        if all(part.matches(os.stat(Path(layout_root).parent / part.rel, follow_symlinks=False))
               for part in parts if isinstance(part, FilePart)):
            return size, parts
    except (RecipeError, OSError):
        pass
    return None


def sound(layout_root: Path, hexd: str) -> int | None:
    """The blob's size when its recipe is :func:`checked`; else None."""
    found = checked(layout_root, hexd)
    return found[0] if found else None


class RecipeReader(io.RawIOBase):
    """The blob's bytes, part after part (a raw binary file: ``read``, ``readinto``, ``close``)."""

    def __init__(self, layout_root: Path, size: int, parts: list):
        super().__init__()
        self.size, self._parts = size, parts  # from :func:`checked`
        self._store = Path(layout_root).parent
        self._current = None  # an open file part, or a memoryview of a bytes part
        self._next = 0
        self._starts = [sum(map(part_size, parts[:i])) for i in range(len(parts))]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """To ``offset`` from the start (the only origin an upload that resumes needs)."""
        if whence != 0 or offset < 0:
            raise OSError("a recipe blob seeks from its start only")
        self._close_current()
        self._pos = min(offset, self.size)
        self._next = next((i for i in range(len(self._parts) - 1, -1, -1) if self._starts[i] <= self._pos), 0)
        if self._parts and self._advance():
            skip = self._pos - self._starts[self._next - 1]
            if isinstance(self._current, memoryview):
                self._current = self._current[skip:] or None
            elif skip:
                self._current.seek(skip)
        return self._pos

    def _close_current(self) -> None:
        if self._current is not None and not isinstance(self._current, memoryview):
            self._current.close()
        self._current = None

    def _advance(self) -> bool:
        if self._next >= len(self._parts):
            return False
        part = self._parts[self._next]
        self._next += 1
        self._current = memoryview(part) if isinstance(part, bytes) else _open_part(self._store, part)
        return True

    def readinto(self, buf) -> int:
        while True:
            if self._current is None and not self._advance():
                return 0
            if isinstance(self._current, memoryview):
                n = min(len(buf), len(self._current))
                buf[:n] = self._current[:n]
                self._current = self._current[n:] if n < len(self._current) else None
            else:
                n = self._current.readinto(buf)
                if not n:
                    self._current.close()
                    self._current = None
            if n:
                self._pos += n
                return n

    def close(self) -> None:
        self._close_current()
        super().close()


def put(layout_root: Path, parts: list, digest: str | None = None) -> tuple[str, int, str]:
    """Hash the parts' bytes (a file part mapped, checked as it was described) and write the recipe under a temp
    name; returns (digest, size, temp path). The caller pins the digest, then :func:`commit` renames it."""
    sha = hashlib.sha256()
    store = Path(layout_root).parent
    for part in parts if digest is None else ():
        if isinstance(part, bytes):
            sha.update(part)
            continue
        with _open_part(store, part) as fh:
            hash_fd(sha, fh.fileno(), part.size)
            st = os.fstat(fh.fileno())
        if not part.matches(st):
            raise RecipeError(f"{part.rel} changed while its layer was hashed")
    size = sum(map(part_size, parts))
    if digest is None:  # else checked by the caller over these very bytes
        digest = "sha256:" + sha.hexdigest()
    out = folder(layout_root)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", dir=out)
    with os.fdopen(fd, "wb") as fh:
        fh.write(_document(digest, size, parts))
    return digest, size, tmp


def commit(layout_root: Path, digest: str, tmp: str) -> None:
    os.replace(tmp, path_of(layout_root, digest.partition(":")[2]))
