"""The Docker engine adapter for images in the OCI layout: load what we wrote, import what the engine has.

:func:`load` streams a docker-archive (the ``manifest.json`` that ``docker load`` on 20.10 needs, pointing into
``blobs/sha256/``) straight from the layout into ``POST /images/load``; nothing is written to disk first. A layer
whose chain the engine already has goes as an empty file: the engine skips loading a layer whose chain id it
knows, so a code-only model load carries the code layer, not the runtime. Which prefix the engine has is decided
from images it holds that start with the same layers as ours: the image itself, or any image tagged in the layout
(the parent runtime or base, the previous version of the same model), found in the engine by its config digest,
which is its image id there. Anything unsure is sent whole.

Layer blobs are hashed as they stream. The last piece of a blob is held back until its digest is checked, and
``manifest.json`` goes last, so a blob whose bytes changed (disk corruption, an edit in the store) never becomes a
loaded image: the archive is cut short, the engine loads nothing, the blob is dropped from the layout and the error
names it.

:func:`import_image` copies an engine image (the base made by ``docker import``, a pulled image) into the layout
from ``docker save``'s stream: layers become blobs (each checked against the config's diff_ids), the config is
kept byte for byte, so the image id stays the same in both places.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from builder.errors import DockerError
from builder.images.image import Image
from builder.images.recipes import RecipeError
from builder.images.oci import CHUNK, MEDIA_CONFIG, MEDIA_LAYER, MEDIA_MANIFEST, Descriptor, Layout, LayoutError

Log = Callable[[str], None]
BLOCK = 512


class CorruptBlobError(LayoutError):
    """A blob's bytes do not match its digest; it has been removed from the layout."""

    def __init__(self, digest: str, path: str, what: str):
        self.digest = digest
        self.path = path
        super().__init__(f"layer blob {path} {what}: the store was corrupted; "
                         "it was removed from the layout, build again to write it anew")


@dataclass(frozen=True)
class LoadResult:
    image_id: str
    bytes_sent: int
    layers_sent: int
    layers_skipped: int
    seconds: float


# ------------------------------------------------------------------------------------------------ load


def full_tag(tag: str) -> str:
    """``name`` -> ``name:latest``, as the engine stores a tag without one."""
    name = tag.rsplit("/", 1)[-1]
    return tag if ":" in name or "@" in name else f"{tag}:latest"


def _engine_layers(client, image_id: str) -> list[str] | None:
    """The engine's layer list of ``image_id``, or None when it does not hold that image."""
    from docker.errors import NotFound

    try:
        attrs = client.api.inspect_image(image_id)
    except NotFound:
        return None
    return list((attrs.get("RootFS") or {}).get("Layers") or [])


def _candidates(layout: Layout, image: Image) -> list[tuple[int, str]]:
    """``(k, image id)`` of the layout's images that share their first k layers with ``image``, longest first.

    An engine holding such an image holds the chain of those k layers, whatever follows them: the previous
    version of a model proves its runtime and weights layers even though its code layer differs."""
    ours = [b.digest for b in image.layers]
    found = {(len(ours), image.image_id)}
    try:
        refs = layout.refs()
    except LayoutError:
        refs = {}
    for desc in {d.digest: d for d in refs.values()}.values():
        try:
            doc = layout.read_json(desc)
            layers = [Descriptor.from_json(layer) for layer in doc["layers"]]
            config = Descriptor.from_json(doc["config"]).digest
        except (LayoutError, KeyError, TypeError, ValueError):
            continue  # unreadable: not a reason to skip anything
        k = 0
        while k < min(len(layers), len(ours)) and layers[k].media_type == MEDIA_LAYER and layers[k].digest == ours[k]:
            k += 1
        if k:
            found.add((k, config))
    return sorted(found, reverse=True)


