"""The OCI image layout in the store: content-addressed blobs shared by every image, and an index of refs.

Layout (the OCI image-layout spec, read by skopeo and umoci as ``oci:$SWCLI_HOME/oci:<ref>`` for every image whose
layers are all files; a big file's layer is kept as a recipe, which only swcli reads: :mod:`builder.images.recipes`)::

    oci/oci-layout                     {"imageLayoutVersion": "1.0.0"}
    oci/index.json                     one manifest descriptor per ref (annotation org.opencontainers.image.ref.name)
    oci/blobs/sha256/<hex>             layers (uncompressed tars), configs, manifests: each once, whatever uses it
    oci/recipes/<hex>.json             a layer kept as header bytes plus store files (not a second copy of them)
    oci/files/<sha256>                 big files of pulled layers, which their store entries hard-link

A blob is written to a temp file beside its final place while it is hashed, and renamed to its digest only when
complete, so a killed writer never leaves a blob whose name lies about its bytes. ``index.json`` is rewritten
whole (temp file and rename) under an ``flock``, after every blob its manifest names is in place: a ref never
points at a missing blob. JSON documents are serialised one way only (sorted keys, no spaces), so the same image
always has the same digests.

Blobs no ref needs are collected (:meth:`Layout.collect`, for `swcli gc` and a failed pull) under an exclusive
``flock`` on ``gc.lock``. A process that writes a blob, or finds one in place (:meth:`Layout.has`), first pins it:
it appends the digest, under a shared lock on ``gc.lock``, to its own ``pins/<pid>-XXXX`` file, which it holds
``flock``-ed until it exits. So a collector sees every blob a live build or pull is about to tag, and a writer
that pins after a collection finds the blob gone and writes it again.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from builder.errors import SwcliError
from builder.images import recipes
from builder.files import HashingWriter, pid_alive, write_bytes_atomic

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: what `docker load` takes; push compresses
REF_ANNOTATION = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


_PINS: dict[tuple[int, str], tuple[int, str]] = {}  # (pid, layout root) -> (fd of the held pin file, its path)
_PINS_LOCK = threading.Lock()


def _drop_pins(pid: int, path: str) -> None:
    """At exit, this process's pin file goes (a forked child that runs exit handlers leaves its parent's)."""
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)


class LayoutError(SwcliError):
    """The OCI layout in the store is unreadable, or a blob does not match its digest."""


def canonical_json(obj) -> bytes:
    """The one serialisation of a config, manifest or index: the same object always gives the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Descriptor:
        return cls(obj["mediaType"], obj["digest"], int(obj["size"]), dict(obj.get("annotations") or {}))

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


