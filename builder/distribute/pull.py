"""`swcli pull`: an swcli image from a registry into the store's OCI layout and the store, no engine.

The manifest (from an index: its linux/amd64 entry) and the config come first, every descriptor checked
(:func:`builder.registry.media.checked_descriptor`: a size is required, a config is at most ``MAX_CONFIG``, a layer at
most :data:`MAX_BLOB`), and the config's labels are checked before anything else. The layers' declared sizes must fit
on the store's disk with :data:`DISK_MARGIN` to spare. Each layer is fetched (its compressed digest verified by the
client) and gunzipped as it arrives into an uncompressed layout blob whose digest must be the config's diff_id, the
uncompressed bytes of all layers counted against the same free space while they are written; a layer already in the
layout is not fetched. Then the store entry is made (:mod:`builder.distribute.pulled_entry`: only what its own manifest
lists, verified, its version recomputed), and only then are the local refs (`swds|swmp|swrt/<name>:<version>` and
`:latest`) written into the layout; a local ``<name>:<version>`` that names another image is never repointed. A pull
that fails leaves no ref and no store entry, and removes the blobs it wrote that nothing else reaches. ``--load``
also loads the image into the Docker engine, for `docker run`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from pathlib import Path

from isal import isal_zlib

from builder.errors import RegistryError, SwcliError
from builder.images.layer_tar import shown
from builder.images.oci import CHUNK, MEDIA_CONFIG, MEDIA_LAYER, MEDIA_MANIFEST, Descriptor, Layout
from builder.parallel import in_order
from builder.refs import image_tags
from builder.registry import ClientFor
from builder.registry.media import (GZIP_LAYERS, INDEX_TYPES, MAX_CONFIG, PLAIN_LAYERS, checked_descriptor,
                                    checked_digest, checked_list, checked_object, linux_amd64)
from builder.distribute.blobs import (BLOB_WORKERS, KnownBlobs, LayerProgress, OnProgress, TransferResult,
                                      check_labels, one_line, registry_clients)

# One layer blob, compressed or not: more than any registry we know keeps in one blob (GHCR refuses layers over
# 10 GB, ECR over 52,000 MiB), and what swcli writes stays far below (dataset layers: attr.layer_size, at most 4 GiB).
MAX_BLOB = 64 << 30
# What a pull leaves free on the store's disk, at least: declared sizes and uncompressed bytes are counted against
# the free space less this, so a pull never fills the disk the store, the engine and the build cache share.
DISK_MARGIN = 1 << 30


class DiskBudget:
    """The bytes a pull may still write into the layout: the free space of its disk less :data:`DISK_MARGIN`,
    shared by the layers being written at once."""

    def __init__(self, folder: Path):
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        self.left = shutil.disk_usage(folder).free - DISK_MARGIN
        self._lock = threading.Lock()

    def take(self, size: int, what: str) -> None:
        with self._lock:
            if size > self.left:
                raise RegistryError(f"{what}: would leave less than {DISK_MARGIN >> 20} MiB free on the store's "
                                    "disk; refusing it")
            self.left -= size


class _Gunzip:
    """A file object that gunzips what is written to it into ``out`` (several gzip members too), bounded in
    memory whatever the ratio, and on disk by ``budget`` and :data:`MAX_BLOB`. Bytes that are not gzip are noted
    and the rest ignored, so the download goes on to its digest check: a damaged blob is reported as one that does
    not match its digest."""

    def __init__(self, out, budget: DiskBudget, what: str):
        self.out, self.budget, self.what = out, budget, what
        self.engine = isal_zlib.decompressobj(31)
        self.failure: str | None = None
        self.size = 0

    def write(self, data: bytes) -> int:
        if self.failure is None:
            try:
                self._write(data)
            except isal_zlib.error as err:
                self.failure = one_line(err)
        return len(data)

    def _put(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BLOB:
            raise RegistryError(f"{self.what}: more than {MAX_BLOB >> 30} GiB uncompressed; refusing it")
        self.budget.take(len(data), f"{self.what} uncompressed")
        self.out.write(data)

    def _write(self, data: bytes) -> None:
        while data:
            self._put(self.engine.decompress(data, CHUNK))
            data = self.engine.unconsumed_tail
            while not data and not self.engine.eof and (more := self.engine.decompress(b"", CHUNK)):
                self._put(more)
            if self.engine.eof:
                data = self.engine.unused_data + data
                if data:
                    self.engine = isal_zlib.decompressobj(31)

    def finish(self, what: str) -> None:
        if self.failure is not None:
            raise RegistryError(f"{what}: not a gzip stream ({self.failure})")
        if not self.engine.eof:
            raise RegistryError(f"{what}: the gzip stream ends early")


def _json(data: bytes, what: str, kind: str) -> dict:
    try:
        return checked_object(json.loads(data), what)
    except (ValueError, RecursionError) as err:
        raise RegistryError(f"{what}: not {kind} ({one_line(err)})") from None


def _pick(client, repository: str, manifest, what: str):
    """An image manifest: ``manifest`` itself, or its index's linux/amd64 entry."""
    if manifest.media_type not in INDEX_TYPES:
        return manifest
    return client.get_manifest(repository, linux_amd64(_json(manifest.data, what, "an image index"), what))


