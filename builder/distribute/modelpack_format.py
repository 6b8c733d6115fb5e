"""The CNCF ModelPack format (modelpack/model-spec v0.0.7) as swcli writes and reads it: media types, the config
document, the checks of what a registry hands back, and the deterministic code tar.

A ModelPack artifact is an OCI image manifest with ``artifactType`` :data:`ARTIFACT_TYPE`, a config of
:data:`MEDIA_CONFIG` (``descriptor``, ``config``, ``modelfs``), and layers of
``application/vnd.cncf.model.{weight,weight.config,doc,code,dataset}.v1.{raw,tar,tar+gzip,tar+zstd}``, each named by
its ``org.cncf.model.filepath`` annotation. swcli writes ``.raw`` weight and weight-config layers (one file each: the
bytes of the store's file, its digest the sha256 the model's manifest already holds) and one ``code.v1.tar`` (every
other file, model.yaml included). It reads ``.raw``, ``.tar`` and ``.tar+gzip`` layers; ``.tar+zstd`` is refused in one line.
Everything here that reads registry bytes is bounded and shape-checked before it is trusted (docs/modelpack.md).
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable

from builder.errors import RegistryError
from builder.registry.media import checked_digest, checked_list, checked_object

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.cncf.model.config.v1+json"
KINDS = ("weight", "weight.config", "doc", "code", "dataset")
FORMATS = ("raw", "tar", "tar+gzip", "tar+zstd")
LAYER_TYPES = frozenset(f"application/vnd.cncf.model.{k}.v1.{f}" for k in KINDS for f in FORMATS)
READ_FORMATS = ("raw", "tar", "tar+gzip")  # what swcli unpacks (zstd would need a dependency); it writes raw and tar
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
A = "io.swcli.model."  # swcli's own manifest annotations: name, version, tags, env-lock, image
ENV_LOCK_PATH = ".swcli/env.lock"  # the env lock's place in the artifact (a store entry keeps it beside src/)
MAX_PATH, MAX_COMPONENT = 4096, 255  # PATH_MAX and NAME_MAX of Linux file systems
MAX_FILES = 100_000  # files one artifact may unpack; a model with more is a dataset
ROLE_OF_KIND = {"weight": "weights", "weight.config": "config", "code": "code", "doc": "code", "dataset": "code"}


def layer_type(kind: str, fmt: str) -> str:
    return f"application/vnd.cncf.model.{kind}.v1.{fmt}"


def split_type(media_type: str) -> tuple[str, str]:
    """(kind, format) of a ModelPack layer media type (one of :data:`LAYER_TYPES`)."""
    rest = media_type.removeprefix("application/vnd.cncf.model.")
    kind, _, fmt = rest.rpartition(".v1.")
    return kind, fmt


def path_problem(value: object) -> str | None:
    """Why ``value`` is not a relative path that stays inside the artifact's folder, or None: absolute, ``..``,
    empty or ``.`` components, backslashes, control characters, or longer than Linux allows."""
    if not isinstance(value, str) or not value:
        return "expected a relative path"
    parts = value.split("/")
    if value.startswith("/"):
        return f"{value[:160]!r} is absolute"
    if any(p in ("", ".", "..") for p in parts) or "\\" in value:
        return f"{value[:160]!r} is not a plain relative path (empty, '.' or '..' components, or a backslash)"
    if not value.isprintable():
        return f"{value[:160]!r} holds control characters"
    if len(value.encode()) > MAX_PATH or any(len(p.encode()) > MAX_COMPONENT for p in parts):
        return f"{value[:160]!r} is longer than {MAX_PATH} bytes or has a component over {MAX_COMPONENT}"
    return None


def file_metadata(name: str, size: int, executable: bool) -> str:
    """The ``org.cncf.model.file.metadata+json`` value of a raw layer: fixed owner and time, so it is repeatable."""
    return json.dumps({"name": name.rsplit("/", 1)[-1], "mode": 0o755 if executable else 0o644, "uid": 0, "gid": 0,
                       "size": size, "mtime": "1970-01-01T00:00:00Z", "typeflag": 0}, separators=(",", ":"))


def executable_of(annotations: dict) -> bool:
    """The exec bit a raw layer's file metadata annotation gives (False without one, or with a bad one)."""
    try:
        mode = json.loads(annotations.get(FILE_METADATA) or "{}").get("mode")
    except (ValueError, RecursionError, AttributeError):
        return False
    return isinstance(mode, int) and not isinstance(mode, bool) and bool(mode & 0o111)