def engine_has(client, layout: Layout, image: Image) -> int:
    """How many leading layers of ``image`` the engine holds as one chain (0 when unsure).

    A candidate from the layout counts only when the engine's own layer list for it starts with our first k
    layers: the image id being the config digest is what finds it, the engine's answer is what decides."""
    if image.diff_ids != [b.digest for b in image.layers]:
        return 0  # layers not stored uncompressed: diff_ids are not blob digests, send everything
    for k, image_id in _candidates(layout, image):
        held = _engine_layers(client, image_id)
        if held is not None and held[:k] == image.diff_ids[:k]:
            return k
    return 0


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class _Archive:
    """The docker-archive of one image as a generator of byte chunks, counting what it yields."""

    def __init__(self, layout: Layout, image: Image, tags: list[str], skip: int):
        self.layout = layout
        self.image = image
        self.tags = tags
        self.skip = skip
        self.bytes_sent = 0
        self.failure: CorruptBlobError | None = None

    def _file(self, name: str, data: bytes) -> Iterator[bytes]:
        yield _header(name, len(data)) + data + _padding(len(data))

    def _blob(self, blob: Descriptor) -> Iterator[bytes]:
        """A layer blob, hashed on the way; its last piece is sent only once the digest is checked."""
        path = self.layout.blob_path(blob.digest)
        sha = hashlib.sha256()
        size = 0
        held, changed = b"", False
        try:
            with self.layout.open_blob(blob.digest) as fh:  # LayoutError when it is in the layout in no form
                yield _header(f"blobs/sha256/{blob.hex}", blob.size)
                while piece := fh.read(CHUNK):
                    size += len(piece)
                    if size > blob.size:
                        break
                    sha.update(piece)
                    if held:
                        yield held
                    held = piece
        except RecipeError:
            changed = True  # a store file under a recipe changed while it was read: like bytes that do not match
        if changed or size != blob.size or "sha256:" + sha.hexdigest() != blob.digest:
            what = "was kept over a store file that changed while it was read" if changed else \
                "does not match its digest" if size == blob.size else \
                f"holds more than {blob.size} bytes" if size > blob.size else f"holds {size} bytes, not {blob.size}"
            self.failure = CorruptBlobError(blob.digest, str(path), what)
            self.layout.discard(blob.digest)
            raise self.failure
        yield held + _padding(blob.size)

    def chunks(self) -> Iterator[bytes]:
        image = self.image
        config = self.layout.read_bytes(image.config)  # checks the config's digest
        yield from self._file(f"blobs/sha256/{image.config.hex}", config)
        real = {b.digest for i, b in enumerate(image.layers) if i >= self.skip}
        done = set()
        for blob in image.layers:
            if blob.digest in done:
                continue
            done.add(blob.digest)
            if blob.digest in real:
                yield from self._blob(blob)
            else:  # the engine has this layer's chain: it skips the file, whatever it holds
                yield from self._file(f"blobs/sha256/{blob.hex}", b"")
        manifest = [{"Config": f"blobs/sha256/{image.config.hex}", "RepoTags": list(self.tags) or None,
                     "Layers": [f"blobs/sha256/{b.hex}" for b in image.layers]}]
        yield from self._file("manifest.json", json.dumps(manifest).encode())  # last: a cut archive has none
        yield b"\0" * (2 * BLOCK)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks():
            self.bytes_sent += len(chunk)
            yield chunk