def _parse(manifest, what: str) -> tuple[Descriptor, list[Descriptor]]:
    """The config's and the layers' descriptors, each of the shape the spec requires (a size included)."""
    doc = _json(manifest.data, what, "an image manifest")
    config = Descriptor.from_json(checked_descriptor(doc.get("config"), f"{what}: config", max_size=MAX_CONFIG))
    layers = [Descriptor.from_json(checked_descriptor(layer, f"{what}: layers[{n}]", max_size=MAX_BLOB))
              for n, layer in enumerate(checked_list(doc.get("layers"), f"{what}: layers"))]
    for layer in layers:
        if layer.media_type not in GZIP_LAYERS + PLAIN_LAYERS:
            raise RegistryError(f"{what}: layer {layer.digest} is {shown(layer.media_type)}; swcli reads gzip or "
                                "plain tar layers")
    return config, layers


def _image_config(data: bytes, config: Descriptor, what: str) -> tuple[dict, dict, list[str]]:
    """The config document, its labels (strings to strings) and its diff_ids (digests), every field checked."""
    where = f"{what}: config {config.digest}"
    doc = _json(data, where, "an image config")
    rootfs = checked_object(doc.get("rootfs"), f"{where}: rootfs")
    diff_ids = [checked_digest(d, f"{where}: rootfs.diff_ids")
                for d in checked_list(rootfs.get("diff_ids"), f"{where}: rootfs.diff_ids")]
    run = checked_object(doc.get("config") or {}, f"{where}: config")
    labels = checked_object(run.get("Labels") or {}, f"{where}: config.Labels")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise RegistryError(f"{where}: label {shown(key)}: must be a string, not {type(value).__name__}")
    return doc, labels, diff_ids


def _fetch_config(client, repository: str, layout: Layout, config: Descriptor, written: list[str]) -> Descriptor:
    written.append(config.digest)
    with layout.writer(MEDIA_CONFIG) as out:
        client.fetch_blob(repository, config.digest, out, size=config.size)
    return Descriptor(MEDIA_CONFIG, out.descriptor.digest, out.descriptor.size)


def _fetch_layer(client, repository: str, layout: Layout, layer: Descriptor, diff_id: str, budget: DiskBudget,
                 report: OnProgress) -> Descriptor:
    """The uncompressed blob of one layer in the layout, fetched unless it is there already."""
    name = diff_id.partition(":")[2][:12]
    if layout.has(diff_id):
        report(LayerProgress(name, "Already exists"))
        return Descriptor(MEDIA_LAYER, diff_id, layout.blob_size(diff_id))
    what = f"layer {layer.digest} of {client.registry}/{repository}"
    if layer.media_type in PLAIN_LAYERS and layer.digest == diff_id:
        desc = _fetch_split(client, repository, layout, layer, budget, what, name, report)
        report(LayerProgress(name, "Pull complete", layer.size, layer.size))
        return desc
    with layout.writer(MEDIA_LAYER) as out:
        sink = _Gunzip(out, budget, what) if layer.media_type in GZIP_LAYERS else out
        client.fetch_blob(repository, layer.digest, sink, size=layer.size,
                          on_progress=lambda done: report(LayerProgress(name, "Downloading", done, layer.size)))
        if sink is not out:
            sink.finish(what)
        got = "sha256:" + out.sha.hexdigest()
        if got != diff_id:
            raise RegistryError(f"{what}: its content is {got}, not the config's diff_id {diff_id}")
    report(LayerProgress(name, "Pull complete", layer.size, layer.size))
    return out.descriptor


def _fetch_split(client, repository: str, layout: Layout, layer: Descriptor, budget: DiskBudget, what: str,
                 name: str, report: OnProgress) -> Descriptor:
    """A plain layer (its digest is its diff_id, checked by the client as it arrives) split as it comes in:
    big members into content-named files the store entry links, the rest into a recipe
    (:mod:`builder.images.tar_split`)."""
    from builder.images.tar_split import SplitWriter

    sink = SplitWriter(layout)  # its declared size, which the client holds it to, is already counted on the disk
    try:
        client.fetch_blob(repository, layer.digest, sink, size=layer.size,
                          on_progress=lambda done: report(LayerProgress(name, "Downloading", done, layer.size)))
        return sink.finish(layer.digest)
    except ValueError as err:
        sink.abort()
        raise RegistryError(f"{what}: {err}") from None
    except BaseException:
        sink.abort()
        raise


