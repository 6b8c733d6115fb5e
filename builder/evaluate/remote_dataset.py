"""A dataset image read straight from a registry, one record range at a time, with no engine.

`eval --dataset REGISTRY/REPO[:TAG|@DIGEST] --shard I/N` opens the dataset through here. The image layout is the one
:mod:`builder.images.dataset_layers` writes: volume layers in volume order, then a small meta layer (manifest,
shard index, ``layers.json``). The reader fetches the manifest and the config (label ``io.swcli.kind`` must be
``dataset``), then the meta layer, works out from the manifest's per-volume record counts which volumes hold
records ``[start, stop)``, and fetches only the layers that hold those volumes.

Everything fetched goes into a cache under ``$SWCLI_HOME/cache/registry`` keyed by digest: manifests and configs
as blobs (``blobs/sha256/<hex>``), layers as the folders their tar unpacks to (``layers/<diff_id hex>/``). A blob
is written to a temp name, its digest checked by the client, then renamed; a layer is unpacked into a temp folder
while its uncompressed bytes are hashed (:mod:`builder.evaluate.layer_unpack`), and renamed into place only when
that hash is the config's diff_id and the folder holds exactly the volumes ``layers.json`` names, at the sizes the
manifest gives. Nothing unverified is ever under a cache name, so a second run of the same slice (by digest, or
by a tag that still names the same manifest) downloads nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EvalError, RegistryError
from builder.evaluate.layer_unpack import TOP, _unpack
from builder.images.dataset_layers import LAYERS_LABEL, LAYERS_NAME, LayersFileError, read_layers_json
from builder.refs import is_version, name_problem
from builder.registry import ClientFor
from builder.registry.media import (GZIP_LAYERS, INDEX_TYPES, MAX_CONFIG, MAX_MANIFEST, PLAIN_LAYERS,
                                    checked_descriptor, checked_digest, checked_list, checked_object, linux_amd64)
from builder.bounded import image_config, parse, read_capped, read_json
from builder.volumes import INDEX_NAME, MANIFEST_NAME, DatasetReader, ManifestError, manifest_layout
from builder.store import Store

META_FILES = {MANIFEST_NAME, INDEX_NAME, LAYERS_NAME}
# the meta layer's JSON files are parsed whole: each at most what a registry takes as a manifest (4 MiB: a dataset
# manifest lists ~25,000 volumes in that; layers.json less per volume); the index is mapped, not read, and must be
# the size the manifest gives, itself what its record count needs (DatasetReader)
META_MAX = {MANIFEST_NAME: MAX_MANIFEST, LAYERS_NAME: MAX_MANIFEST}


def is_registry_ref(text: str) -> bool:
    """``REGISTRY/REPO...`` (the first component a host: has '.' or ':' or is localhost) and not a local path: one
    spelled as a path (``./``, ``../``, ``/``, ``~``) is a path even when it does not exist, so the user is told so."""
    first, slash, _ = text.partition("/")
    if not slash or text.startswith((".", "/", "~")) or Path(text).expanduser().exists():
        return False
    return "." in first or ":" in first or first == "localhost"


def cache_root(store: Store | None = None) -> Path:
    return (store or Store()).root / "cache" / "registry"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")


class SliceReader(DatasetReader):
    """A dataset reader whose volumes live in the cached layer folders (``volumes``: name -> file); the manifest
    and index come from the meta layer's folder. A volume outside the slice is simply missing."""

    def __init__(self, meta_dir: Path, manifest: dict, volumes: dict[str, Path]):
        self._cached = dict(volumes)
        super().__init__(meta_dir, manifest)

    def volume_path(self, number: int) -> Path:
        path = super().volume_path(number)
        return self._cached.get(path.name, path)