def _send(client, archive: _Archive, what: str, log: Log) -> None:
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        for chunk in client.api.load_image(iter(archive), quiet=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                raise DockerError(f"docker load of {what} failed: {' '.join(str(detail).split())}")
            text = str(chunk.get("stream", "")).strip()
            if text:
                log(text)
    except (DockerException, RequestException, OSError) as err:
        if archive.failure is not None:
            raise archive.failure from None
        explanation = getattr(err, "explanation", None) or str(err)
        raise DockerError(f"docker load of {what} failed: {' '.join(str(explanation).split())}") from None
    if archive.failure is not None:  # the engine took a cut archive without complaint: still a failure
        raise archive.failure


def _check_loaded(client, image: Image, tags: list[str], what: str) -> None:
    """The engine holds ``image`` under our config digest, with our layers and every tag."""
    held = _engine_layers(client, image.image_id)
    if held is None:
        raise DockerError(f"docker load of {what} did not give image {image.image_id}")
    if held != image.diff_ids:
        raise DockerError(f"docker load of {what}: the engine's image {image.image_id} has other layers")
    if tags:
        engine_tags = set(client.api.inspect_image(image.image_id).get("RepoTags") or [])
        missing = [t for t in tags if t not in engine_tags and t.removeprefix("docker.io/") not in engine_tags]
        if missing:
            raise DockerError(f"docker load of {what} did not tag {', '.join(missing)}")


def load(client, layout: Layout, image: Image, tags: list[str], *, log: Log | None = None) -> LoadResult:
    """Load ``image`` from ``layout`` into the engine under ``tags``, sending only the layers it lacks.

    Raises a one-line :class:`DockerError` when the engine refuses, :class:`CorruptBlobError` when a layer blob
    no longer matches its digest (the blob is then removed from the layout; nothing else in it changes)."""
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    log = log or (lambda line: None)
    tags = [full_tag(t) for t in tags]
    what = tags[0] if tags else image.image_id
    started = time.perf_counter()
    try:
        skip = engine_has(client, layout, image)
        archive = _Archive(layout, image, tags, skip)
        sent = 0
        try:
            _send(client, archive, what, log)
        except DockerError as err:
            if skip == 0 or engine_has(client, layout, image) == skip:
                raise  # refused for another reason than a layer we counted on
            # the engine dropped a layer we counted on since we asked: once more with every layer
            log(f"{err}; sending every layer")
            sent, skip = archive.bytes_sent, 0
            archive = _Archive(layout, image, tags, skip)
            _send(client, archive, what, log)
        _check_loaded(client, image, tags, what)
    except (DockerException, RequestException) as err:
        explanation = getattr(err, "explanation", None) or str(err)
        raise DockerError(f"docker load of {what} failed: {' '.join(str(explanation).split())}") from None
    n = len({b.digest for b in image.layers})
    real = len({b.digest for i, b in enumerate(image.layers) if i >= skip})
    return LoadResult(image.image_id, sent + archive.bytes_sent, real, n - real, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ import


class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (``docker save``'s stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _Present(Exception):
    """A streamed layer is already in the layout: drop the temp copy."""


def _take_layer(layout: Layout, fh, wanted: set[str], ref: str) -> str:
    """Stream one ``layer.tar`` into the layout; returns its digest (checked against the wanted diff_ids)."""
    try:
        with layout.writer(MEDIA_LAYER) as out:
            while piece := fh.read(CHUNK):
                out.write(piece)
            digest = "sha256:" + out.sha.hexdigest()
            if digest not in wanted:
                raise LayoutError(f"docker save of {ref} gave a layer {digest} that its config does not list")
            if layout.has(digest, out.size):
                raise _Present
    except _Present:
        pass
    return digest


def import_image(client, ref: str, layout: Layout, layout_ref: str) -> Image:
    """Copy the engine's image ``ref`` into ``layout`` as ``layout_ref``; its config digest stays its image id.

    When every blob is already in the layout, nothing is read from the engine but the image's inspect data.
    Otherwise the whole save stream is read (the engine cannot send part of it): each layer is hashed through a
    temp file, and one the layout already holds is dropped, not rewritten."""
    from docker.errors import DockerException, ImageNotFound
    from requests.exceptions import RequestException

    try:
        image = client.images.get(ref)
        image_id = image.id
        wanted = list(image.attrs.get("RootFS", {}).get("Layers") or [])
        if layout.has(image_id) and all(layout.has(d) for d in wanted):
            config = layout.read_bytes(Descriptor(MEDIA_CONFIG, image_id, 0))
            got = wanted
        else:
            got, config = _read_save(layout, image.save(), set(wanted), image_id, ref)
    except ImageNotFound:
        raise DockerError(f"the engine has no image {ref}") from None
    except (DockerException, RequestException, OSError, tarfile.TarError) as err:
        explanation = getattr(err, "explanation", None) or str(err)
        raise DockerError(f"copying {ref} from the engine failed: {' '.join(str(explanation).split())}") from None
    diff_ids = list(json.loads(config)["rootfs"]["diff_ids"])
    if got != diff_ids:
        raise LayoutError(f"docker save of {ref}: its layers {_short(got)} are not its config's diff_ids "
                          f"{_short(diff_ids)}")
    config_desc = layout.put_bytes(config, MEDIA_CONFIG)
    layers = tuple(Descriptor(MEDIA_LAYER, d, layout.blob_size(d)) for d in diff_ids)
    manifest = layout.put_json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_desc.to_json(),
                                "layers": [b.to_json() for b in layers]}, MEDIA_MANIFEST)
    layout.tag(layout_ref, manifest)
    return Image(manifest, config_desc, json.loads(config), layers)


def _short(digests: list[str]) -> str:
    return "[" + ", ".join((d or "missing").removeprefix("sha256:")[:12] for d in digests) + "]"


def _read_save(layout: Layout, stream: Iterable[bytes], wanted: set[str], image_id: str,
               ref: str) -> tuple[list[str | None], bytes]:
    """Read ``docker save``'s archive: the digests of its layers in its manifest's order (each layer stored as a
    blob on the way), and the config's bytes."""
    paths: dict[str, str] = {}
    links: dict[str, str] = {}
    manifest = None
    config = None
    with tarfile.open(fileobj=io.BufferedReader(_IterReader(stream), CHUNK), mode="r|") as tar:
        for member in tar:
            name = posixpath.normpath(member.name)
            if member.issym() and name.endswith("/layer.tar"):  # a repeated layer, saved once
                links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            elif not member.isfile():
                continue
            elif name.endswith("/layer.tar"):
                paths[name] = _take_layer(layout, tar.extractfile(member), wanted, ref)
            elif name == "manifest.json":
                manifest = json.loads(tar.extractfile(member).read())
            elif "/" not in name and name.endswith(".json") and name != "repositories":
                data = tar.extractfile(member).read()
                if "sha256:" + hashlib.sha256(data).hexdigest() == image_id:
                    config = data
    if config is None or not manifest:
        raise LayoutError(f"docker save of {ref} gave no config {image_id} or no manifest.json")
    for name, target in links.items():
        if target in paths:
            paths[name] = paths[target]
    return [paths.get(posixpath.normpath(p)) for p in manifest[0].get("Layers") or []], config
