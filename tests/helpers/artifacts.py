"""Evaluation artifacts, manifests and blobs put in a registry as an attacker writes them (no check of ours), or
served by a fault proxy in front of it; and a recorded run's files, to compare with what a pull wrote."""

from __future__ import annotations

import hashlib
import io
import json
import re

from builder.store import Store
from tests.helpers.attach_world import REPO

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EVAL = "application/vnd.swcli.evaluation.v1+json"
TITLE = "org.opencontainers.image.title"


def client_of(registry):
    from builder.registry.client import RegistryClient

    return RegistryClient(registry.address)


def blob(client, data: bytes, repo: str = REPO, media: str = "application/json", **extra) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if client.blob_size(repo, digest) != len(data):
        client.upload_blob(repo, digest, len(data), lambda: io.BytesIO(data))
    return {"mediaType": media, "digest": digest, "size": len(data), **extra}


def put(client, document: dict, ref: str | None = None, repo: str = REPO, media: str = OCI_MANIFEST) -> str:
    """Put ``document`` as it is (no check of ours) under its digest, or under tag ``ref``; its digest."""
    data = json.dumps(document).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return client.put_manifest(repo, ref or digest, data, media)


def serve(proxy, document, ref: str | None = None, repo: str = REPO, media: str = OCI_MANIFEST) -> str:
    """Have ``proxy`` answer GET of manifest ``ref`` (default: the document's digest) with ``document``, whatever its
    fields; its digest."""
    from tests.registry_servers import Rule

    data = json.dumps(document).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.rules.insert(0, Rule("GET", rf"^/v2/{repo}/manifests/{re.escape(ref or digest)}$", "status", status=200,
                               body=data, content_type=media))
    return digest


def run_files(run_id: str) -> dict[str, bytes]:
    run_dir = Store().runs_dir / run_id
    return {name: (run_dir / name).read_bytes() for name in ("metrics.json", "run.json", "results.jsonl")}


def artifact(client, subject: dict, files: dict[str, bytes], *, layers=None, annotations=None, proxy=None,
             **top) -> str:
    """An evaluation artifact of ``files`` (title -> bytes) whose subject is ``subject``; ``layers`` replaces the
    layer descriptors, ``top`` sets other top-level fields as they are; put in the registry, or served by
    ``proxy``."""
    from builder.distribute.artifact import EMPTY, EMPTY_DESCRIPTOR

    blob(client, EMPTY)
    descs = [blob(client, data, annotations={TITLE: title}) for title, data in files.items()]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": EVAL, "config": EMPTY_DESCRIPTOR,
                "layers": descs if layers is None else layers(descs), "subject": subject,
                "annotations": annotations if annotations is not None else {}, **top}
    return serve(proxy, manifest) if proxy else put(client, manifest)