@dataclass
class RemoteSlice:
    """What :func:`open_slice` fetched: the image by digest, its dataset manifest and the slice's cached volumes."""

    reference: str  # REGISTRY/REPO@sha256:...
    meta_dir: Path
    manifest: dict
    start: int
    stop: int
    volumes: dict[str, Path]
    layers: int  # volume layers of the image
    layers_used: int  # of which the slice needed
    downloaded: int  # bytes this call fetched from the registry (0 when everything was cached)

    def reader(self) -> SliceReader:
        return SliceReader(self.meta_dir, self.manifest, self.volumes)


class _Fetcher:
    """One image in one repository, fetched through the cache (see the module docstring)."""

    def __init__(self, client, ref, root: Path):
        self.client, self.ref, self.root = client, ref, root
        self.repo = ref.repository
        self.downloaded = 0

    def where(self, digest: str | None = None) -> str:
        return f"{self.ref.registry}/{self.repo}" + (f"@{digest}" if digest else "")

    def _cached(self, path: Path, limit: int) -> bytes | None:
        """A cached small blob whose bytes still hash to its name (read bounded: the cache is a folder that
        existed before the command), else None."""
        with contextlib.suppress(OSError, RegistryError):
            data = read_capped(path, limit, str(path))
            if hashlib.sha256(data).hexdigest() == path.name:
                return data
        return None

    def blob(self, descriptor: dict, what: str) -> bytes:
        """A small blob (config; its descriptor checked, at most :data:`MAX_CONFIG`), from the cache or fetched,
        verified and cached."""
        digest, size = descriptor["digest"], descriptor["size"]
        path = self.root / "blobs" / "sha256" / _hex(digest, what)
        data = self._cached(path, MAX_CONFIG)
        if data is not None:
            return data
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(path)
        try:
            with open(tmp, "wb") as out:
                self.downloaded += self.client.fetch_blob(self.repo, digest, out, size=size)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return read_capped(path, MAX_CONFIG, what)

    def manifest(self) -> tuple[str, dict]:
        """The image manifest's digest and document: a tag is resolved with a HEAD, an index to its linux/amd64
        image; a manifest in the cache (by digest) is not fetched again."""
        digest = self.ref.digest
        if digest is None:
            found = self.client.manifest_descriptor(self.repo, self.ref.ref)
            if found is None:
                raise RegistryError(f"{self.ref}: no such image in registry {self.ref.registry}")
            digest = found["digest"]
        for _ in range(2):  # an index, then the image it lists
            doc = checked_object(parse(self._manifest_bytes(digest), self.where(digest)), self.where(digest))
            if doc.get("mediaType") not in INDEX_TYPES and "manifests" not in doc:
                return digest, doc
            digest = linux_amd64(doc, self.where(digest))
        raise RegistryError(f"{self.where(digest)}: an index inside an index; name the dataset image itself")

    def _manifest_bytes(self, digest: str) -> bytes:
        path = self.root / "blobs" / "sha256" / _hex(digest, str(self.ref))
        data = self._cached(path, MAX_MANIFEST)
        if data is not None:
            return data
        data = self.client.get_manifest(self.repo, digest).data  # the client checks it against the digest
        self.downloaded += len(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp(path)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data

    def layer(self, blob: dict, diff_id: str, expect: dict[str, int | None], what: str, *, others: bool = False,
              at_most: dict[str, int] | None = None) -> Path:
        """The folder layer ``blob`` unpacks to, holding the files ``expect`` (name -> size, None: any size up to
        ``at_most[name]`` when given), and other plain files only when ``others``."""
        final = self.root / "layers" / _hex(diff_id, what)
        if final.is_dir():
            return final
        media, digest = blob["mediaType"], blob["digest"]  # a checked descriptor (_dataset_image)
        if media not in GZIP_LAYERS + PLAIN_LAYERS:
            raise RegistryError(f"{what} is {media!r:.80}; swcli reads gzip or plain tar layers")
        final.parent.mkdir(parents=True, exist_ok=True)
        download, folder = _tmp(final.with_suffix(".blob")), _tmp(final)
        try:
            with open(download, "wb") as out:
                self.downloaded += self.client.fetch_blob(self.repo, digest, out, size=blob["size"])
            folder.mkdir()
            got = _unpack(download, media in GZIP_LAYERS, folder, expect, what, others, at_most)
            if got != diff_id:
                raise RegistryError(f"{what}: its content is {got}, not the config's diff_id {diff_id}")
            try:
                os.replace(folder, final)
            except OSError:  # another process put the same verified layer there first
                if not final.is_dir():
                    raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                download.unlink()
            shutil.rmtree(folder, ignore_errors=True)
        return final


def _hex(digest: str, what: str) -> str:
    """The hex of a sha256 digest, checked before it becomes a file name or a URL."""
    return checked_digest(digest, what).partition(":")[2]


def _meta(meta_dir: Path, labels: dict[str, str], where: str) -> tuple[dict, dict, dict[str, int]]:
    """The meta layer's dataset manifest (its name and version the image's labels), ``layers.json``, and the
    volumes' sizes by name: each file bounded before it is parsed, its shape checked."""
    manifest_at, layers_at = f"{where}: /{TOP}/{MANIFEST_NAME}", f"{where}: /{TOP}/{LAYERS_NAME}"
    try:
        manifest = read_json(meta_dir / MANIFEST_NAME, META_MAX[MANIFEST_NAME], manifest_at)
        layers = read_layers_json(read_capped(meta_dir / LAYERS_NAME, META_MAX[LAYERS_NAME], layers_at), layers_at)
        layout = manifest_layout(manifest, manifest_at)
    except (LayersFileError, ManifestError) as err:
        raise RegistryError(str(err).splitlines()[0]) from None
    said = (manifest.get("name"), manifest.get("version"))
    if said != (labels["io.swcli.name"], labels["io.swcli.version"]):  # the run is named after the manifest's
        raise RegistryError(f"{manifest_at}: names dataset {said[0]!r:.80}:{said[1]!r:.80}, the image's labels "
                            f"{labels['io.swcli.name']}:{labels['io.swcli.version']}")
    index = meta_dir / layout.index
    if not index.is_file() or index.stat().st_size != layout.index_size:
        raise RegistryError(f"{where}: /{TOP}/{layout.index} is not the {layout.index_size} bytes the manifest says")
    return manifest, layers, {s.file: s.size for s in layout.volumes}


def volume_range(manifest: dict, start: int, stop: int, where: str) -> list[str]:
    """The volumes holding records ``[start, stop)``: volumes hold consecutive records, in order (the writer's
    rule), so the manifest's per-volume record counts say where each begins."""
    names, first = [], 0
    for shard in manifest_layout(manifest, where).volumes:
        if first < stop and first + shard.records > start:
            names.append(shard.file)
        first += shard.records
    return names


def _dataset_image(text: str, store: Store | None, client_for: ClientFor | None):
    """The dataset image ``text`` names: (ref, fetcher, manifest digest, layer descriptors, config labels, diff_ids);
    one line when it is not there or not a swcli dataset image."""
    try:
        from builder.registry.client import RegistryClient
        from builder.registry.reference import Reference
    except ImportError as err:  # a model image whose environment lacks requests
        raise EvalError(f"--dataset {text}: reading from a registry needs the {err.name!r} package in this "
                        "environment") from None
    ref = Reference.parse(text)
    client_for = client_for or RegistryClient
    fetch = _Fetcher(client_for(ref.registry), ref, cache_root(store))
    digest, doc = fetch.manifest()
    where = fetch.where(digest)
    config = checked_descriptor(doc.get("config"), f"{where}: config", max_size=MAX_CONFIG)
    blobs = [checked_descriptor(blob, f"{where}: layers[{n}]")
             for n, blob in enumerate(checked_list(doc.get("layers"), f"{where}: field 'layers'"))]
    labels, diff_ids = image_config(fetch.blob(config, f"config of {where}"), where)
    kind = labels.get("io.swcli.kind")
    if kind != "dataset":
        raise EvalError(f"{ref} is a {kind} image, not a dataset" if kind in ("model", "runtime")
                        else f"{ref} is not a swcli dataset image (label io.swcli.kind is {kind!r:.80})")
    name, version = labels.get("io.swcli.name"), labels.get("io.swcli.version")
    if name_problem(name) or not is_version(version):  # they name the run, its folder and its parts' key
        raise RegistryError(f"{where}: labels io.swcli.name {name!r:.80} and io.swcli.version {version!r:.80} are "
                            "not a dataset name and version")
    return ref, fetch, digest, blobs, labels, diff_ids


def dataset_identity(text: str, *, store: Store | None = None, client_for: ClientFor | None = None) -> dict:
    """``{"name", "version"}`` of the dataset image ``text`` (a tag is resolved now), from its labels: what a run of
    it evaluates. The version is the content's, so a re-pushed tag with new records gives a new one. Fetches a
    manifest and a config."""
    _, _, _, _, labels, _ = _dataset_image(text, store, client_for)
    return {"name": labels["io.swcli.name"], "version": labels["io.swcli.version"]}  # checked there


def open_slice(text: str, shard=None, *, store: Store | None = None, client_for: ClientFor | None = None) -> RemoteSlice:
    """Fetch what records of shard ``shard`` (a :class:`~builder.evaluate.sharding.Shard`, None: all) of the
    dataset image ``text`` need into the cache; the reader over them is :meth:`RemoteSlice.reader`."""
    ref, fetch, digest, blobs, labels, diff_ids = _dataset_image(text, store, client_for)
    where = fetch.where(digest)
    try:
        count = int(labels[LAYERS_LABEL])
    except (KeyError, ValueError):
        raise EvalError(f"{ref}: no {LAYERS_LABEL} label; the image predates dataset layers, rebuild and push it") from None
    if len(blobs) != len(diff_ids) or not 0 <= count < len(blobs):
        raise RegistryError(f"{where}: {len(blobs)} layers, {len(diff_ids)} diff_ids, {count} dataset layers: "
                            "the manifest and config do not agree")
    meta_dir = fetch.layer(blobs[-1], diff_ids[-1], dict.fromkeys(META_FILES),
                           f"meta layer {blobs[-1]['digest']} of {where}", others=True, at_most=META_MAX)
    manifest, layers, shards = _meta(meta_dir, labels, where)
    positions = range(len(blobs) - 1 - count, len(blobs) - 1)
    if [entry["diff_id"] for entry in layers["layers"]] != [diff_ids[i] for i in positions]:
        raise RegistryError(f"{where}: /{TOP}/{LAYERS_NAME} does not list the image's {count} dataset layers")
    records = manifest.get("records", 0)
    start, stop = (0, records) if shard is None else shard.range(records)
    if shard is not None:
        shard.check_fits(records, str(ref))
    wanted = set(volume_range(manifest, start, stop, f"{where}: /{TOP}/{MANIFEST_NAME}"))
    volumes: dict[str, Path] = {}
    used = 0
    for position, entry in zip(positions, layers["layers"]):
        if not wanted.intersection(entry["volumes"]):
            continue
        expect = {}
        for name in entry["volumes"]:
            if name not in shards:
                raise RegistryError(f"{where}: {LAYERS_NAME} names volume {name}, which the manifest does not list")
            expect[name] = shards[name]
        folder = fetch.layer(blobs[position], diff_ids[position], expect, f"layer {blobs[position]['digest']} of {where}")
        volumes.update({name: folder / name for name in entry["volumes"]})
        used += 1
    lost = sorted(wanted - set(volumes))
    if lost:
        raise RegistryError(f"{where}: no layer holds volume(s) {', '.join(lost)} ({LAYERS_NAME} lists none)")
    return RemoteSlice(f"{ref.registry}/{ref.repository}@{digest}", meta_dir, manifest, start, stop, volumes, count,
                       used, fetch.downloaded)
