"""The daemonless registry client against Debian's real docker-registry (plain, htpasswd+TLS, token auth), with
faults injected by a proxy in front of it. Every test runs with DOCKER_HOST pointing nowhere: no engine is used."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import threading
import time

import pytest

from builder.errors import RegistryError
from builder.registry import client as client_module
from builder.registry.auth import Credentials, stored_credentials
from builder.registry.client import MEDIA_OCI_MANIFEST, RegistryClient
from builder.registry.reference import Reference
from tests.registry_servers import Registry, uploaded_blobs

EMPTY_CONFIG = b"{}"


@pytest.fixture(autouse=True)
def no_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("SWCLI_DOCKER_CERTS_D", str(tmp_path / "certs.d"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("plain-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("secure-registry"), secure=True)
    yield reg
    reg.stop()


def blob(data: bytes) -> tuple[str, int, callable]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data), lambda: io.BytesIO(data)


def image_manifest(config_digest: str, layers: list[tuple[str, int]]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s}
                   for d, s in layers]}, sort_keys=True).encode()


def push_image(client: RegistryClient, repository: str, tag: str, layer: bytes) -> str:
    for data in (EMPTY_CONFIG, layer):
        digest, size, opener = blob(data)
        if client.blob_size(repository, digest) is None:
            client.upload_blob(repository, digest, size, opener)
    manifest = image_manifest(blob(EMPTY_CONFIG)[0], [blob(layer)[:2]])
    return client.put_manifest(repository, tag, manifest, MEDIA_OCI_MANIFEST)


# --- references ------------------------------------------------------------------------------------------------

def test_reference_parse():
    ref = Reference.parse("127.0.0.1:5000/team/model:1")
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.ref) == ("127.0.0.1:5000", "team/model", "1",
                                                                             None, "1")
    assert Reference.parse("localhost/m").tag == "latest"
    digest = "sha256:" + "a" * 64
    ref = Reference.parse(f"reg.example/m@{digest}")
    assert (ref.tag, ref.digest, ref.ref, str(ref)) == (None, digest, digest, f"reg.example/m@{digest}")
    for bad in ("team/model:1", "model", "127.0.0.1:5000/Model", "reg.example/m@sha256:abc", "reg.example/m:a b"):
        with pytest.raises(RegistryError) as err:
            Reference.parse(bad)
        assert "\n" not in str(err.value)


# --- credentials -----------------------------------------------------------------------------------------------

def write_config(tmp_path, config: dict) -> None:
    folder = tmp_path / "docker-config"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


def fake_helper(tmp_path, monkeypatch, name: str, secrets: dict[str, tuple[str, str]]) -> None:
    """A docker-credential-<name> on PATH that answers `get` from ``secrets`` like the real helpers do."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    table = {k: {"ServerURL": k, "Username": u, "Secret": p} for k, (u, p) in secrets.items()}
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
assert sys.argv[1] == "get"
server = sys.stdin.read().strip()
table = {json.dumps(table)}
if server not in table:
    print("credentials not found in native keychain"); sys.exit(1)
print(json.dumps(table[server]))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_stored_credentials_from_auths(tmp_path):
    assert stored_credentials("reg.example") is None  # no config at all
    write_config(tmp_path, {"auths": {
        "https://reg.example:5000": {"auth": base64.b64encode(b"alice:pa:ss").decode()},
        "plain.example": {"username": "bob", "password": "pw"},
        "token.example": {"identitytoken": "refresh-me"},
        "empty.example": {}}})
    assert stored_credentials("reg.example:5000") == Credentials("alice", "pa:ss")
    assert stored_credentials("plain.example") == Credentials("bob", "pw")
    assert stored_credentials("token.example") == Credentials("<token>", "refresh-me")
    assert stored_credentials("empty.example") is None
    assert stored_credentials("other.example") is None
    assert "pa:ss" not in repr(stored_credentials("reg.example:5000"))


def test_stored_credentials_helpers_win(tmp_path, monkeypatch):
    fake_helper(tmp_path, monkeypatch, "global", {"store.example": ("carol", "from-store")})
    fake_helper(tmp_path, monkeypatch, "special", {"helper.example": ("dave", "from-helper")})
    write_config(tmp_path, {"credsStore": "global", "credHelpers": {"helper.example": "special"},
                            "auths": {"helper.example": {"auth": base64.b64encode(b"x:y").decode()},
                                      "inline.example": {"auth": base64.b64encode(b"erin:inline").decode()}}})
    assert stored_credentials("helper.example") == Credentials("dave", "from-helper")
    assert stored_credentials("store.example") == Credentials("carol", "from-store")
    assert stored_credentials("inline.example") == Credentials("erin", "inline")  # the store has none: auths


