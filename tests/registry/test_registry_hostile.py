"""A registry (or token server, or upload host) that is out to get the user: credentials kept to their origin,
memory bounded whatever it sends, a deadline on every wait, one line for every wrong-typed field.

Every fake is a :class:`tests.registry_servers.HostileServer` on loopback (127.0.0.2 plays "another host"); the CLI
runs as a child process (``python -m builder``) so its exit code, its one line and its peak RSS (``os.wait4``)
are its own."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import RegistryError
from builder.registry import upload as client_module
from builder.registry.credstore import Credentials
from builder.registry.client import RegistryClient
from tests.registry_servers import Answer, HostileServer, Registry, basic_challenge

ROOT = Path(__file__).resolve().parents[2]
CREDS = Credentials(Registry.USER, Registry.PASSWORD)
BASIC = "Basic " + base64.b64encode(f"{Registry.USER}:{Registry.PASSWORD}".encode()).decode()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MB = 1 << 20
HUGE = 256  # MiB a hostile body claims or streams here (tools/hostile_rss.py measures 1 GiB)
RSS_BOUND = 100  # MB: a failing pull peaks at ~40 MB; one that read any of these into memory is far above it


def routes(*table, default: Answer | None = None):
    """``answer(seen)`` for a HostileServer: the first (METHOD, path regex, Answer | callable(seen)) that matches,
    ``GET /v2/`` -> 200 {}, else ``default`` (404)."""
    def answer(seen):
        for method, pattern, ans in table:
            if seen.method == method and re.search(pattern, seen.path):
                return ans(seen) if callable(ans) else ans
        if seen.path == "/v2/":
            return Answer(200, {"Content-Type": "application/json"}, b"{}")
        return default or Answer(404, {"Content-Type": "application/json"}, b'{"errors":[]}')
    return answer


def swcli(tmp_path: Path, *args: str, env: dict | None = None, timeout: float = 120) -> dict:
    """``python -m builder ARGS`` in a fresh store and Docker config: code, err, peak RSS (MB), seconds."""
    full = dict(os.environ, PYTHONPATH=str(ROOT), SWCLI_HOME=str(tmp_path / "home"), DOCKER_HOST="unix:///nonexistent",
                DOCKER_CONFIG=str(tmp_path / "docker"), COLUMNS="200")
    full.update(env or {})
    out, err, peak = tmp_path / "out.txt", tmp_path / "err.txt", tmp_path / "rss.txt"
    peak.unlink(missing_ok=True)
    started = time.monotonic()
    # /usr/bin/time reports the peak of swcli alone: a child forked from this (big) test process would count the
    # pages it shared with it before exec
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(peak), sys.executable, "-m", "builder", *args],
                                stdout=o, stderr=e, env=full, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=tmp_path)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)  # time and swcli under it
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status) if proc.returncode is None else proc.returncode
    kb = peak.read_text().split()[-1] if peak.exists() and peak.read_text().split() else "0"
    error = "\n".join(line for line in err.read_text(errors="replace").splitlines()
                      if not line.startswith("Command exited with non-zero status"))  # what time adds
    return {"code": code, "err": error, "out": out.read_text(errors="replace"),
            "rss": int(kb) / 1024 if kb.isdigit() else 0.0, "seconds": seconds}


def one_line(result: dict, code: int = 5) -> str:
    assert result["code"] == code, result
    lines = result["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swcli: error: "), result["err"]
    return lines[0]


def store_login(tmp_path: Path, registry: str) -> None:
    folder = tmp_path / "docker"
    folder.mkdir(exist_ok=True)
    token = base64.b64encode(f"{Registry.USER}:{Registry.PASSWORD}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))


def authed(inner):
    """A route answer behind Basic auth: 401 with a Basic challenge until the right credentials come."""
    return lambda seen: basic_challenge(seen) or (inner(seen) if callable(inner) else inner)


# --- 1. credentials go only where they belong --------------------------------------------------------------------

def test_plain_http_realm_on_another_host_gets_no_credentials(tmp_path):
    """A registry naming a plain-http token realm on another host (127.0.0.2) never gets the user's Basic
    credentials sent there: the realm sees no request at all, and the pull is one line naming the realm."""
    with HostileServer(routes(), host="127.0.0.2") as realm:
        challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="x"'})
        with HostileServer(routes(("GET", "/v2/", challenge), default=challenge)) as reg:
            store_login(tmp_path, reg.address)
            line = one_line(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"))
            assert "token realm" in line and "127.0.0.2" in line
            assert realm.seen == []
            with pytest.raises(RegistryError, match="plain http on another host"):
                RegistryClient(reg.address, credentials=CREDS).ping()
            assert realm.seen == []


def test_realm_rule_https_same_host_and_listed(tmp_path, monkeypatch):
    """The same realm gets the credentials once the user lists it in SWCLI_INSECURE_REGISTRIES; a realm on the
    registry's own (loopback) host gets them; an anonymous pull asks the foreign realm without any."""
    token = Answer(200, {"Content-Type": "application/json"}, b'{"token": "t0k3n"}')
    for realm_host, listed, sends in (("127.0.0.2", True, True), ("127.0.0.1", False, True)):
        with HostileServer(routes(("GET", "/token", token)), host=realm_host) as realm:
            challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
            ok = lambda seen: (Answer(200, {}, b"{}") if seen.headers.get("authorization") == "Bearer t0k3n"  # noqa
                               else challenge)
            with HostileServer(routes(("GET", "/v2/", ok))) as reg:
                monkeypatch.setenv("SWCLI_INSECURE_REGISTRIES", realm.address if listed else "")
                RegistryClient(reg.address, credentials=CREDS).ping()
                assert (realm.seen[0].headers.get("authorization") == BASIC) is sends
    with HostileServer(routes(("GET", "/token", token)), host="127.0.0.2") as realm:
        challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
        ok = lambda seen: Answer(200, {}, b"{}") if seen.headers.get("authorization") else challenge  # noqa
        monkeypatch.setenv("SWCLI_DOCKER_CERTS_D", str(tmp_path / "none"))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
        with HostileServer(routes(("GET", "/v2/", ok))) as reg:
            RegistryClient(reg.address).ping()  # no credentials stored: the token is asked for anonymously
            assert len(realm.seen) == 1 and "authorization" not in realm.seen[0].headers


