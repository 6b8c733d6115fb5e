"""A CNCF ModelPack artifact into the store as a model: `swcli pull REGISTRY/REPO:TAG` and `swcli model eval
REGISTRY/REPO:TAG` (docs/modelpack.md).

The manifest (at most 4 MiB, verified by the client) must have the ModelPack ``artifactType`` or config media type;
every descriptor is shape-checked, the config declared at most 4 MiB, each layer at most 64 GiB, their sum within
the store's free disk less 1 GiB, before any blob is fetched. The config is fetched (bounded, verified) and checked
against the spec's schema (:func:`~builder.distribute.modelpack_format.check_config`); every layer's diffId must be
its digest (``.raw``, ``.tar``), or the digest of its gunzipped bytes (``.tar+gzip``, bounded while written). Each layer is fetched into a temp file of
the staging folder, verified against its digest by the client, and only then placed: a raw layer at its
``org.cncf.model.filepath``, a tar layer's regular files and folders at their names (no links, devices or
duplicates); every path checked (:func:`~builder.distribute.modelpack_format.path_problem`) and never written
through a link. The folder must hold ``model.yaml`` naming a handler it holds. The entry's manifest lists every
file (size, sha256, role: weights from weight layers, config from weight.config layers, code from the rest) and its
version is computed as a build would, so an artifact swcli pushed comes back as the same version. A refused
artifact leaves nothing: the staging folder goes, no entry, no cache record.

Caching: ``$SWCLI_HOME/cache/modelpack/<manifest hex>.json`` maps a verified artifact to its store entry; a second
pull or eval of the same manifest digest fetches no blob (a tag costs one manifest GET; a digest ref none at all).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from builder.bounded import read_capped
from builder.errors import RefNotFoundError, RegistryError, SwcliError
from builder.files import write_bytes_atomic
from builder.images.layer_tar import TarRefused, members, open_layer, shown
from builder.registry import ClientFor
from builder.registry.media import MAX_CONFIG, checked_descriptor, checked_list, checked_object
from builder.distribute.blobs import KnownBlobs, LayerProgress, OnProgress, TransferResult, registry_clients
from builder.distribute.modelpack_format import (A, ARTIFACT_TYPE, ENV_LOCK_PATH, FILEPATH, LAYER_TYPES, MAX_FILES,
                                                 MEDIA_CONFIG, READ_FORMATS, ROLE_OF_KIND, check_config,
                                                 executable_of, path_problem, split_type)

MAX_LAYER = 64 << 30  # as an image layer (distribute/pull.py MAX_BLOB)
DISK_MARGIN = 1 << 30
DATASET_LAYER = "application/vnd.cncf.model.dataset."  # left out: see unpack_layers
LOCK_KINDS = ("pip-freeze", "dist-info", "conda-env-export", "conda-meta")  # builder.build.env_lock


def is_modelpack(document: object) -> bool:
    """Whether a manifest document (parsed) is a ModelPack artifact's: its artifactType, or its config's type."""
    if not isinstance(document, dict):
        return False
    config = document.get("config")
    return document.get("artifactType") == ARTIFACT_TYPE or (isinstance(config, dict)
                                                           and config.get("mediaType") == MEDIA_CONFIG)


def manifest_document(manifest) -> object:
    try:
        return json.loads(manifest.data)
    except (ValueError, RecursionError):
        return None


def _cache_path(store, digest: str) -> Path:
    return store.root / "cache" / "modelpack" / (digest.partition(":")[2] + ".json")


def cached_entry(store, digest: str):
    """The store entry a verified artifact of manifest ``digest`` became, or None."""
    try:
        record = json.loads(read_capped(_cache_path(store, digest), 4096, "the ModelPack cache record"))
        entry = store.resolve("model", f"{record['name']}:{record['version']}")
    except (OSError, ValueError, KeyError, TypeError, RecursionError, RefNotFoundError, SwcliError):
        return None
    return entry if entry.version == record.get("version") else None


def _layers(document: dict, what: str) -> tuple[dict, list[dict]]:
    config = checked_descriptor(document.get("config"), f"{what}: config", max_size=MAX_CONFIG)
    if config["mediaType"] != MEDIA_CONFIG:
        raise RegistryError(f"{what}: config is {config['mediaType'][:80]!r}, not {MEDIA_CONFIG}")
    layers = [checked_descriptor(layer, f"{what}: layers[{n}]", max_size=MAX_LAYER)
              for n, layer in enumerate(checked_list(document.get("layers"), f"{what}: layers"))]
    if not layers:
        raise RegistryError(f"{what}: it has no layers")
    for n, layer in enumerate(layers):
        if layer["mediaType"] not in LAYER_TYPES:
            raise RegistryError(f"{what}: layers[{n}]: {layer['mediaType'][:80]!r} is not a ModelPack layer type")
        if split_type(layer["mediaType"])[1] not in READ_FORMATS:
            raise RegistryError(f"{what}: layers[{n}]: {layer['mediaType']}: swcli reads .raw, .tar and .tar+gzip "
                                "ModelPack layers")
        problem = path_problem(layer.get("annotations", {}).get(FILEPATH))
        if problem:
            raise RegistryError(f"{what}: layers[{n}] annotation {FILEPATH}: {shown(problem)}")
    return config, layers


def _fetch(client, repository: str, layer: dict, path: Path, report: OnProgress | None) -> Path:
    """One blob into the new file ``path``, verified (size and digest) by the client."""
    name = layer["annotations"][FILEPATH][-40:]
    with open(path, "xb") as out:
        client.fetch_blob(repository, layer["digest"], out, size=layer["size"],
                          on_progress=(lambda done: report(LayerProgress(name, "Downloading", done, layer["size"])))
                          if report else None)
    if report:
        report(LayerProgress(name, "Pull complete", layer["size"], layer["size"]))
    return path


def _folders(src: Path, parts: list[str], rel: str, what: str) -> Path:
    """``src/parts...`` made one level at a time, never through a link or over a file of another layer."""
    folder = src
    for part in parts:
        folder = folder / part
        if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
            raise RegistryError(f"{what}: {shown(rel)!r} passes through a file of another layer")
        folder.mkdir(exist_ok=True)
    return folder


def _place(src: Path, rel: str, what: str) -> Path:
    """Where ``rel`` goes under ``src``: its folders made, the name free."""
    target = _folders(src, rel.split("/")[:-1], rel, what) / rel.rsplit("/", 1)[-1]
    if os.path.lexists(target):
        raise RegistryError(f"{what}: {shown(rel)!r} is given by two layers (or twice in one)")
    return target


def _untar(blob: Path, src: Path, role: str, what: str, listing: list[dict]) -> None:
    """A tar layer's regular files and folders under ``src`` (headers bounded: :mod:`builder.images.layer_tar`);
    anything else is refused in one line."""
    try:
        with open_layer(blob) as tar:
            for member in members(tar):
                name = member.name.removeprefix("./")  # `tar -C folder .` names its members ./x
                name = name.rstrip("/") if member.isdir() else name
                if member.isdir() and name in ("", "."):
                    continue  # the tar's own root
                problem = path_problem(name)
                if problem:
                    raise RegistryError(f"{what}: member {problem}")
                if member.isdir():
                    _folders(src, name.split("/"), name, what)
                    continue
                if not member.isreg():
                    raise RegistryError(f"{what}: member {shown(name)!r} is not a regular file (links and devices "
                                        "are refused)")
                target = _place(src, name, what)
                sha = hashlib.sha256()
                with tar.extractfile(member) as data, open(target, "xb") as out:
                    while block := data.read(1 << 20):
                        sha.update(block)
                        out.write(block)
                executable = bool(member.mode & 0o111)
                os.chmod(target, 0o755 if executable else 0o644)
                listing.append({"path": name, "size": member.size, "sha256": sha.hexdigest(), "role": role,
                                "executable": executable})
                if len(listing) > MAX_FILES:
                    raise RegistryError(f"{what}: more than {MAX_FILES} files")
    except TarRefused as err:
        raise RegistryError(f"{what}: {err}") from None
    except (tarfile.TarError, EOFError) as err:
        raise RegistryError(f"{what}: not a readable tar ({' '.join(str(err).split())[:120]})") from None


def _gunzip(blob: Path, out_path: Path, what: str) -> str:
    """The gzip stream (one member or several) in ``blob`` into ``out_path``, bounded by :data:`MAX_LAYER` and the
    store's free disk less :data:`DISK_MARGIN` while it is written; the sha256 of what came out (its diffId)."""
    limit = min(MAX_LAYER, shutil.disk_usage(out_path.parent).free - DISK_MARGIN)
    engine, sha, total, pending, started = zlib.decompressobj(31), hashlib.sha256(), 0, b"", False
    try:
        with open(blob, "rb") as fin, open(out_path, "xb") as fout:
            while pending or (pending := fin.read(1 << 20)):
                started = True
                data = engine.decompress(pending, 1 << 20)
                pending = engine.unconsumed_tail
                if engine.eof:
                    pending, engine, started = engine.unused_data + pending, zlib.decompressobj(31), False
                total += len(data)
                if total > limit:
                    raise RegistryError(f"{what}: more than {limit} bytes uncompressed (the layer cap or the disk's "
                                        "free space); refusing it")
                sha.update(data)
                fout.write(data)
    except zlib.error as err:
        raise RegistryError(f"{what}: not a gzip stream ({' '.join(str(err).split())[:80]})") from None
    if started:
        raise RegistryError(f"{what}: the gzip stream ends early")
    return "sha256:" + sha.hexdigest()