def test_stored_credentials_broken_helper_is_one_line(tmp_path):
    write_config(tmp_path, {"credHelpers": {"reg.example": "nosuchhelper"}})
    with pytest.raises(RegistryError, match="docker-credential-nosuchhelper .* not on PATH"):
        stored_credentials("reg.example")


# --- a plain registry ------------------------------------------------------------------------------------------

def test_blobs_and_manifests_round_trip(registry, tmp_path):
    client = RegistryClient(registry.address)
    client.ping()
    layer = os.urandom(300_000)
    digest, size, _ = blob(layer)
    assert client.blob_size("core/one", digest) is None
    manifest_digest = push_image(client, "core/one", "v1", layer)
    assert client.blob_size("core/one", digest) == size
    out = io.BytesIO()
    assert client.fetch_blob("core/one", digest, out, size=size) == size and out.getvalue() == layer
    manifest = client.get_manifest("core/one", "v1")
    assert (manifest.digest, manifest.media_type) == (manifest_digest, MEDIA_OCI_MANIFEST)
    assert client.get_manifest("core/one", manifest_digest).data == manifest.data
    assert client.manifest_descriptor("core/one", "v1") == {"mediaType": MEDIA_OCI_MANIFEST,
                                                             "digest": manifest_digest, "size": len(manifest.data)}
    assert client.manifest_descriptor("core/one", "nope") is None
    with pytest.raises(RegistryError, match="has no manifest nope in core/one"):
        client.get_manifest("core/one", "nope")
    inspected = registry.skopeo("inspect", "--raw", f"docker://{registry.address}/core/one:v1")
    assert inspected.returncode == 0 and inspected.stdout.encode() == manifest.data


def test_mount_across_repositories(registry):
    client = RegistryClient(registry.address)
    layer = os.urandom(50_000)
    push_image(client, "core/source", "v1", layer)
    digest, size, _ = blob(layer)
    before = uploaded_blobs(registry.log)
    assert client.mount_blob("core/target", digest, "core/source") is True
    assert client.blob_size("core/target", digest) == size
    assert uploaded_blobs(registry.log) == before
    missing = "sha256:" + "0" * 64
    assert client.mount_blob("core/target", missing, "core/source") is False


def test_fetch_missing_blob_names_it(registry):
    client = RegistryClient(registry.address)
    missing = "sha256:" + "1" * 64
    with pytest.raises(RegistryError, match=f"has no blob {missing} in core/none"):
        client.fetch_blob("core/none", missing, io.BytesIO())


def test_unreachable_registry_is_one_line():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryError) as err:
        RegistryClient(f"127.0.0.1:{port}").ping()
    assert str(err.value) == f"registry 127.0.0.1:{port} is unreachable: connection refused (the API check (GET /v2/))"


# --- htpasswd over TLS -----------------------------------------------------------------------------------------

def test_basic_auth_over_tls_with_ca_cert(secure):
    client = RegistryClient(secure.address, credentials=Credentials(Registry.USER, Registry.PASSWORD),
                            ca_cert=secure.certs / "ca.crt")
    client.ping("core/tls")
    push_image(client, "core/tls", "v1", os.urandom(10_000))
    assert client.manifest_descriptor("core/tls", "v1") is not None


def test_certs_d_and_stored_credentials(secure, tmp_path):
    folder = tmp_path / "certs.d" / secure.address
    folder.mkdir(parents=True)
    (folder / "ca.crt").write_bytes((secure.certs / "ca.crt").read_bytes())
    write_config(tmp_path, {"auths": {secure.address: {
        "auth": base64.b64encode(f"{Registry.USER}:{Registry.PASSWORD}".encode()).decode()}}})
    RegistryClient(secure.address).ping()


def test_self_signed_without_ca_says_so(secure):
    with pytest.raises(RegistryError) as err:
        RegistryClient(secure.address, credentials=Credentials("x", "y")).ping()
    assert "TLS certificate is not trusted" in str(err.value) and "--ca-cert" in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_credentials(secure):
    client = RegistryClient(secure.address, credentials=Credentials(Registry.USER, "wrong"),
                            ca_cert=secure.certs / "ca.crt")
    with pytest.raises(RegistryError, match=f"registry {secure.address} refused the credentials"):
        client.ping()
    anonymous = RegistryClient(secure.address, ca_cert=secure.certs / "ca.crt")
    with pytest.raises(RegistryError, match=f"needs credentials .*swcli login {secure.address}"):
        anonymous.blob_size("core/tls", "sha256:" + "2" * 64)