def _upload_routes(upload_host: HostileServer):
    return routes(("HEAD", "/blobs/", authed(Answer(404))),
                  ("POST", "/blobs/uploads/", authed(Answer(202, {"Location": f"{upload_host.url}/up/1"}))))


@pytest.mark.parametrize("chunked", [False, True])
def test_upload_location_on_another_origin_gets_no_authorization(chunked, monkeypatch):
    """A Basic registry hands the upload to a Location on another port of the same host (another origin): the
    PUT (and each PATCH of a chunked upload) goes there without the Authorization header, and its 401 is not a
    challenge the client answers with the credentials."""
    if chunked:
        monkeypatch.setattr(client_module, "CHUNKED_THRESHOLD", 1000)
        monkeypatch.setattr(client_module, "CHUNK_SIZE", 1000)
    data = os.urandom(2500)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    answer = lambda seen: Answer(201 if seen.method == "PUT" else 202, {"Location": "/up/1"})  # noqa: E731
    with HostileServer(answer) as uploads, HostileServer(_upload_routes(uploads)) as reg:
        client = RegistryClient(reg.address, credentials=CREDS)
        client.upload_blob("team/m", digest, len(data), lambda: io.BytesIO(data))
        methods = [s.method for s in uploads.seen]
        assert methods == (["PATCH"] * 3 + ["PUT"] if chunked else ["PUT"])
        assert all("authorization" not in s.headers for s in uploads.seen)
        assert sum(len(s.body) for s in uploads.seen) == len(data)
    with HostileServer(lambda seen: Answer(401, {"WWW-Authenticate": 'Basic realm="x"'})) as uploads, \
            HostileServer(_upload_routes(uploads)) as reg:
        with pytest.raises(RegistryError, match="needs credentials|refused|HTTP 401"):
            RegistryClient(reg.address, credentials=CREDS).upload_blob("team/m", digest, len(data),
                                                                       lambda: io.BytesIO(data))
        assert uploads.seen and all("authorization" not in s.headers for s in uploads.seen)


