"""What registries serve, as swcli reads it back: media types, digests checked before they become a URL or a file
name, and the linux/amd64 image of an index. Pull, copy, the slice reader and the client share these."""

from __future__ import annotations

import re
from typing import Any

from builder.errors import RegistryError

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST)
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
GZIP_LAYERS = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
PLAIN_LAYERS = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def checked_digest(value: object, what: str) -> str:
    """``value`` when it is a sha256 digest (``sha256:`` and 64 lowercase hex digits); else one line naming ``what``."""
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise RegistryError(f"{what}: {value!r} is not a sha256 digest")
    return value


def linux_amd64(index: Any, what: str) -> str:
    """The digest of an image index's linux/amd64 image (checked)."""
    try:
        for entry in index.get("manifests") or []:
            platform = entry.get("platform") or {}
            if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                return checked_digest(entry["digest"], what)
    except (KeyError, TypeError, AttributeError) as err:
        raise RegistryError(f"{what}: not an image index ({' '.join(str(err).split())})") from None
    raise RegistryError(f"{what}: the index has no linux/amd64 image")


# Bounds on what a registry, an image or an artifact may hand us before we parse it (docs/security.md). The
# distribution spec lets registries refuse manifests over 4 MiB, and distribution/registry does; nothing of ours
# writes a config or a JSON document near that size.
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 4 << 20


def checked_descriptor(value: object, what: str, *, max_size: int | None = None) -> dict:
    """``value`` when it is an OCI descriptor of the right shape: ``mediaType`` a string, ``digest`` a sha256
    digest, ``size`` a non-negative integer (the spec requires it), ``annotations`` (when present) strings to
    strings, ``artifactType`` (when present) a string; and, with ``max_size``, ``size`` at most that. Else one
    line (exit 5) naming ``what`` and the field."""
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: a descriptor must be an object, not {type(value).__name__}")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str):
        raise RegistryError(f"{what}: mediaType must be a string, not {type(media_type).__name__}")
    checked_digest(value.get("digest"), f"{what}: digest")
    size = value.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RegistryError(f"{what}: size must be a non-negative integer, not {size!r:.40}")
    if max_size is not None and size > max_size:
        raise RegistryError(f"{what}: declares {size} bytes, more than the {max_size} allowed")
    annotations = value.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in annotations.items()):
        raise RegistryError(f"{what}: annotations must map strings to strings")
    if not isinstance(value.get("artifactType", ""), str):
        raise RegistryError(f"{what}: artifactType must be a string")
    return value


def checked_object(value: object, what: str) -> dict:
    """``value`` when it is a JSON object; else one line (exit 5) naming ``what``."""
    if not isinstance(value, dict):
        raise RegistryError(f"{what}: must be an object, not {type(value).__name__}")
    return value


def checked_list(value: object, what: str) -> list:
    """``value`` when it is a JSON array; else one line (exit 5) naming ``what``."""
    if not isinstance(value, list):
        raise RegistryError(f"{what}: must be an array, not {type(value).__name__}")
    return value
