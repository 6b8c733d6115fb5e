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
from builder.registry import upload as client_module
from builder.registry.credstore import Credentials, stored_credentials
from builder.registry.client import MEDIA_OCI_MANIFEST, RegistryClient
from builder.registry.reference import Reference
from tests.helpers.capabilities import needs
from tests.registry_servers import FaultProxy, Registry, Rule, access_log, stored_blob, uploaded_blobs

EMPTY_CONFIG = b"{}"


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    """No engine; the Docker config and certs.d are the test's own (tests/conftest.py)."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")


@pytest.fixture(scope="module")
@needs("registry")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("plain-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
@needs("registry")
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


def test_values_that_are_not_digests_or_names_never_reach_a_url(registry, tmp_path):
    """A digest or repository read from a registry's answer (an index entry, a referrer) is checked first."""
    import io

    client = RegistryClient(registry.address)
    for call in (lambda: client.fetch_blob("core/x", "sha256:../../v2/_catalog", io.BytesIO()),
                 lambda: client.blob_size("core/x", "sha256:" + "A" * 64),
                 lambda: client.get_manifest("core/x", "../../_catalog"),
                 lambda: client.get_manifest("core/../x", "v1"),
                 lambda: client.referrers("core/x", "latest?x=1")):
        with pytest.raises(RegistryError) as err:
            call()
        assert "is not a" in str(err.value)
    assert not any("_catalog" in line for line in registry.log.read_text().splitlines())


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


def test_threads_challenged_together_all_retry_with_credentials(secure):
    """Threads that go out at once before anyone has seen the Basic challenge each get a 401, and each retries with
    the credentials: which thread learnt the challenge first does not decide who fails."""
    import threading

    for attempt in range(3):
        client = RegistryClient(secure.address, credentials=Credentials(Registry.USER, Registry.PASSWORD),
                                ca_cert=secure.certs / "ca.crt")
        start, errors = threading.Barrier(6), []

        def ask(n: int) -> None:
            start.wait()
            try:
                client.blob_size("core/race", "sha256:" + f"{attempt}{n}".rjust(64, "0"))
            except RegistryError as err:
                errors.append(str(err))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


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


# --- chunked uploads that break ----------------------------------------------------------------------------------