def fetch_layers(client, repository: str, layout: Layout, layers: list[Descriptor], diff_ids: list[str],
                 on_progress: OnProgress | None, written: list[str]) -> list[Descriptor]:
    """Every layer's uncompressed blob in the layout (``written`` learns each digest before it is written); their
    declared sizes must fit the disk first."""
    budget = DiskBudget(layout.root)
    budget.take(sum(layer.size for layer, diff_id in zip(layers, diff_ids) if not layout.has(diff_id)),
                f"its layers ({sum(layer.size for layer in layers)} bytes declared)")
    written.extend(diff_ids)
    lock = threading.Lock()

    def report(event: LayerProgress) -> None:
        if on_progress:
            with lock:
                on_progress(event)

    return in_order([functools.partial(_fetch_layer, client, repository, layout, layer, diff_id, budget, report)
                     for layer, diff_id in zip(layers, diff_ids)], BLOB_WORKERS, "pull")


def _fetch(client, source, layout: Layout, on_progress: OnProgress | None, written: list[str]):
    """The manifest, then the config (checked), then the layers: (manifest, the remote config and layer
    descriptors, the local config, its document and labels, the local layers)."""
    what = f"pull of {source}"
    client.ping(source.repository)  # auth settled before layers come down in parallel
    manifest = _pick(client, source.repository, client.get_manifest(source.repository, source.ref), what)
    config_ref, remote_layers = _parse(manifest, what)
    config = _fetch_config(client, source.repository, layout, config_ref, written)
    doc, labels, diff_ids = _image_config(layout.read_bytes(config), config_ref, what)
    check_labels(shown(source), labels)
    if len(diff_ids) != len(remote_layers):
        raise RegistryError(f"{what}: the manifest has {len(remote_layers)} layers, the config "
                            f"{len(diff_ids)} diff_ids")
    layers = fetch_layers(client, source.repository, layout, remote_layers, diff_ids, on_progress, written)
    return manifest, config_ref, remote_layers, config, doc, labels, layers


def _check_tag(layout: Layout, local: Descriptor, config: Descriptor, tag: str, target: str) -> None:
    """A version tag already naming another image here is never repointed: refused, naming both image ids."""
    here = layout.resolve(tag)
    if here is None or here.digest == local.digest:
        return
    try:
        other = layout.read_json(here)["config"]["digest"]
    except (SwcliError, KeyError, TypeError):
        other = here.digest
    if other != config.digest:
        raise RegistryError(f"{shown(target)}: {tag} is image {shown(other)} here, the pulled image is "
                            f"{config.digest}; refusing to repoint it (remove the local one first)")


def pull(target: str, *, credentials=None, ca_cert: Path | None = None, on_progress: OnProgress | None = None,
         store=None, record: bool = True, load: bool = False, layout: Layout | None = None,
         client_for: ClientFor | None = None, engine=None) -> TransferResult:
    """Pull ``target`` (REGISTRY/REPO[:TAG|@DIGEST]) into the layout, record it in the store (unless ``record`` is
    off), tag it `<prefix>/<name>:<version>` and `:latest` in the layout, and with ``load`` in the engine too.
    A pull that fails removes the blobs it wrote that no ref, cache or other process reaches."""
    from builder.images.image import Image
    from builder.registry.reference import Reference
    from builder.distribute.modelpack_pull import pull_if_modelpack
    from builder.distribute.pulled_entry import record_pulled
    from builder.store import Store

    source = Reference.parse(target)
    layout = layout or (store or Store()).layout
    written: list[str] = []
    try:
        try:
            client = (client_for or registry_clients(credentials=credentials, ca_cert=ca_cert))(source.registry)
            if record and (pack := pull_if_modelpack(source, client, store or Store(), on_progress)) is not None:
                return pack  # a ModelPack artifact: a store model, no image (distribute/modelpack_pull.py)
            manifest, config_ref, remote_layers, config, doc, labels, layers = _fetch(client, source, layout,
                                                                                      on_progress, written)
        except RegistryError as err:
            raise RegistryError(f"pull of {shown(source)} failed: {err}") from None
        kind, name, version = check_labels(shown(source), labels)
        local = layout.put_json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config.to_json(),
                                 "layers": [b.to_json() for b in layers]}, MEDIA_MANIFEST)
        written.append(local.digest)
        image = Image(local, config, doc, tuple(layers))
        tags = image_tags(kind, name, version, image.image_id)  # a model's tag names its image id: never moved
        _check_tag(layout, local, config, tags[0], str(source))
        tagged = (here := layout.resolve(tags[0])) is not None and here.digest == local.digest
        if record:  # verified and recorded before the local refs exist: a refused image is not `swds/<name>:latest`
            record_pulled(layout, image, shown(source), store or Store(), known=tagged)
        for tag in tags:
            layout.tag(tag, local)
        known = KnownBlobs(source.registry)  # only a pull that succeeded teaches where its blobs are
        for blob in (config_ref, *remote_layers):
            known.learn(blob.digest, source.repository)
        known.save()
    except BaseException:
        with contextlib.suppress(SwcliError, OSError):
            layout.collect(written)
        raise
    if load:
        from builder.images.daemon import load as load_image
        from builder.images.engine import connect

        pulled_as = [f"{source.registry}/{source.repository}:{source.tag}"] if source.tag and not source.digest else []
        load_image(engine or connect(), layout, image, tags + pulled_as)
    return TransferResult(tags[0], digest=manifest.digest)