def unpack_layers(client, repository: str, layers: list[dict], diff_ids: list[str], staged: Path,
                  report: OnProgress | None, what: str) -> tuple[list[dict], str | None]:
    """Every layer into ``staged/src`` (the env lock to ``staged/env.lock``): the files' listing, the lock's text.
    ``dataset`` layers are left out: evaluating or recording the model does not need them."""
    src = staged / "src"
    src.mkdir()
    listing: list[dict] = []
    lock_text = None
    for n, (layer, diff_id) in enumerate(zip(layers, diff_ids)):
        where = f"{what}: layers[{n}] ({layer['digest']})"
        kind, fmt = split_type(layer["mediaType"])
        if kind == "dataset":
            continue  # data the model was trained or tested with: not needed to run it, never fetched
        if diff_id != layer["digest"] and fmt != "tar+gzip":
            raise RegistryError(f"{where}: its diffId {diff_id} is not its digest (an uncompressed layer's is)")
        rel = layer["annotations"][FILEPATH]
        blob = _fetch(client, repository, layer, staged / f".layer-{n}", report)
        if fmt == "tar+gzip":
            tar = staged / f".layer-{n}.tar"
            got = _gunzip(blob, tar, where)
            blob.unlink()
            if got != diff_id:
                raise RegistryError(f"{where}: uncompressed it is {got}, not its diffId {diff_id}")
            blob = tar
        if fmt in ("tar", "tar+gzip"):
            _untar(blob, src, ROLE_OF_KIND[kind], where, listing)
            blob.unlink()
        elif rel == ENV_LOCK_PATH and kind == "code":
            lock_text = _lock_text(blob, where)
            os.replace(blob, staged / "env.lock")
        else:
            target = _place(src, rel, where)
            os.replace(blob, target)
            executable = executable_of(layer["annotations"])
            os.chmod(target, 0o755 if executable else 0o644)
            listing.append({"path": rel, "size": layer["size"], "sha256": layer["digest"].partition(":")[2],
                            "role": ROLE_OF_KIND[kind], "executable": executable})
    return sorted(listing, key=lambda f: f["path"]), lock_text


