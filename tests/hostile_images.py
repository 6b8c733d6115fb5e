"""Hostile images for pull tests, pushed as raw bytes to a real registry (Debian's docker-registry) over its HTTP API.

The registry stores whatever blobs it is given and any manifest whose blobs it holds, so a test can serve exactly
the bytes an attacker would: tars with hard links, sparse members (GNU old format and PAX 1.0), symlink chains,
unlisted files, huge declared sizes, hostile member names; configs and manifests with wrong-typed fields. Images carry
a valid-looking swcli label set, so a pull gets past its first checks and reaches the deep ones.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import tarfile
from dataclasses import dataclass, field
from urllib.parse import urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request(address: str, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection(address, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def push_blob(address: str, repo: str, data: bytes) -> str:
    """Upload ``data`` (POST, then PUT ?digest=); its digest."""
    status, headers, body = _request(address, "POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202, (status, body)
    location = urlsplit(headers["Location"])
    digest = sha256(data)
    sep = "&" if location.query else ""
    status, _, body = _request(address, "PUT", f"{location.path}?{location.query}{sep}digest={digest}", data,
                               {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    assert status == 201, (status, body)
    return digest


def push_manifest(address: str, repo: str, tag: str, data: bytes, media_type: str = OCI_MANIFEST) -> str:
    status, _, body = _request(address, "PUT", f"/v2/{repo}/manifests/{tag}", data, {"Content-Type": media_type})
    assert status == 201, (status, body)
    return f"{address}/{repo}:{tag}"


# --- tars ---------------------------------------------------------------------------------------------------------

@dataclass
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    link: str = ""
    mode: int = 0o644
    pax: dict = field(default_factory=dict)
    size: int | None = None  # a declared size other than len(data)


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    return Member(name, data, mode=mode)


def folder(name: str) -> Member:
    return Member(name, type=tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Member:
    return Member(name, type=tarfile.SYMTYPE, link=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, type=tarfile.LNKTYPE, link=target)


def _checksum(header: bytearray) -> bytearray:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


def gnu_sparse(name: str, realsize: int) -> bytes:
    """A GNU old-format sparse member ('S') of ``realsize`` bytes that are all hole: a 512-byte header, no data."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = 0, 0o644
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[483:495] = b"%011o\0" % realsize
    return bytes(_checksum(header))


def pax_sparse(name: str, realsize: int) -> Member:
    """A PAX 1.0 sparse member: ``realsize`` bytes of hole, stored as one 512-byte block holding an empty map."""
    stored = "GNUSparseFile.0/" + name.rsplit("/", 1)[-1]
    folder_name = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    return Member(folder_name + stored, b"0\n".ljust(512, b"\0"), pax={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(realsize)})


def tar_bytes(members: list) -> bytes:
    """A PAX tar of ``members`` (Member objects, or raw header bytes inserted as they are), nothing normalised."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            if isinstance(m, bytes):
                tar.fileobj.write(m)
                tar.offset += len(m)
                continue
            info = tarfile.TarInfo(m.name)
            info.type, info.linkname, info.mode = m.type, m.link, m.mode
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            info.pax_headers = dict(m.pax)
            tar.addfile(info, io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)
    return out.getvalue()


# --- images -------------------------------------------------------------------------------------------------------

def labels(kind: str, name: str, version: str, **extra: str) -> dict:
    return {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version,
            "io.swcli.kind": kind, "io.swcli.name": name, "io.swcli.version": version, **extra}


def push_image(address: str, repo: str, layers: list[bytes], image_labels: dict, *, tag: str = "1",
               config_edit=None, manifest_edit=None, layer_sizes: dict | None = None) -> str:
    """Push an image of ``layers`` (uncompressed tars, gzipped here) labelled ``image_labels``; ``config_edit`` and
    ``manifest_edit`` change the documents (dicts) before they are serialised; ``layer_sizes`` {n: size} declares
    other sizes for layers. Returns the remote ref."""
    compressed = [gzip.compress(layer, compresslevel=6, mtime=0) for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": dict(image_labels)},
              "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in layers]}}
    if config_edit:  # edits in place, or returns a replacement (a dict, or raw bytes)
        changed = config_edit(config)
        config = changed if isinstance(changed, (dict, bytes)) else config
    config_bytes = json.dumps(config).encode() if not isinstance(config, bytes) else config
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": push_blob(address, repo, config_bytes),
                           "size": len(config_bytes)},
                "layers": [{"mediaType": GZIP_LAYER, "digest": push_blob(address, repo, blob),
                            "size": (layer_sizes or {}).get(n, len(blob))} for n, blob in enumerate(compressed)]}
    if manifest_edit:
        changed = manifest_edit(manifest)
        manifest = changed if isinstance(changed, dict) else manifest
    return push_manifest(address, repo, tag, json.dumps(manifest).encode())


class StaticRegistry:
    """A fake registry on 127.0.0.1 serving fixed manifests and blobs as they are, for the documents a real
    registry refuses to store (a manifest whose ``config`` is a string...). No auth; GET and HEAD only."""

    def __init__(self, manifests: dict[str, tuple[bytes, str]], blobs: dict[str, bytes]):
        import threading
        from http.server import BaseHTTPRequestHandler

        from tests.registry_servers import ThreadingHTTPServer

        served_manifests, served_blobs = manifests, blobs

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self._answer(body=True)

            def do_HEAD(self):  # noqa: N802
                self._answer(body=False)

            def _answer(self, body: bool):
                path = self.path.split("?")[0]
                kind, _, ref = path.rpartition("/")
                found = None
                if path == "/v2/":
                    found = (b"{}", "application/json")
                elif kind.endswith("/manifests") and ref in served_manifests:
                    found = served_manifests[ref]
                elif kind.endswith("/blobs") and ref in served_blobs:
                    found = (served_blobs[ref], "application/octet-stream")
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, media_type = found
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Content-Digest", sha256(data))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_image(manifest: dict | list | str, config: dict | bytes, layers: list[bytes],
                media_type: str = OCI_MANIFEST) -> StaticRegistry:
    """A :class:`StaticRegistry` serving ``manifest`` (as given: any JSON value) at tag ``1``, with the config and
    the gzipped layers as blobs (the manifest names them by digest itself)."""
    config_bytes = config if isinstance(config, bytes) else json.dumps(config).encode()
    blobs = {sha256(config_bytes): config_bytes}
    for layer in layers:
        blob = gzip.compress(layer, mtime=0)
        blobs[sha256(blob)] = blob
    data = json.dumps(manifest).encode()
    return StaticRegistry({"1": (data, media_type), sha256(data): (data, media_type)}, blobs)
