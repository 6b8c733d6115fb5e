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