def _lock_text(blob: Path, where: str) -> str:
    if blob.stat().st_size > MAX_CONFIG:
        raise RegistryError(f"{where}: the env lock is larger than {MAX_CONFIG >> 20} MiB")
    try:
        return blob.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RegistryError(f"{where}: the env lock is not UTF-8 text") from None


def _disk_check(store, layers: list[dict], what: str) -> None:
    folder = store.root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    need = sum(layer["size"] for layer in layers)
    if need > shutil.disk_usage(folder).free - DISK_MARGIN:
        raise RegistryError(f"{what}: its layers ({need} bytes declared) would leave less than "
                            f"{DISK_MARGIN >> 20} MiB free on the store's disk; refusing it")


def _fetch_config(client, repository: str, config: dict, layers: int, what: str) -> list[str]:
    buf = io.BytesIO()
    client.fetch_blob(repository, config["digest"], buf, size=config["size"])
    try:
        doc = json.loads(buf.getvalue())
    except (ValueError, RecursionError) as err:
        raise RegistryError(f"{what}: config: not valid JSON ({' '.join(str(err).split())[:120]})") from None
    return check_config(doc, layers, f"{what}: config")


def record_modelpack(client, source, manifest, store, on_progress: OnProgress | None = None):
    """The store model of the ModelPack artifact ``manifest`` (fetched from ``source``): cached, or made, checked
    and published (see the module docstring)."""
    from builder.distribute.modelpack_entry import publish_model

    cached = cached_entry(store, manifest.digest)
    if cached is not None:
        return cached
    what = "the ModelPack artifact"  # the caller's line names the reference
    document = checked_object(manifest_document(manifest), what)
    config, layers = _layers(document, what)
    _disk_check(store, [layer for layer in layers if not layer["mediaType"].startswith(DATASET_LAYER)], what)
    diff_ids = _fetch_config(client, source.repository, config, len(layers), what)
    annotations = document.get("annotations") if isinstance(document.get("annotations"), dict) else {}
    lock_kind = annotations.get(f"{A}env-lock")
    with store.stage("model") as staged:
        listing, lock_text = unpack_layers(client, source.repository, layers, diff_ids, staged, on_progress, what)
        if lock_text is not None and lock_kind not in LOCK_KINDS:
            raise RegistryError(f"{what}: annotation {A}env-lock: {str(lock_kind)[:40]!r} is not one of "
                                f"{', '.join(LOCK_KINDS)}")
        entry = publish_model(store, staged, listing, lock_kind if lock_text is not None else None, lock_text,
                              f"{source.registry}/{source.repository}@{manifest.digest}", what)
    path = _cache_path(store, manifest.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps({"name": entry.name, "version": entry.version}).encode())
    known = KnownBlobs(source.registry)
    for blob in (config, *(layer for layer in layers if not layer["mediaType"].startswith(DATASET_LAYER))):
        known.learn(blob["digest"], source.repository)
    known.save()
    return entry