# --- the config document --------------------------------------------------------------------------------------

DESCRIPTOR_STRINGS = ("createdAt", "family", "name", "docURL", "sourceURL", "version", "revision", "vendor", "title",
                      "description")
DESCRIPTOR_LISTS = ("authors", "licenses", "datasetsURL")
CONFIG_STRINGS = ("architecture", "format", "paramSize", "precision", "quantization")


def config_document(manifest: dict, diff_ids: list[str]) -> dict:
    """The ModelPack config of a store model: descriptor (name, version, description, createdAt), config
    (the weights' format when they share one), modelfs (the layers' digests: every layer is uncompressed)."""
    descriptor = {"name": manifest["name"], "version": str(manifest.get("model_version") or manifest["version"]),
                  "revision": manifest["version"], "createdAt": manifest["created"]}
    if manifest.get("desc"):
        descriptor["description"] = str(manifest["desc"])
    formats = {f["path"].rsplit(".", 1)[-1].lower() for f in manifest["files"]
               if f["role"] == "weights" and "." in f["path"].rsplit("/", 1)[-1]}
    config = {"format": formats.pop()} if len(formats) == 1 else {}
    return {"descriptor": descriptor, "config": config, "modelfs": {"type": "layers", "diffIds": diff_ids}}


def _strings(doc: dict, keys: Iterable[str], where: str) -> None:
    for key in keys:
        if key in doc and not isinstance(doc[key], str):
            raise RegistryError(f"{where}.{key}: must be a string, not {type(doc[key]).__name__}")


def check_config(doc: object, layers: int, where: str) -> list[str]:
    """The config's ``modelfs.diffIds`` once every field the spec's JSON schema requires or types is as it says
    (the required ``descriptor``, ``config`` and ``modelfs``, no other top-level field, string and list fields,
    ``modelfs.type`` "layers"), one diffId per layer; else one line naming the field."""
    doc = checked_object(doc, where)
    for key in ("descriptor", "config", "modelfs"):
        if key not in doc:
            raise RegistryError(f"{where}: the required field '{key}' is missing")
    extra = sorted(set(doc) - {"descriptor", "config", "modelfs"})
    if extra:
        raise RegistryError(f"{where}: field {extra[0][:80]!r} is not in the ModelPack config schema")
    descriptor = checked_object(doc["descriptor"], f"{where}.descriptor")
    _strings(descriptor, DESCRIPTOR_STRINGS, f"{where}.descriptor")
    for key in DESCRIPTOR_LISTS:
        if key in descriptor and not all(isinstance(v, str) for v in checked_list(descriptor[key],
                                                                                   f"{where}.descriptor.{key}")):
            raise RegistryError(f"{where}.descriptor.{key}: must be a list of strings")
    if descriptor.get("name") == "":
        raise RegistryError(f"{where}.descriptor.name: must not be empty")
    config = checked_object(doc["config"], f"{where}.config")
    _strings(config, CONFIG_STRINGS, f"{where}.config")
    if "capabilities" in config:
        checked_object(config["capabilities"], f"{where}.config.capabilities")
    modelfs = checked_object(doc["modelfs"], f"{where}.modelfs")
    if modelfs.get("type") != "layers":
        raise RegistryError(f"{where}.modelfs.type: must be \"layers\", not {str(modelfs.get('type'))[:40]!r}")
    diff_ids = checked_list(modelfs.get("diffIds"), f"{where}.modelfs.diffIds")
    if len(diff_ids) != layers:
        raise RegistryError(f"{where}.modelfs.diffIds: {len(diff_ids)} entries for {layers} layers")
    return [checked_digest(d, f"{where}.modelfs.diffIds[{n}]") for n, d in enumerate(diff_ids)]


# --- the code tar -----------------------------------------------------------------------------------------------

def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_code_tar(files: list[tuple[str, Path, bool]], out: BinaryIO) -> None:
    """A deterministic tar of ``(path in the artifact, file, executable)``: sorted, parent folders first (0755), owner
    0:0 without names, mtime 0, modes 0644/0755, GNU headers, regular files only (ModelPack readers refuse links)."""
    files = sorted(files)
    dirs = sorted({"/".join(rel.split("/")[:k]) for rel, _, _ in files for k in range(1, rel.count("/") + 1)})
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for folder in dirs:
            tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
        for rel, path, executable in files:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                tar.addfile(_info(rel, tarfile.REGTYPE, 0o755 if executable else 0o644, size), fh)