def test_redirect_to_another_origin_carries_no_authorization():
    """A blob GET answered 307 to another host is followed without the Authorization header (and the bytes are
    still verified); a redirect back to the registry's own origin carries it again."""
    data = os.urandom(5000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with HostileServer(lambda seen: Answer(200, {}, data), host="127.0.0.2") as storage:
        blob = authed(Answer(307, {"Location": f"{storage.url}/blob?sig=1"}))
        with HostileServer(routes(("GET", "/blobs/sha256:", blob))) as reg:
            out = io.BytesIO()
            assert RegistryClient(reg.address, credentials=CREDS).fetch_blob("team/m", digest, out, size=5000) == 5000
            assert out.getvalue() == data
            assert [s.path for s in storage.seen] == ["/blob?sig=1"]
            assert "authorization" not in storage.seen[0].headers

    hops = lambda seen: (authed(Answer(200, {}, data))(seen) if "/back" in seen.path  # noqa: E731
                         else authed(Answer(302, {"Location": "/back"}))(seen))
    with HostileServer(routes(("GET", "/blobs/|/back", hops))) as reg:
        RegistryClient(reg.address, credentials=CREDS).fetch_blob("team/m", digest, io.BytesIO(), size=5000)
        assert reg.seen[-1].path == "/back" and reg.seen[-1].headers.get("authorization") == BASIC
    loop = Answer(302, {"Location": "/v2/team/m/blobs/" + digest})
    with HostileServer(routes(("GET", "/blobs/", loop))) as reg:
        with pytest.raises(RegistryError, match="more than 5 redirects"):
            RegistryClient(reg.address).fetch_blob("team/m", digest, io.BytesIO(), size=5000)


# --- 2. memory bounded whatever a peer sends ---------------------------------------------------------------------

def _manifest_doc(config: bytes = b"{}") -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest()}, "layers": []}).encode()


def _bounded(result: dict, server: HostileServer, *words: str) -> str:
    line = one_line(result)
    assert result["rss"] < RSS_BOUND, (result["rss"], line)
    assert server.sent < 64 * MB, server.sent  # it stopped reading long before the end
    assert all(w in line for w in words), line
    return line