def pull_modelpack(target: str, *, credentials=None, ca_cert: Path | None = None,
                   on_progress: OnProgress | None = None, store=None, client_for: ClientFor | None = None):
    """``target`` (REGISTRY/REPO[:TAG|@DIGEST]) as a store model; RegistryError (exit 5) when it is not a ModelPack
    artifact or fails a check."""
    from builder.registry.reference import Reference
    from builder.store import Store

    store = store or Store()
    source = Reference.parse(target)
    try:
        if source.digest and (cached := cached_entry(store, source.digest)) is not None:
            return cached  # a digest names its bytes: nothing to ask the registry
        client = (client_for or registry_clients(credentials=credentials, ca_cert=ca_cert))(source.registry)
        manifest = client.get_manifest(source.repository, source.ref)
        if not is_modelpack(manifest_document(manifest)):
            raise RegistryError(f"{source} is not a ModelPack artifact (artifactType {ARTIFACT_TYPE}); an swcli "
                                "model image is evaluated once pulled (swcli pull), or in its image (swcli job run)")
        return record_modelpack(client, source, manifest, store, on_progress)
    except RegistryError as err:
        raise RegistryError(f"pull of {source} failed: {err}") from None


def pull_if_modelpack(source, client, store, on_progress: OnProgress | None) -> TransferResult | None:
    """`swcli pull`'s dispatch: the ModelPack artifact ``source`` names recorded as a store model, or None when it
    names something else (an image: the caller pulls it)."""
    manifest = client.get_manifest(source.repository, source.ref)
    if not is_modelpack(manifest_document(manifest)):
        return None
    entry = record_modelpack(client, source, manifest, store, on_progress)
    return TransferResult(f"model {entry.ref}", digest=manifest.digest)
