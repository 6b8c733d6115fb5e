"""ModelPack artifacts for tests: the other implementation (``modelpack-client``, a dev dependency) run as a child
process, and hand-made artifacts put with swcli's own registry client, for the refusals."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
CONFIG = "application/vnd.cncf.model.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FILEPATH = "org.cncf.model.filepath"


def layer_type(kind: str, fmt: str = "raw") -> str:
    return f"application/vnd.cncf.model.{kind}.v1.{fmt}"


def modelpack_client(*args: str) -> subprocess.CompletedProcess:
    """``python -m modelpack_client --insecure ARGS`` (plain http to the test registry)."""
    return subprocess.run([sys.executable, "-m", "modelpack_client", "--insecure", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def validate_config(config: dict) -> None:
    """The config against the spec's JSON schema, as modelpack-client carries it (draft 2020-12)."""
    import jsonschema
    from modelpack_client.schema import CONFIG_SCHEMA

    jsonschema.Draft202012Validator(CONFIG_SCHEMA).validate(config)


def tar_bytes(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """A tar of ``(name, data, link target)``: a file when data is given, a symlink when a target is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_artifact(address: str, repository: str, tag: str, layers: list[tuple[str, bytes, str]], *,
                 config: dict | None = None, artifact_type: str = ARTIFACT, config_type: str = CONFIG) -> str:
    """Put a ModelPack-shaped artifact of ``(media type, bytes, filepath)`` layers with swcli's client; ``config``
    defaults to a valid one (diffIds = the layers' digests)."""
    from builder.registry.client import RegistryClient

    client = RegistryClient(address)
    if config is None:
        config = {"descriptor": {"name": "hand-made"}, "config": {},
                  "modelfs": {"type": "layers", "diffIds": [digest(data) for _, data, _ in layers]}}
    config_bytes = json.dumps(config).encode()
    for data in [config_bytes] + [data for _, data, _ in layers]:
        client.upload_blob(repository, digest(data), len(data), lambda data=data: io.BytesIO(data))
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                "config": {"mediaType": config_type, "digest": digest(config_bytes), "size": len(config_bytes)},
                "layers": [{"mediaType": media, "digest": digest(data), "size": len(data),
                            "annotations": {FILEPATH: path}} for media, data, path in layers]}
    return client.put_manifest(repository, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root``, by its path relative to it."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