def test_gzip_bomb_manifest_is_refused_unread(tmp_path):
    """A 256 KiB gzip body that inflates to 256 MiB, as a manifest, an error body or a token answer: refused for
    its Content-Encoding (swcli asked for identity), never inflated, for `pull`, `eval pull` and `eval list`."""
    bomb = gzip.compress(bytes(HUGE * MB), compresslevel=1)
    answer = Answer(200, {"Content-Type": OCI_MANIFEST, "Content-Encoding": "gzip"}, bomb)
    with HostileServer(routes(("GET", "/manifests/", answer))) as reg:
        _bounded(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"), reg, "Content-Encoding")
        digest = "sha256:" + "0" * 64
        _bounded(swcli(tmp_path, "eval", "pull", f"{reg.address}/team/m@{digest}"), reg, "Content-Encoding")
        assert all(s.headers.get("accept-encoding") == "identity" for s in reg.seen)
    error = Answer(500, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb)
    with HostileServer(_eval_list_routes(error)) as reg:  # an error body is no less a body
        _bounded(swcli(tmp_path, "eval", "list", "--image", f"{reg.address}/team/m:1"), reg, "Content-Encoding")
    with HostileServer(routes(("GET", "/token", Answer(200, {"Content-Encoding": "gzip"}, bomb)))) as realm:
        challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
        with HostileServer(routes(("GET", "/v2/", challenge), default=challenge)) as reg:
            store_login(tmp_path, reg.address)
            _bounded(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"), realm, "Content-Encoding")


@pytest.mark.parametrize("chunked", [True, False])
def test_huge_manifest_is_cut_while_reading(tmp_path, chunked):
    """256 MiB of manifest, chunked or with its length declared: swcli stops after 4 MiB."""
    answer = Answer(200, {"Content-Type": OCI_MANIFEST}, b" " * MB, repeat=HUGE, chunked=chunked)
    with HostileServer(routes(("GET", "/manifests/", answer))) as reg:
        _bounded(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"), reg, "larger than 4 MiB")


def test_huge_error_body_is_cut(tmp_path):
    """A 500 whose body is 256 MiB (the registry's 'own words'): at most 64 KiB of it is read."""
    answer = Answer(500, {"Content-Type": "application/json"}, b"x" * MB, repeat=HUGE)
    with HostileServer(routes(("GET", "/manifests/", answer))) as reg:
        _bounded(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"), reg, "HTTP 500")


def test_huge_token_answer_is_cut(tmp_path):
    """A token server (on the registry's own host) answering 256 MiB of JSON: cut at 1 MiB."""
    with HostileServer(routes(("GET", "/token", Answer(200, {}, b" " * MB, repeat=HUGE, chunked=True)))) as realm:
        challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
        with HostileServer(routes(("GET", "/v2/", challenge), default=challenge)) as reg:
            store_login(tmp_path, reg.address)
            _bounded(swcli(tmp_path, "pull", f"{reg.address}/team/m:1"), realm, "more than 1 MiB")


def _eval_list_routes(referrers: Answer):
    manifest = _manifest_doc()
    head = Answer(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "sha256:" +
                        hashlib.sha256(manifest).hexdigest(), "Content-Length": str(len(manifest))})
    return routes(("HEAD", "/manifests/", head), ("GET", "/referrers/", referrers))


def test_huge_referrers_list_is_cut(tmp_path):
    answer = Answer(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, b" " * MB, repeat=HUGE,
                    chunked=True)
    with HostileServer(_eval_list_routes(answer)) as reg:
        _bounded(swcli(tmp_path, "eval", "list", "--image", f"{reg.address}/team/m:1"), reg, "larger than 4 MiB")


# --- 3. every wait has a deadline ---------------------------------------------------------------------------------

DRIP_ENV = {"SWCLI_REGISTRY_TIMEOUT": "2", "SWCLI_REGISTRY_MIN_RATE": str(256 << 10)}  # slack: one piece, 1 s


def _too_slow(result: dict, within: float = 12.0) -> str:
    line = one_line(result)
    assert "too slow" in line, line
    assert result["seconds"] < within, result["seconds"]
    return line


def test_dripping_manifest_and_headers_are_cut(tmp_path):
    """A byte every 0.2 s (each read well inside the 2 s timeout) of a manifest's body, or of the status line and
    headers: cut after about 2 s + 2 s, not never."""
    for answer in (Answer(200, {"Content-Type": OCI_MANIFEST}, b" " * 100_000, drip=0.2),
                   Answer(200, {"Content-Type": OCI_MANIFEST}, b"{}", drip=0.2, drip_head=True)):
        with HostileServer(routes(("GET", "/manifests/", answer))) as reg:
            _too_slow(swcli(tmp_path, "pull", f"{reg.address}/team/m:1", env=DRIP_ENV, timeout=30))


def test_dripping_blob_is_cut(tmp_path):
    """A good manifest whose config blob drips (100 KB declared, a byte every 0.2 s)."""
    config = b"{" + b" " * 100_000 + b"}"
    with HostileServer(routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI_MANIFEST},
                                                            _manifest_doc(config))),
                              ("GET", "/blobs/", Answer(200, {}, config, drip=0.2)))) as reg:
        _too_slow(swcli(tmp_path, "pull", f"{reg.address}/team/m:1", env=DRIP_ENV, timeout=30))


def test_dripping_token_server_is_cut(tmp_path):
    with HostileServer(routes(("GET", "/token", Answer(200, {}, b'{"token": "' + b"a" * 1000 + b'"}',
                                                       drip=0.2)))) as realm:
        challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
        with HostileServer(routes(("GET", "/v2/", challenge), default=challenge)) as reg:
            store_login(tmp_path, reg.address)
            _too_slow(swcli(tmp_path, "pull", f"{reg.address}/team/m:1", env=DRIP_ENV, timeout=30))


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1", "0", "abc", "-inf", "1e6"])
def test_bad_registry_timeout_is_a_usage_error(tmp_path, value):
    line = one_line(swcli(tmp_path, "pull", "127.0.0.1:9/team/m:1", env={"SWCLI_REGISTRY_TIMEOUT": value}), code=2)
    assert "SWCLI_REGISTRY_TIMEOUT" in line


