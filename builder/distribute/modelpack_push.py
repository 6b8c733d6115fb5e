"""`swcli model push REF REGISTRY/REPO:TAG --modelpack`: the model as a CNCF ModelPack artifact too, beside its image.

After the image is pushed (:func:`builder.distribute.push.push`), the store entry's files go up as ModelPack layers
in the same repository (docs/modelpack.md):

- each weights file (role ``weights`` in the entry's manifest) a ``weight.v1.raw`` layer, each ``config`` file a
  ``weight.config.v1.raw`` layer: the file's own bytes, streamed from the store, its digest the sha256 the manifest
  already lists (nothing is copied or hashed again);
- every other file (handler code, model.yaml...) a ``code.v1.raw`` layer when it sits at the top of the model
  folder, else a deterministic ``code.v1.tar`` per top folder, named by that folder; the env lock a
  ``code.v1.raw`` layer at ``.swcli/env.lock``;
- the config: ``descriptor`` (name, model.yaml's version, the store version as ``revision``, ``description``,
  ``createdAt``), ``config`` (the weights' format when one), ``modelfs`` (every layer is uncompressed: its diffId
  is its digest).

The manifest has the image's manifest as its ``subject`` (a referrer of the image, like an attached evaluation:
`eval list --image REGISTRY/REPO:TAG-modelpack` finds the image's evaluations through it) and is tagged
``TAG-modelpack``. It is made of the entry alone, so the same model gives the same artifact digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

from builder.errors import RegistryError, UsageError
from builder.images.oci import MEDIA_MANIFEST, canonical_json
from builder.refs import image_ref_problem
from builder.registry import ClientFor
from builder.distribute.blobs import (Blob, KnownBlobs, OnProgress, TransferResult, file_source, registry_clients,
                                      send_blobs)
from builder.distribute.modelpack_format import (A, ARTIFACT_TYPE, CREATED, ENV_LOCK_PATH, FILE_METADATA, FILEPATH,
                                                 MEDIA_CONFIG, TITLE, config_document, file_metadata, layer_type,
                                                 path_problem, write_code_tar)

SUFFIX = "-modelpack"
KIND_OF_ROLE = {"weights": "weight", "config": "weight.config", "code": "code"}


def modelpack_tag(tag: str) -> str:
    return tag + SUFFIX


def _layer(media_type: str, digest: str, size: int, rel: str, executable: bool | None) -> dict:
    annotations = {FILEPATH: rel, TITLE: rel}
    if executable is not None:
        annotations[FILE_METADATA] = file_metadata(rel, size, executable)
    return {"mediaType": media_type, "digest": digest, "size": size, "annotations": annotations}


def _tar_blob(folder: str, files: list[tuple[str, Path, bool]], scratch: Path) -> tuple[dict, Blob]:
    """The code tar of one top folder, written into ``scratch`` (the folder name is one checked path component)."""
    path = scratch / f"{folder}.tar"
    with open(path, "wb") as out:
        write_code_tar(files, out)
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    digest, size = "sha256:" + sha.hexdigest(), path.stat().st_size
    return _layer(layer_type("code", "tar"), digest, size, folder, None), Blob(digest, size, file_source(path), folder)


def plan_layers(entry, scratch: Path) -> tuple[list[dict], list[Blob]]:
    """The layer descriptors of ``entry`` (a store model) and the blobs behind them, in a fixed order: weights,
    weight configs, code (top files raw, top folders tarred), the env lock."""
    src = entry.path / "src"
    files = entry.manifest["files"]
    linked = [f["path"] for f in files if f.get("link") is not None]
    if linked:
        raise UsageError(f"--modelpack: model {entry.ref} holds links ({linked[0]}...); ModelPack layers carry "
                         "regular files only")
    layers, blobs, folders = [], [], {}
    order = {"weights": 0, "config": 1, "code": 2}
    for f in sorted(files, key=lambda f: (order.get(f["role"], 2), f["path"])):
        rel, kind = f["path"], KIND_OF_ROLE.get(f["role"], "code")
        if path_problem(rel):
            raise UsageError(f"--modelpack: model {entry.ref}: file {rel[:160]!r}: {path_problem(rel)}")
        if kind == "code" and "/" in rel:
            folders.setdefault(rel.split("/", 1)[0], []).append((rel, src / rel, f["executable"]))
            continue
        digest = "sha256:" + f["sha256"]
        layers.append(_layer(layer_type(kind, "raw"), digest, f["size"], rel, f["executable"]))
        blobs.append(Blob(digest, f["size"], file_source(src / rel), rel))
    for folder, members in sorted(folders.items()):
        layer, blob = _tar_blob(folder, members, scratch)
        layers.append(layer)
        blobs.append(blob)
    if entry.manifest.get("env_lock"):
        data = (entry.path / "env.lock").read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        layers.append(_layer(layer_type("code", "raw"), digest, len(data), ENV_LOCK_PATH, False))
        blobs.append(Blob(digest, len(data), lambda: contextlib.nullcontext(lambda: io.BytesIO(data)), "env.lock"))
    return layers, blobs


def artifact_manifest(entry, layers: list[dict], config: bytes, subject: dict) -> dict:
    m = entry.manifest
    annotations = {CREATED: m["created"], f"{A}name": m["name"], f"{A}version": m["version"],
                   f"{A}image": subject["digest"], f"{A}tags": ",".join(m.get("tag") or [])}
    if m.get("env_lock"):
        annotations[f"{A}env-lock"] = str(m["env_lock"])
    return {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": MEDIA_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                       "size": len(config)},
            "layers": layers, "subject": subject, "annotations": annotations}


def push_modelpack(ref: str, target: str, *, credentials=None, ca_cert: Path | None = None,
                   on_progress: OnProgress | None = None, store=None,
                   client_for: ClientFor | None = None) -> TransferResult:
    """Push model ``ref`` as a ModelPack artifact tagged ``TAG-modelpack`` in ``target``'s repository, a referrer of
    the image ``target`` names (pushed first)."""
    from builder.registry.reference import Reference
    from builder.store import Store

    store = store or Store()
    entry = store.resolve("model", ref)
    dest = Reference.parse(target)
    tag = modelpack_tag(dest.tag or "latest")
    problem = image_ref_problem(f"{dest.registry}/{dest.repository}:{tag}")
    if problem:
        raise UsageError(f"--modelpack: the artifact's tag {tag!r}: {problem}")
    result = TransferResult(f"{dest.registry}/{dest.repository}:{tag}")
    try:
        client = (client_for or registry_clients(credentials=credentials, ca_cert=ca_cert))(dest.registry)
        subject = client.manifest_descriptor(dest.repository, dest.tag)
        if subject is None:
            raise RegistryError(f"no image {dest} to attach the ModelPack artifact to; push the image first")
        with store.stage("model") as scratch:
            layers, blobs = plan_layers(entry, scratch)
            config = canonical_json(config_document(entry.manifest, [layer["digest"] for layer in layers]))
            blobs.append(Blob("sha256:" + hashlib.sha256(config).hexdigest(), len(config),
                              lambda: contextlib.nullcontext(lambda: io.BytesIO(config)), "modelpack config"))
            send_blobs(client, dest.repository, blobs, result, KnownBlobs(dest.registry), on_progress=on_progress)
        data = canonical_json(artifact_manifest(entry, layers, config, subject))
        result.digest = client.put_referrer(dest.repository, data, MEDIA_MANIFEST)
        client.put_manifest(dest.repository, tag, data, MEDIA_MANIFEST)
    except RegistryError as err:
        raise RegistryError(f"ModelPack push of {result.ref} failed: {err}") from None
    return result
