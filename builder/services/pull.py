"""`swcli pull`: an swcli image from a registry into the store's OCI layout and the store, no engine.

The manifest (from an index: its linux/amd64 entry) and the config come first, and the config's labels are
checked before anything else. Each layer is fetched (its compressed digest verified by the client) and gunzipped
as it arrives into an uncompressed layout blob whose digest must be the config's diff_id; a layer already in the
layout is not fetched. Then the store entry is made like a local build's: a dataset's ``/dataset`` and a model's
``/opt/swcli/model`` are extracted from the layer tars (:mod:`builder.images.unpack`) into a staging folder and
verified (:func:`verify_pulled`); a runtime's manifest comes from its labels. Only then are the local refs
(`swds|swmp|swrt/<name>:<version>` and `:latest`) written into the layout, so a pull that fails leaves no ref and
no store entry (a blob it fetched stays: content-addressed, it lies about nothing). ``--load`` also loads the image
into the Docker engine, for `docker run`.
"""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from isal import isal_zlib

from builder.errors import RegistryError, SwcliError
from builder.images.oci import CHUNK, MEDIA_CONFIG, MEDIA_LAYER, MEDIA_MANIFEST, Descriptor, Layout
from builder.refs import image_name, image_tags
from builder.registry.media import GZIP_LAYERS, INDEX_TYPES, PLAIN_LAYERS, checked_digest, linux_amd64
from builder.services.registry import (BLOB_WORKERS, KnownBlobs, LayerProgress, OnProgress, TransferResult,
                                       check_labels, one_line, open_client)

MAX_CONFIG = 4 << 20
# where each kind's store entry lives inside its image; a runtime's entry is only its manifest, made from labels
ENTRY_IN_IMAGE = {"dataset": "/dataset", "model": "/opt/swcli/model"}


class _Gunzip:
    """A file object that gunzips what is written to it into ``out`` (several gzip members too), bounded in
    memory whatever the ratio. Bytes that are not gzip are noted and the rest ignored, so the download goes on
    to its digest check: a damaged blob is reported as one that does not match its digest."""

    def __init__(self, out):
        self.out = out
        self.engine = isal_zlib.decompressobj(31)
        self.failure: str | None = None

    def write(self, data: bytes) -> int:
        if self.failure is None:
            try:
                self._write(data)
            except isal_zlib.error as err:
                self.failure = one_line(err)
        return len(data)

    def _write(self, data: bytes) -> None:
        while data:
            self.out.write(self.engine.decompress(data, CHUNK))
            data = self.engine.unconsumed_tail
            while not data and not self.engine.eof and (more := self.engine.decompress(b"", CHUNK)):
                self.out.write(more)
            if self.engine.eof:
                data = self.engine.unused_data + data
                if data:
                    self.engine = isal_zlib.decompressobj(31)

    def finish(self, what: str) -> None:
        if self.failure is not None:
            raise RegistryError(f"{what}: not a gzip stream ({self.failure})")
        if not self.engine.eof:
            raise RegistryError(f"{what}: the gzip stream ends early")


def _pick(client, repository: str, manifest, what: str):
    """An image manifest: ``manifest`` itself, or its index's linux/amd64 entry."""
    if manifest.media_type not in INDEX_TYPES:
        return manifest
    return client.get_manifest(repository, linux_amd64(json.loads(manifest.data), what))