HANGING_HELPER = "#!/bin/sh\nsleep 1000\n"


def _helper(tmp_path: Path, body: str = HANGING_HELPER) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    helper = bin_dir / "docker-credential-hang"
    helper.write_text(body)
    helper.chmod(0o755)
    folder = tmp_path / "docker"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"credsStore": "hang"}))
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SWCLI_CREDENTIAL_HELPER_TIMEOUT": "2"}


def test_hanging_credential_helper_is_cut(tmp_path):
    """`login` (helper `store`), `logout` (`erase`) and a pull (`get`) with a helper that never answers: one line
    after the helper timeout, nothing stored, and the helper's process group is gone."""
    env = _helper(tmp_path)
    with HostileServer(routes(("GET", "/manifests/", lambda seen: basic_challenge(seen) or Answer(404)))) as reg:
        proc = subprocess.run([sys.executable, "-m", "builder", "login", reg.address, "-u", "alice",
                               "--password-stdin"], input="pw\n", capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), DOCKER_CONFIG=str(tmp_path / "docker"),
                                       SWCLI_HOME=str(tmp_path / "home"), **env))
        assert proc.returncode == 5 and "did not finish 'store'" in proc.stderr, proc.stderr
        assert json.loads((tmp_path / "docker" / "config.json").read_text()) == {"credsStore": "hang"}
        assert "did not finish 'erase'" in one_line(swcli(tmp_path, "logout", reg.address, env=env, timeout=30))
        result = swcli(tmp_path, "pull", f"{reg.address}/team/m:1", env=env, timeout=30)
        assert "did not finish 'get'" in one_line(result) and result["seconds"] < 10
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "bin")], capture_output=True).stdout == b""


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_docker_config_that_is_no_file_does_not_block(tmp_path, kind):
    folder = tmp_path / "docker"
    folder.mkdir()
    os.mkfifo(folder / "config.json") if kind == "fifo" else (folder / "config.json").mkdir()
    with HostileServer(routes(("GET", "/manifests/", lambda seen: basic_challenge(seen) or Answer(404)))) as reg:
        for args in (["pull", f"{reg.address}/team/m:1"], ["logout", reg.address]):
            result = swcli(tmp_path, *args, timeout=30)
            assert "not a regular file" in one_line(result) and result["seconds"] < 10
        proc = subprocess.run([sys.executable, "-m", "builder", "login", reg.address, "-u", "alice",
                               "--password-stdin"], input="pw\n", capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), DOCKER_CONFIG=str(folder),
                                       SWCLI_HOME=str(tmp_path / "home")))
        assert proc.returncode == 5 and "not a regular file" in proc.stderr, proc.stderr
        assert not any(s.headers.get("authorization") for s in reg.seen)  # login sent nothing


# --- 5. wrong-typed fields in what the client parses: one line, exit 5 -------------------------------------------

def _token_registry(token_body: bytes):
    realm = HostileServer(routes(("GET", "/token", Answer(200, {"Content-Type": "application/json"}, token_body))))
    challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
    return realm, HostileServer(routes(("GET", "/v2/", challenge), default=challenge))


@pytest.mark.parametrize("body", [b"[]", b'"token"', b'{"token": ["x"]}', b'{"token": 5}', b'{"access_token": {}}',
                                  b'{"token": "a b"}', b'{"token": "\\u001b[31m"}', b"NaN", b'{"token": ""}'])
def test_wrong_typed_token_answers_are_one_line(body):
    realm, reg = _token_registry(body)
    with realm, reg:
        with pytest.raises(RegistryError, match="answered with no token"):
            RegistryClient(reg.address, credentials=CREDS).ping()


