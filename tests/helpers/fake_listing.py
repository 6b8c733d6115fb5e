"""A fake registry's answers for the listing tests (catalog, tag lists, manifests): route tables for
:class:`tests.registry_servers.HostileServer`, and swcli-labelled images as the bytes a registry would serve."""

from __future__ import annotations

import hashlib
import json
import re

from tests.registry_servers import Answer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
JSON = {"Content-Type": "application/json"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def routes(*table, default: Answer | None = None):
    """``answer(seen)``: the first (METHOD, path regex, Answer | callable(seen)) that matches, ``GET /v2/`` -> 200
    {}, else ``default`` (404)."""
    def answer(seen):
        for method, pattern, ans in table:
            if seen.method == method and re.search(pattern, seen.path):
                return ans(seen) if callable(ans) else ans
        if seen.path == "/v2/":
            return Answer(200, JSON, b"{}")
        return default or Answer(404, JSON, b'{"errors":[]}')
    return answer


def listing(key: str, names: list, link: str | None = None) -> Answer:
    """A page ``{key: names}``, with a ``Link: <link>; rel="next"`` header when ``link`` is given."""
    headers = dict(JSON, **({"Link": f'<{link}>; rel="next"'} if link else {}))
    return Answer(200, headers, json.dumps({key: names}).encode())


def image(kind: str | None, name: str = "thing", version: str = "aaaabbbbcccc") -> tuple[bytes, bytes]:
    """(manifest, config) of an image whose config carries swcli's labels for ``kind`` (none when None)."""
    labels = {"io.swcli.kind": kind, "io.swcli.name": name, "io.swcli.version": version} if kind else {}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                           "layers": []}).encode()
    return manifest, config


def served_image(repository: str, tag: str, manifest: bytes, config: bytes) -> list[tuple]:
    """Routes serving ``manifest`` as ``repository:tag`` (HEAD by tag, GET by digest) and its config blob."""
    digest = digest_of(manifest)
    head = Answer(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest,
                        "Content-Length": str(len(manifest))})
    return [("HEAD", rf"^/v2/{repository}/manifests/{tag}$", head),
            ("GET", rf"^/v2/{repository}/manifests/({tag}|{digest})$",
             Answer(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}, manifest)),
            ("GET", rf"^/v2/{repository}/blobs/{digest_of(config)}$", Answer(200, {}, config))]