def _parse(manifest, what: str) -> tuple[Descriptor, list[Descriptor]]:
    try:
        doc = json.loads(manifest.data)
        config = Descriptor.from_json(doc["config"])
        layers = [Descriptor.from_json(layer) for layer in doc["layers"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RegistryError(f"{what}: not an image manifest ({one_line(err)})") from None
    for blob in (config, *layers):
        checked_digest(blob.digest, what)
    for layer in layers:
        if layer.media_type not in GZIP_LAYERS + PLAIN_LAYERS:
            raise RegistryError(f"{what}: layer {layer.digest} is {layer.media_type}; swcli reads gzip or plain "
                                "tar layers")
    return config, layers


def _fetch_config(client, repository: str, layout: Layout, config: Descriptor, what: str) -> tuple[Descriptor, dict]:
    if config.size > MAX_CONFIG:
        raise RegistryError(f"{what}: its config is {config.size} bytes; refusing more than {MAX_CONFIG >> 20} MiB")
    with layout.writer(MEDIA_CONFIG) as out:
        client.fetch_blob(repository, config.digest, out, size=config.size)
    desc = Descriptor(MEDIA_CONFIG, out.descriptor.digest, out.descriptor.size)
    try:
        doc = json.loads(layout.read_bytes(desc))
        diff_ids = doc["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list) or not isinstance(doc.get("config") or {}, dict):
            raise TypeError("rootfs.diff_ids is not a list")
    except (ValueError, KeyError, TypeError) as err:
        raise RegistryError(f"{what}: config {config.digest} is not an image config ({one_line(err)})") from None
    return desc, doc


def _fetch_layer(client, repository: str, layout: Layout, layer: Descriptor, diff_id: str,
                 report: OnProgress) -> Descriptor:
    """The uncompressed blob of one layer in the layout, fetched unless it is there already."""
    name = diff_id.partition(":")[2][:12]
    if layout.has(diff_id):
        report(LayerProgress(name, "Already exists"))
        return Descriptor(MEDIA_LAYER, diff_id, layout.blob_path(diff_id).stat().st_size)
    what = f"layer {layer.digest} of {client.registry}/{repository}"
    with layout.writer(MEDIA_LAYER) as out:
        sink = _Gunzip(out) if layer.media_type in GZIP_LAYERS else out
        client.fetch_blob(repository, layer.digest, sink, size=layer.size,
                          on_progress=lambda done: report(LayerProgress(name, "Downloading", done, layer.size)))
        if sink is not out:
            sink.finish(what)
        got = "sha256:" + out.sha.hexdigest()
        if got != diff_id:
            raise RegistryError(f"{what}: its content is {got}, not the config's diff_id {diff_id}")
    report(LayerProgress(name, "Pull complete", layer.size, layer.size))
    return out.descriptor


def fetch_layers(client, repository: str, layout: Layout, layers: list[Descriptor], diff_ids: list[str],
                 on_progress: OnProgress | None) -> list[Descriptor]:
    import threading

    lock = threading.Lock()

    def report(event: LayerProgress) -> None:
        if on_progress:
            with lock:
                on_progress(event)

    with ThreadPoolExecutor(max_workers=BLOB_WORKERS, thread_name_prefix="pull") as pool:
        futures = [pool.submit(_fetch_layer, client, repository, layout, layer, diff_id, report)
                   for layer, diff_id in zip(layers, diff_ids)]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def pull(target: str, *, credentials=None, ca_cert: Path | None = None, on_progress: OnProgress | None = None,
         store=None, record: bool = True, load: bool = False, layout: Layout | None = None,
         client_factory=open_client, engine=None) -> TransferResult:
    """Pull ``target`` (REGISTRY/REPO[:TAG|@DIGEST]) into the layout, record it in the store (unless ``record`` is
    off), tag it `<prefix>/<name>:<version>` and `:latest` in the layout, and with ``load`` in the engine too."""
    from builder.images.build import store_layout
    from builder.images.image import Image
    from builder.registry.reference import Reference
    from builder.store import Store

    source = Reference.parse(target)
    layout = layout or store_layout()
    what = f"pull of {source}"
    try:
        client = client_factory(source.registry, credentials=credentials, ca_cert=ca_cert)
        client.ping(source.repository)  # auth settled before layers come down in parallel
        manifest = _pick(client, source.repository, client.get_manifest(source.repository, source.ref), what)
        config_ref, remote_layers = _parse(manifest, what)
        config, doc = _fetch_config(client, source.repository, layout, config_ref, what)
        kind, name, version = check_labels(str(source), (doc.get("config") or {}).get("Labels") or {})
        diff_ids = [checked_digest(d, f"{what}: config rootfs.diff_ids") for d in doc["rootfs"]["diff_ids"]]
        if len(diff_ids) != len(remote_layers):
            raise RegistryError(f"{what}: the manifest has {len(remote_layers)} layers, the config "
                                f"{len(diff_ids)} diff_ids")
        layers = fetch_layers(client, source.repository, layout, remote_layers, diff_ids, on_progress)
        known = KnownBlobs(source.registry)
        for blob in (config_ref, *remote_layers):
            known.learn(blob.digest, source.repository)
        known.save()
    except RegistryError as err:
        raise RegistryError(f"{what} failed: {err}") from None
    local = layout.put_json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config.to_json(),
                             "layers": [b.to_json() for b in layers]}, MEDIA_MANIFEST)
    image = Image(local, config, doc, tuple(layers))
    if record:  # verified and recorded before the local refs exist: a refused image is not `swds/<name>:latest`
        record_pulled(layout, image, str(source), store or Store())
    tags = image_tags(kind, name, version, image.image_id)  # a model's tag names its image id: never moved
    for tag in tags:
        layout.tag(tag, local)
    if load:
        from builder.images.daemon import load as load_image
        from builder.images.engine import connect

        pulled_as = [f"{source.registry}/{source.repository}:{source.tag}"] if source.tag and not source.digest else []
        load_image(engine or connect(), layout, image, tags + pulled_as)
    return TransferResult(tags[0], digest=manifest.digest)


def record_pulled(layout: Layout, image, target: str, store):
    """Put a pulled image's store entry in place: extracted from its layers (dataset shards, model source and
    manifest) and verified like `dataset info --verify` before it is published, or, for a runtime, written from
    its labels. An entry already present is left as it is."""
    from builder.errors import RefNotFoundError
    from builder.images.unpack import unpack
    from builder.store import utc_now, write_json_atomic

    kind, name, version = check_labels(target, image.labels)
    try:
        return store.resolve(kind, f"{name}:{version}")
    except RefNotFoundError:
        pass
    with store.stage(kind) as staged:
        if kind in ENTRY_IN_IMAGE:
            inside = ENTRY_IN_IMAGE[kind]
            try:
                unpack(layout, image.layers, inside, staged)
                verify_pulled(kind, name, version, staged)
            except SwcliError as err:  # name the file as it is in the image, not in the staging folder
                raise RegistryError(f"{target}: not recording it: "
                                    f"{str(err).replace(str(staged), inside)}") from None
        else:
            write_json_atomic(staged / "manifest.json", {
                "kind": kind, "name": name, "version": version, "mode": image.labels.get("io.swcli.env-mode"),
                "image": f"{image_name(kind, name)}:{version}", "image_id": image.image_id, "created": utc_now(),
                "source": f"pulled from {target}"})
        return store.publish(kind, name, version, staged)


def verify_pulled(kind: str, name: str, version: str, folder: Path) -> None:
    """Check an entry extracted from an image before it is trusted: its manifest agrees with the labels, and a
    dataset verifies like `dataset info --verify`, a model's files all sit inside src/ with their sha256."""
    from builder.services.dataset_build import verify_dataset
    from builder.store import Entry

    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: missing; the image holds no swcli {kind} entry") from None
    except (OSError, ValueError, RecursionError) as err:
        raise RegistryError(f"{path}: not a readable manifest ({one_line(err)})") from None
    if not isinstance(manifest, dict):
        raise RegistryError(f"{path}: not a manifest (expected a JSON object)")
    for key, label in (("kind", kind), ("name", name), ("version", version)):
        if manifest.get(key) != label:
            raise RegistryError(f"{path}: field '{key}': the manifest says {manifest.get(key)!r}, "
                                f"the label io.swcli.{key} says {label!r}")
    if kind == "dataset":
        verify_dataset(Entry(kind, name, version, folder, manifest))
    else:
        verify_model_files(folder, manifest, path)


def _inside_path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a relative path that stays inside its folder, or None."""
    if not isinstance(rel, str) or not rel:
        return f"expected a relative path, got {rel!r}"
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        return f"{rel!r} is not a relative path inside src/"
    return None


def verify_model_files(folder: Path, manifest: dict, where: Path) -> None:
    """Every file the manifest lists is inside ``src/``, a regular file of its size and sha256 (a link: a link
    with its recorded target, staying inside src/); errors name the manifest, the field and the file."""
    from builder.store import sha256_file

    files = manifest.get("files")
    if not isinstance(files, list):
        raise RegistryError(f"{where}: field 'files': expected a list")
    src = folder / "src"
    for n, item in enumerate(files):
        field = f"files[{n}]"
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: field '{field}': expected an object")
        rel = item.get("path")
        problem = _inside_path_problem(rel)
        if problem:
            raise RegistryError(f"{where}: field '{field}.path': {problem}")
        path = src / rel
        if any((src / "/".join(rel.split("/")[:k])).is_symlink() for k in range(1, rel.count("/") + 1)):
            raise RegistryError(f"{where}: field '{field}.path': {rel!r} passes through a link")
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise RegistryError(f"{where}: field '{field}.path': src/{rel} is not in the image") from None
        link = item.get("link")
        if link is not None:
            target = (path.parent / str(link)).resolve()
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != link or not target.is_relative_to(src.resolve()):
                raise RegistryError(f"{where}: field '{field}.link': src/{rel} is not a link to {link!r} inside src/")
            continue
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"{where}: field '{field}.path': src/{rel} is not a regular file")
        if st.st_size != item.get("size"):
            raise RegistryError(f"{where}: field '{field}.size': src/{rel} is {st.st_size} bytes, "
                                f"the manifest says {item.get('size')!r}")
        if sha256_file(path) != item.get("sha256"):
            raise RegistryError(f"{where}: field '{field}.sha256': src/{rel} differs from the manifest")