def test_token_lifetime_of_any_type_is_harmless():
    for lifetime in (b'"soon"', b"true", b"1e400", b"-5", b"NaN", b"[1]"):
        realm, reg = _token_registry(b'{"token": "t", "expires_in": ' + lifetime + b"}")
        with realm, reg:
            with pytest.raises(RegistryError, match="refused the credentials"):  # the fake never accepts it
                RegistryClient(reg.address, credentials=CREDS).ping()


@pytest.mark.parametrize("body", [b'{"errors": "x\\u001b[2J"}', b'{"errors": [1, {"code": {"a": 1}, "message": ["m"]}]}',
                                  b'{"errors": {"code": "X"}}', b'[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]',
                                  b'{"errors": [{"code": "DENIED", "message": "\\u001b]0;owned\\u0007' + b"y" * 500
                                  + b'"}]}'])
def test_error_bodies_of_any_shape_are_one_escaped_line(body):
    with HostileServer(routes(("GET", "/manifests/", Answer(403, {}, body)))) as reg:
        with pytest.raises(RegistryError) as caught:
            RegistryClient(reg.address).get_manifest("team/m", "1")
    text = str(caught.value)
    assert "HTTP 403" in text and "\x1b" not in text and "\x07" not in text and len(text) < 400


GOOD = "sha256:" + "a" * 64


@pytest.mark.parametrize("listing", [
    {"manifests": "x"}, {"manifests": [{"digest": 5}]}, {"manifests": [["x"]]},
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": GOOD, "size": "12"}]},
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": GOOD, "size": 12, "annotations": "x"}]},
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": GOOD, "size": 12, "artifactType": ["x"]}]},
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../x", "size": 12}]},
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": GOOD, "size": 1 << 40}]}, ["x"]])
def test_wrong_typed_referrers_are_one_line(listing):
    answer = Answer(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, json.dumps(listing).encode())
    with HostileServer(routes(("GET", "/referrers/", answer))) as reg:
        with pytest.raises(RegistryError, match="referrers"):
            RegistryClient(reg.address).referrers("team/m", GOOD)


def test_eval_list_of_wrong_typed_referrers_is_one_line(tmp_path):
    """`eval list --image` on a registry whose referrer's annotations are a string: one line, exit 5 (was an
    AttributeError traceback)."""
    entry = {"mediaType": OCI_MANIFEST, "digest": GOOD, "size": 12, "annotations": "x",
             "artifactType": "application/vnd.swcli.evaluation.v1+json"}
    answer = Answer(200, {"Content-Type": "application/vnd.oci.image.index.v1+json"},
                    json.dumps({"manifests": [entry]}).encode())
    with HostileServer(_eval_list_routes(answer)) as reg:
        assert "annotations" in one_line(swcli(tmp_path, "eval", "list", "--image", f"{reg.address}/team/m:1"))


def test_wrong_headers_are_one_line():
    """A HEAD whose Content-Length is no number, a manifest HEAD whose digest is not one (then the manifest is
    read and hashed instead), a manifest whose mediaType is a list."""
    doc = _manifest_doc()
    with HostileServer(routes(("HEAD", "/blobs/", Answer(200, {"Content-Length": "12abc"}, length=-1)),
                              ("HEAD", "/manifests/", Answer(200, {"Docker-Content-Digest": "sha256:../x",
                                                                   "Content-Type": OCI_MANIFEST})),
                              ("GET", "/manifests/1", Answer(200, {"Content-Type": OCI_MANIFEST}, doc)),
                              ("GET", "/manifests/2", Answer(200, {"Content-Type": "text/plain"},
                                                             b'{"mediaType": ["x"]}')))) as reg:
        client = RegistryClient(reg.address)
        with pytest.raises(RegistryError, match="Content-Length '12abc' is not a number"):
            client.blob_size("team/m", GOOD)
        assert client.manifest_descriptor("team/m", "1")["digest"] == "sha256:" + hashlib.sha256(doc).hexdigest()
        with pytest.raises(RegistryError, match="not an OCI or Docker v2 manifest"):
            client.get_manifest("team/m", "2")
