"""The one OCI-artifact writer: a runtime image's SBOM, an evaluation attached to a model image, a pod's shard part.

An artifact is an OCI image manifest (distribution-spec 1.1) with an ``artifactType``, the empty config
(``application/vnd.oci.empty.v1+json``, the two bytes ``{}``), one layer per file (named by its
``org.opencontainers.image.title``), a ``subject`` (the manifest it is about) and annotations. :func:`put_artifact`
puts the blobs first (each skipped when the registry already holds it at that size), then the manifest in one
canonical serialisation, listed as a referrer of its subject (the referrers API, or the ``sha256-<hex>`` fallback
index: :meth:`~builder.registry.client.RegistryClient.put_referrer`). The same files and annotations give the same
artifact digest. What goes in an artifact is its caller's: :mod:`builder.images.sbom`, :mod:`builder.runs.attach`,
:mod:`builder.jobs.parts`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from builder.images.oci import MEDIA_MANIFEST, canonical_json

MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_CONFIG = {"mediaType": MEDIA_EMPTY, "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(), "size": len(EMPTY)}
EMPTY_DESCRIPTOR = {**EMPTY_CONFIG, "data": "e30="}  # the same, its two bytes inline (base64), as the spec suggests
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"


@dataclass(frozen=True)
class ArtifactFile:
    """One layer of an artifact: a file named ``title``, of ``media_type``, whose bytes ``opener()`` gives."""

    title: str
    media_type: str
    digest: str
    size: int
    opener: Callable[[], BinaryIO]

    @classmethod
    def from_path(cls, title: str, path: Path, media_type: str) -> ArtifactFile:
        from builder.files import sha256_file

        return cls(title, media_type, "sha256:" + sha256_file(path), path.stat().st_size, lambda: open(path, "rb"))

    @classmethod
    def from_bytes(cls, title: str, data: bytes, media_type: str) -> ArtifactFile:
        return cls(title, media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data),
                   lambda: io.BytesIO(data))

    @property
    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                "annotations": {TITLE: self.title}}


def file_layers(files: dict[str, tuple[Path, str]]) -> list[ArtifactFile]:
    """Layers from ``title -> (path, media type)``, in that order."""
    return [ArtifactFile.from_path(title, path, media) for title, (path, media) in files.items()]


def _put_blob(client, repository: str, digest: str, size: int, opener: Callable[[], BinaryIO]) -> None:
    if client.blob_size(repository, digest) != size:
        client.upload_blob(repository, digest, size, opener)


def put_artifact(client, repository: str, subject: dict, artifact_type: str, files: Iterable[ArtifactFile],
                 annotations: dict[str, str], *, config: dict = EMPTY_DESCRIPTOR) -> str:
    """Put the empty config, ``files`` and the artifact manifest whose subject is ``subject`` (a descriptor:
    mediaType, digest, size) in ``repository``, listed as its referrer; the artifact's digest. ``config`` is the
    empty config's descriptor as the manifest spells it (:data:`EMPTY_DESCRIPTOR`, or :data:`EMPTY_CONFIG` without
    the inline bytes, as the SBOM referrer has always had it)."""
    files = list(files)
    _put_blob(client, repository, EMPTY_CONFIG["digest"], len(EMPTY), lambda: io.BytesIO(EMPTY))
    for item in files:
        _put_blob(client, repository, item.digest, item.size, item.opener)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "artifactType": artifact_type, "config": config,
                "layers": [item.descriptor for item in files],
                "subject": {k: subject[k] for k in ("mediaType", "digest", "size")}, "annotations": annotations}
    return client.put_referrer(repository, canonical_json(manifest), MEDIA_MANIFEST)