class Layout:
    """An OCI image layout at ``root`` (created on first write)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"

    # ------------------------------------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            raise LayoutError(f"{digest!r} is not a sha256 digest")
        return self.blobs / hexd

    def has(self, digest: str, size: int | None = None) -> bool:
        """Whether the blob is in place (of ``size``), as a file or a sound recipe; pinned first, so no collector
        removes it from now on."""
        path = self.blob_path(digest)
        if not self.blobs.is_dir():
            return False
        with contextlib.suppress(OSError):  # a read-only layout: nothing can collect from it either
            self.pin(digest)
        try:
            found = os.stat(path).st_size
        except FileNotFoundError:
            found = recipes.sound(self.root, path.name)
        return found is not None and (size is None or found == size)

    def open_blob(self, digest: str) -> IO[bytes]:
        """The blob's bytes to read: its file, or its recipe's parts (:mod:`builder.images.recipes`);
        :class:`LayoutError` when it is in neither form. Callers hash what they read, as ever."""
        path = self.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            pass
        found = recipes.checked(self.root, path.name)
        if found is None:  # no recipe, or a file it names changed or went
            raise LayoutError(f"blob {digest} is missing from {self.blobs}")
        return io.BufferedReader(recipes.RecipeReader(self.root, *found), CHUNK)  # reads fill up

    def blob_size(self, digest: str) -> int:
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError:
            size = recipes.sound(self.root, digest.partition(":")[2])
        if size is None:
            raise LayoutError(f"blob {digest} is missing from {self.blobs}")
        return size

    def put_recipe(self, media_type: str, parts: list, *, digest: str | None = None) -> Descriptor:
        """A blob kept as a recipe of literal bytes and store files (:func:`builder.images.recipes.put`);
        ``digest``: already checked over exactly these bytes (a pulled layer), so not hashed again."""
        self._init()
        digest, size, tmp = recipes.put(self.root, parts, digest=digest)
        try:
            self.pin(digest)
            recipes.commit(self.root, digest, tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return Descriptor(media_type, digest, size)

    def _init(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.is_file():
            write_bytes_atomic(marker, canonical_json({"imageLayoutVersion": "1.0.0"}))

    @contextlib.contextmanager
    def writer(self, media_type: str, *, behind: bool = False) -> Iterator[HashingWriter]:
        """Stream a blob in; on a clean exit it is renamed to its digest and ``writer.descriptor`` is set.
        ``behind``: hash big chunks on a second thread (see :class:`HashingWriter`)."""
        self._init()
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", dir=self.blobs)
        try:
            with os.fdopen(fd, "wb") as fh:
                hashing = HashingWriter(fh, behind=behind)
                yield hashing
                fh.flush()
            digest = hashing.digest()
            self.pin(digest)
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.blob_path(digest))
            hashing.descriptor = Descriptor(media_type, digest, hashing.size)  # type: ignore[attr-defined]
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest, len(data)):
            with self.writer(media_type) as out:
                out.write(data)
        return Descriptor(media_type, digest, len(data))

    def put_json(self, obj, media_type: str) -> Descriptor:
        return self.put_bytes(canonical_json(obj), media_type)

    def read_json(self, desc: Descriptor) -> dict:
        data = self.read_bytes(desc)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as err:
            raise LayoutError(f"{self.blob_path(desc.digest)}: not JSON: {err}") from None

    def read_bytes(self, desc: Descriptor) -> bytes:
        path = self.blob_path(desc.digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"{path}: blob is missing") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
            raise LayoutError(f"{path}: bytes do not match the digest (the store was changed or corrupted)")
        return data

    def verify(self, digest: str) -> bool:
        """Re-hash a blob (file or recipe): False when it is missing or its bytes are not what its name says."""
        sha = hashlib.sha256()
        try:
            with self.open_blob(digest) as fh:
                while piece := fh.read(CHUNK):
                    sha.update(piece)
        except (LayoutError, OSError, recipes.RecipeError):
            return False
        return "sha256:" + sha.hexdigest() == digest

    def discard(self, digest: str) -> None:
        for path in (self.blob_path(digest), recipes.path_of(self.root, digest.partition(":")[2])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def clean_temp(self) -> list[Path]:
        """Remove the temp blobs of writers that died (Ctrl-C is cleaned by the writer itself; kill -9 is not):
        a temp name carries its writer's pid, and only those of processes gone are removed."""
        removed = []
        if not self.blobs.is_dir():
            return removed
        for path in [*self.blobs.glob(".tmp-*"), *recipes.folder(self.root).glob(".tmp-*"),
                     *recipes.files_dir(self).glob(".tmp-*")]:
            pid = path.name.split("-")[1]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed

    # ------------------------------------------------------------------------------------------ pins, gc

    def _own_pins(self) -> tuple[int, str]:
        """This process's pin file for this layout, created and locked on first use."""
        key = (os.getpid(), str(self.root))
        with _PINS_LOCK:
            if key not in _PINS:
                folder = self.root / "pins"
                folder.mkdir(parents=True, exist_ok=True)
                while True:
                    fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", dir=folder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    with contextlib.suppress(FileNotFoundError):
                        if os.stat(path).st_ino == os.fstat(fd).st_ino:
                            break
                    os.close(fd)  # a collector took it for a dead one's between mkstemp and flock
                _PINS[key] = (fd, path)
                atexit.register(_drop_pins, os.getpid(), path)
            return _PINS[key]

    def pin(self, digest: str) -> None:
        """Keep ``digest`` from collectors for as long as this process lives."""
        self.blob_path(digest)  # a sha256 digest: one line of the pin file
        self._init()
        fd, _ = self._own_pins()
        with open(self.root / "gc.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            os.write(fd, f"{digest}\n".encode())

    def _pinned_by_others(self) -> set[str]:
        """Digests pinned by other live processes; the files of dead ones are removed."""
        own = _PINS.get((os.getpid(), str(self.root)), (None, ""))[1]
        pinned: set[str] = set()
        folder = self.root / "pins"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if str(path) == own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # held: a live process
                    with os.fdopen(os.dup(fd), "r", encoding="ascii", errors="replace") as fh:
                        pinned.update(line.strip() for line in fh)
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
            finally:
                os.close(fd)
        return pinned

    def reachable(self) -> set[str]:
        """Every blob a ref of index.json reaches (manifests, configs, layers; an index's manifests), every layer
        the layer cache names, and every blob another live process has pinned."""
        keep = self._pinned_by_others()
        todo = [d.digest for d in self.refs().values()]
        while todo:
            digest = todo.pop()
            if digest in keep:
                continue
            keep.add(digest)
            try:
                doc = json.loads(self.blob_path(digest).read_bytes()) if os.stat(self.blob_path(digest)).st_size \
                    <= 4 << 20 else {}
            except (OSError, ValueError, RecursionError, LayoutError):
                continue
            children = [doc.get("config")] + list(doc.get("layers") or []) + list(doc.get("manifests") or []) \
                if isinstance(doc, dict) else []
            todo.extend(c["digest"] for c in children if isinstance(c, dict) and isinstance(c.get("digest"), str))
        for path in sorted((self.root / "cache" / "layers").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, RecursionError, AttributeError, TypeError):
                keep.add(json.loads(path.read_text())["digest"])
        return keep

    def collect(self, candidates: Iterator[str] | None = None) -> tuple[list[str], int]:
        """Remove the blobs (all, or only ``candidates``) that :meth:`reachable` does not keep, and the temp blobs
        of dead writers; returns the digests removed and the bytes freed. Run under the exclusive gc lock."""
        removed, freed = [], 0
        if not self.blobs.is_dir():
            return removed, freed
        with open(self.root / "gc.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keep = self.reachable()
            names = sorted(self.blobs.iterdir()) if candidates is None else \
                [self.blob_path(d) for d in sorted(set(candidates))]
            kept_as = recipes.folder(self.root)
            names += sorted(kept_as.glob("*.json")) if candidates is None else \
                [recipes.path_of(self.root, d.partition(":")[2]) for d in sorted(set(candidates))]
            for path in names:
                digest = f"sha256:{path.name.removesuffix('.json')}"
                if path.name.startswith(".") or digest in keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = path.lstat().st_size
                    path.unlink()
                    removed.append(digest)
                    freed += size
            for path in recipes.unused_files(self.root, recipes.files_dir(self)):
                with contextlib.suppress(FileNotFoundError):
                    freed += path.lstat().st_size if path.lstat().st_nlink == 1 else 0
                    path.unlink()
            for path in self.clean_temp():
                removed.append(path.name)
        return removed, freed

    # ------------------------------------------------------------------------------------------------ refs

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        self._init()
        with open(self.root / "index.json.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read_index(self) -> dict:
        path = self.root / "index.json"
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
        except (OSError, ValueError, RecursionError) as err:
            raise LayoutError(f"{path}: unreadable: {err}") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise LayoutError(f"{path}: not an OCI index")
        return index

    def tag(self, ref: str, manifest: Descriptor) -> None:
        """Point ``ref`` at ``manifest`` (whose blobs must all be in place already)."""
        if not self.has(manifest.digest, manifest.size):
            raise LayoutError(f"refusing to tag {ref}: manifest {manifest.digest} is not in the layout")
        with self._index_lock():
            index = self._read_index()
            kept = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_ANNOTATION) != ref]
            entry = Descriptor(manifest.media_type, manifest.digest, manifest.size, {REF_ANNOTATION: ref})
            index["manifests"] = sorted(kept + [entry.to_json()], key=lambda m: m["annotations"][REF_ANNOTATION]
                                        if m.get("annotations") else "")
            write_bytes_atomic(self.root / "index.json", canonical_json(index))

    def resolve(self, ref: str) -> Descriptor | None:
        """The manifest a ref names, or None."""
        for m in self._read_index()["manifests"]:
            if (m.get("annotations") or {}).get(REF_ANNOTATION) == ref:
                return Descriptor.from_json(m)
        return None

    def refs(self) -> dict[str, Descriptor]:
        return {m["annotations"][REF_ANNOTATION]: Descriptor.from_json(m)
                for m in self._read_index()["manifests"] if (m.get("annotations") or {}).get(REF_ANNOTATION)}