@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunked uploads from 1 MiB up, in 256 KiB chunks, so a test blob of a few MiB takes several PATCHes."""
    monkeypatch.setattr(client_module, "CHUNKED_THRESHOLD", 1 << 20)
    monkeypatch.setattr(client_module, "CHUNK_SIZE", 256 << 10)


def proxied(registry, *rules: Rule) -> FaultProxy:
    return FaultProxy(registry.address, list(rules))


def test_chunked_upload_resumes_from_the_registrys_range(registry, small_chunks):
    layer = os.urandom(3 << 20)
    digest, size, opener = blob(layer)
    # the connection breaks as the 3rd chunk starts: the registry keeps the session and says (Range) it holds 512 KiB
    proxy = proxied(registry, Rule("PATCH", r"/blobs/uploads/", "cut", after=0, skip=2, times=1))
    seen = []
    try:
        RegistryClient(proxy.address).upload_blob("chunked/resume", digest, size, opener, on_progress=seen.append)
    finally:
        proxy.stop()
    assert proxy.rules[0].hits == 1
    log = [line.split()[0] + " " + line.split()[2] for line in access_log(registry.log, "chunked/resume")]
    # the registry logs the cut PATCH when its handler gives up on the dead connection, which may come after it
    # answered the client's GET: the two are the 4th and 5th lines in either order
    assert log[:3] == ["POST 202", "PATCH 202", "PATCH 202"] and sorted(log[3:5]) == ["GET 204", "PATCH 500"]
    assert log[-1] == "PUT 201"
    assert log.count("POST 202") == 1 and log.count("PATCH 202") == size // (256 << 10)
    assert seen[-1] == size
    assert stored_blob(registry.root, digest).read_bytes() == layer


def test_chunked_upload_restarts_when_the_registry_drops_the_session(registry, small_chunks):
    layer = os.urandom(2 << 20)
    digest, size, opener = blob(layer)
    # cut in the middle of the 2nd chunk: docker-registry 2.8 keeps the partial bytes, then refuses the session
    # ("upload resumed at wrong offset": 404 BLOB_UPLOAD_INVALID), so a new session starts from byte 0
    proxy = proxied(registry, Rule("PATCH", r"/blobs/uploads/", "cut", after=100 << 10, skip=1, times=1))
    try:
        RegistryClient(proxy.address).upload_blob("chunked/restart", digest, size, opener)
    finally:
        proxy.stop()
    log = [line.split()[0] + " " + line.split()[2] for line in access_log(registry.log, "chunked/restart")]
    # the client learns the session is gone from its status GET (404), or, when the registry has not yet given up
    # on the cut connection and still answers that GET (204), from the resumed PATCH (404): either way it restarts
    assert log.count("POST 202") == 2 and log[-1] == "PUT 201"
    assert "GET 404" in log or "PATCH 404" in log, log
    assert stored_blob(registry.root, digest).read_bytes() == layer


def test_chunked_upload_gives_up_after_repeated_breaks(registry, small_chunks):
    digest, size, opener = blob(os.urandom(2 << 20))
    proxy = proxied(registry, Rule("PATCH", r"/blobs/uploads/", "cut", after=1000))
    try:
        with pytest.raises(RegistryError) as err:
            RegistryClient(proxy.address).upload_blob("chunked/never", digest, size, opener)
    finally:
        proxy.stop()
    assert f"upload of blob {digest} to {proxy.address}/chunked/never broke off" in str(err.value)


def test_parallel_uploads_through_one_client(registry, small_chunks):
    client = RegistryClient(registry.address)
    blobs = [blob(os.urandom((i + 1) << 19)) for i in range(4)]  # 0.5 to 2 MiB: monolithic and chunked
    errors = []

    def upload(digest, size, opener):
        try:
            client.upload_blob("threads/four", digest, size, opener)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=upload, args=b) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [client.blob_size("threads/four", d) for d, _, _ in blobs] == [s for _, s, _ in blobs]


# --- registries that misbehave ---------------------------------------------------------------------------------

def test_garbage_manifest_answer(registry):
    push_image(RegistryClient(registry.address), "faults/garbage", "v1", b"layer")
    proxy = proxied(registry, Rule("GET", r"/manifests/", "garbage"))
    try:
        with pytest.raises(RegistryError) as err:
            RegistryClient(proxy.address).get_manifest("faults/garbage", "v1")
    finally:
        proxy.stop()
    assert str(err.value) == (f"registry {proxy.address} answered manifest v1 of {proxy.address}/faults/garbage "
                              "with something that is not a manifest (text/html, not JSON)")


def test_hanging_registry_times_out(registry, monkeypatch):
    monkeypatch.setenv("SWCLI_REGISTRY_TIMEOUT", "2")
    proxy = proxied(registry, Rule("HEAD", r"/blobs/", "hang"))
    started = time.monotonic()
    try:
        with pytest.raises(RegistryError) as err:
            RegistryClient(proxy.address).blob_size("faults/hang", "sha256:" + "3" * 64)
    finally:
        proxy.stop()
    assert time.monotonic() - started < 8
    assert f"registry {proxy.address} did not answer within 2 s (blob sha256:{'3' * 64}" in str(err.value)


def test_registry_that_accepts_and_never_answers(monkeypatch):
    import socket
    monkeypatch.setenv("SWCLI_REGISTRY_TIMEOUT", "2")
    with socket.socket() as silent:  # the kernel accepts connections; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RegistryError) as err:
            RegistryClient(address).ping()
    assert time.monotonic() - started < 6
    assert str(err.value).startswith(f"registry {address} did not answer within 2 s (the API check (GET /v2/))")


def test_5xx_on_one_blob(registry):
    layer = os.urandom(20_000)
    digest, size, opener = blob(layer)
    proxy = proxied(registry, Rule("PUT", r"/blobs/uploads/.*digest=sha256%3A" + digest[7:], "status", status=500))
    try:
        client = RegistryClient(proxy.address)
        client.upload_blob("faults/five", *blob(b"another blob")[0:3])
        with pytest.raises(RegistryError) as err:
            client.upload_blob("faults/five", digest, size, opener)
    finally:
        proxy.stop()
    assert str(err.value) == (f"registry {proxy.address}: upload of blob {digest} to {proxy.address}/faults/five "
                              "failed: HTTP 500")


def test_5xx_once_is_retried(registry):
    digest, size, opener = blob(os.urandom(20_000))
    proxy = proxied(registry, Rule("PUT", r"/blobs/uploads/", "status", status=503, times=1))
    try:
        RegistryClient(proxy.address).upload_blob("faults/once", digest, size, opener)
    finally:
        proxy.stop()
    assert stored_blob(registry.root, digest).exists()


def test_flipped_byte_on_fetch(registry):
    layer = os.urandom(100_000)
    push_image(RegistryClient(registry.address), "faults/flip", "v1", layer)
    digest = blob(layer)[0]
    proxy = proxied(registry, Rule("GET", r"/blobs/sha256:", "flip"))
    try:
        with pytest.raises(RegistryError) as err:
            RegistryClient(proxy.address).fetch_blob("faults/flip", digest, io.BytesIO())
    finally:
        proxy.stop()
    assert str(err.value).startswith(f"blob {digest} from {proxy.address}/faults/flip does not match its digest")


def test_cut_download_is_one_line(registry):
    layer = os.urandom(100_000)
    push_image(RegistryClient(registry.address), "faults/cutdl", "v1", layer)
    proxy = proxied(registry, Rule("GET", r"/blobs/sha256:", "cut", after=5000))
    try:
        with pytest.raises(RegistryError) as err:
            RegistryClient(proxy.address).fetch_blob("faults/cutdl", blob(layer)[0], io.BytesIO())
    finally:
        proxy.stop()
    assert f"download of blob {blob(layer)[0]}" in str(err.value) and "\n" not in str(err.value)


# --- Bearer tokens -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
@needs("registry")
def token_registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("token-registry"), token=True)
    yield reg
    reg.stop()


def test_bearer_token_push_pull_and_mount_scopes(token_registry):
    client = RegistryClient(token_registry.address, credentials=Credentials(Registry.USER, Registry.PASSWORD))
    client.ping()
    layer = os.urandom(40_000)
    push_image(client, "tok/source", "v1", layer)
    assert client.mount_blob("tok/target", blob(layer)[0], "tok/source") is True
    out = io.BytesIO()
    client.fetch_blob("tok/target", blob(layer)[0], out)
    assert out.getvalue() == layer
    issued = token_registry.tokens.requests
    assert ["repository:tok/source:pull,push"] in issued
    assert ["repository:tok/target:pull,push", "repository:tok/source:pull"] in issued
    assert len(issued) <= 5  # tokens are cached per scope set, not fetched per request


def test_bearer_wrong_credentials(token_registry):
    client = RegistryClient(token_registry.address, credentials=Credentials(Registry.USER, "wrong"))
    with pytest.raises(RegistryError) as err:
        client.ping()
    assert "token server" in str(err.value) and "refused the credentials" in str(err.value)
    assert "wrong" not in str(err.value)


def test_bearer_with_identity_token_and_credential_helper(token_registry, tmp_path, monkeypatch):
    from tests.registry_servers import TokenServer

    write_config(tmp_path, {"auths": {f"https://{token_registry.address}": {"identitytoken": TokenServer.REFRESH}}})
    client = RegistryClient(token_registry.address)
    push_image(client, "tok/identity", "v1", os.urandom(1000))
    assert client.manifest_descriptor("tok/identity", "v1") is not None
    fake_helper(tmp_path, monkeypatch, "vault", {token_registry.address: (Registry.USER, Registry.PASSWORD)})
    write_config(tmp_path, {"credHelpers": {token_registry.address: "vault"}})
    RegistryClient(token_registry.address).ping("tok/identity")


@pytest.mark.slow
@pytest.mark.registry
def test_expired_token_mid_push_is_refreshed(tmp_path, small_chunks):
    reg = Registry(tmp_path / "short-tokens", token=True, token_lifetime=2)
    try:
        client = RegistryClient(reg.address, credentials=Credentials(Registry.USER, Registry.PASSWORD))
        layer = os.urandom(1 << 20 | 12345)
        digest, size, opener = blob(layer)
        slept = []

        def slow_network(done):
            if not slept:
                slept.append(done)
                time.sleep(3)  # the token of this upload expires between two chunks

        client.upload_blob("tok/expiry", digest, size, opener, on_progress=slow_network)
        assert stored_blob(reg.root, digest).read_bytes() == layer
        assert reg.tokens.requests.count(["repository:tok/expiry:pull,push"]) == 2  # the first one expired
        assert any(line.endswith(" 401") for line in access_log(reg.log, "tok/expiry")[2:])
    finally:
        reg.stop()


# --- referrers ---------------------------------------------------------------------------------------------------

EVAL_TYPE, SBOM_TYPE = "application/vnd.swcli.eval.v1+json", "application/vnd.cyclonedx+json"


def artifact(client: RegistryClient, repository: str, subject: str, artifact_type: str, content: bytes) -> bytes:
    """An OCI artifact manifest about ``subject``: the empty config, one blob, its ``artifactType``."""
    empty = b"{}"
    for data in (empty, content):
        digest, size, opener = blob(data)
        client.upload_blob(repository, digest, size, opener)
    return json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": blob(empty)[0], "size": 2},
        "layers": [{"mediaType": "application/json", "digest": blob(content)[0], "size": len(content)}],
        "subject": {"mediaType": MEDIA_OCI_MANIFEST, "digest": subject, "size": 1},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}, sort_keys=True).encode()


def test_referrers_fallback_tag_index(registry):
    client = RegistryClient(registry.address)
    subject = push_image(client, "refs/model", "v1", os.urandom(5_000))
    assert client.referrers("refs/model", subject) == []
    evaluation = artifact(client, "refs/model", subject, EVAL_TYPE, b'{"accuracy": 0.9}')
    sbom = artifact(client, "refs/model", subject, SBOM_TYPE, b'{"bomFormat": "CycloneDX"}')
    eval_digest = client.put_referrer("refs/model", evaluation)
    assert client.put_referrer("refs/model", evaluation) == eval_digest  # twice: listed once
    sbom_digest = client.put_referrer("refs/model", sbom)
    listed = client.referrers("refs/model", subject)
    assert [d["digest"] for d in listed] == [eval_digest, sbom_digest]
    assert listed[0] == {"mediaType": MEDIA_OCI_MANIFEST, "digest": eval_digest, "size": len(evaluation),
                         "artifactType": EVAL_TYPE,
                         "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}
    assert [d["digest"] for d in client.referrers("refs/model", subject, SBOM_TYPE)] == [sbom_digest]
    # what another client (a fresh one, or skopeo) sees: the spec's fallback tag
    index = RegistryClient(registry.address).get_manifest("refs/model", "sha256-" + subject[7:])
    assert [m["digest"] for m in json.loads(index.data)["manifests"]] == [eval_digest, sbom_digest]
    assert "GET /v2/refs/model/referrers/" + subject + " 404" in access_log(registry.log, "referrers")


def test_referrers_put_at_once_are_all_listed_without_the_referrers_api(registry):
    """docker-registry has no referrers API and no conditional PUT: 8 writers adding to the fallback index at once
    left 2-3 of the 8 listed (the `--parts registry` pods finish together). Each writer now checks that its entry
    stayed and puts it back."""
    import threading

    client = RegistryClient(registry.address)
    subject = push_image(client, "refs/race", "v1", os.urandom(5_000))
    docs = [artifact(client, "refs/race", subject, EVAL_TYPE, b'{"part": %d}' % n) for n in range(8)]
    start, digests, errors = threading.Barrier(len(docs)), [], []

    def put(doc: bytes) -> None:
        mine = RegistryClient(registry.address)  # a pod each
        start.wait()
        try:
            digests.append(mine.put_referrer("refs/race", doc))
        except Exception as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    threads = [threading.Thread(target=put, args=(doc,)) for doc in docs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(digests) == len(docs)
    listed = {d["digest"] for d in RegistryClient(registry.address).referrers("refs/race", subject)}
    assert listed == set(digests)


def test_a_500_on_the_fallback_index_put_costs_a_round_not_the_put(registry, monkeypatch):
    """docker-registry answers 500 to tag PUTs that race each other (seen in CI with 8 writers, and here with 24 on
    a loaded machine): the writer tries again after its settle time instead of failing its push."""
    from builder.registry import referrers
    from builder.registry.transport import TransferError

    monkeypatch.setattr(referrers, "MIN_SETTLE", 0.05)
    client = RegistryClient(registry.address)
    subject = push_image(client, "refs/flaky", "v1", os.urandom(5_000))
    doc = artifact(client, "refs/flaky", subject, EVAL_TYPE, b'{"part": 0}')
    real, refused = client.put_manifest, []

    def put_manifest(repository, ref, data, media_type):
        if ref.startswith("sha256-") and not refused:
            refused.append(ref)
            raise TransferError(f"registry {client.registry}: manifest {ref} failed: HTTP 500 (UNKNOWN: unknown error)")
        return real(repository, ref, data, media_type)

    monkeypatch.setattr(client, "put_manifest", put_manifest)
    digest = client.put_referrer("refs/flaky", doc)
    assert refused and [d["digest"] for d in RegistryClient(registry.address).referrers("refs/flaky", subject)] == [digest]


def test_put_referrer_needs_a_subject(registry):
    with pytest.raises(RegistryError, match="must be a JSON manifest with a subject digest"):
        RegistryClient(registry.address).put_referrer("refs/none", b'{"schemaVersion": 2}')


def test_referrers_api_when_the_registry_has_one(registry):
    subject = "sha256:" + "4" * 64
    listing = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:" + "5" * 64, "size": 10, "artifactType": EVAL_TYPE},
        {"mediaType": MEDIA_OCI_MANIFEST, "digest": "sha256:" + "6" * 64, "size": 11, "artifactType": SBOM_TYPE}]}
    proxy = proxied(registry, Rule("GET", r"/referrers/", "status", status=200, body=json.dumps(listing).encode(),
                                   content_type="application/vnd.oci.image.index.v1+json"))
    try:
        client = RegistryClient(proxy.address)
        assert client.referrers("refs/api", subject) == listing["manifests"]
        assert [d["artifactType"] for d in client.referrers("refs/api", subject, SBOM_TYPE)] == [SBOM_TYPE]
    finally:
        proxy.stop()
