"""Real registries for tests and benchmarks: Debian's docker-registry on a loopback port (plain, htpasswd over TLS
with a self-signed CA, or Bearer tokens from a small token server), a fault proxy to put in front of it, and what a
test reads from the registry's own side (its access log, its storage)."""

from __future__ import annotations

import base64
import contextlib
import socketserver
import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer as _ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

# the `registry` marker skips (or on CI fails) a test when one of these tools is missing, before it gets here
UNMARKED = "a test that starts a registry carries the `registry` marker (tests/conftest.py)"


class ThreadingHTTPServer(_ThreadingHTTPServer):
    """A test server that leaves no thread behind when it stops: a keep-alive connection's handler thread would
    otherwise outlive the test, and a later `--workers` run (which refuses to fork beside other threads) would fail
    for it. Stopping shuts every open connection down, then joins the handler threads."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, *args, **kwargs):
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self):
        with self._open_lock:
            left = list(self._open)
        for request in left:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
        socketserver.TCPServer.server_close(self)
        threads = self._threads  # a list once a request came; before that, an empty stand-in that is no list
        for thread in list(threads) if isinstance(threads, list) else []:
            thread.join(timeout=10)  # bounded: a handler stuck in a hostile answer must not hang the suite


class Registry:
    """Debian's docker-registry on a loopback port: plain, or htpasswd auth over TLS with a self-signed CA.

    Its blobs live in ``root/blobs`` and its access log in ``root/registry.log``, so a test can stop it and start
    it again on the same port and storage, as a registry that died and came back.
    """

    USER, PASSWORD = "alice", "s3cret-Passw0rd"

    def __init__(self, root, *, secure: bool = False, token: bool = False, token_lifetime: float = 300.0):
        self.binary = shutil.which("docker-registry")
        if self.binary is None:
            pytest.fail(f"docker-registry is not installed; {UNMARKED}")
        self.root, self.secure, self.proc, self.tokens = root, secure, None, None
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        extra = ""
        if secure:
            if shutil.which("htpasswd") is None:
                pytest.fail(f"htpasswd (apache2-utils) is not installed; {UNMARKED}")
            self.certs = root / "certs"
            self._make_certs(self.certs)
            subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), self.USER, self.PASSWORD], check=True,
                           capture_output=True)
            extra = (f"  tls:\n    certificate: {self.certs / 'server.crt'}\n    key: {self.certs / 'server.key'}\n"
                     f"auth:\n  htpasswd:\n    realm: swcli-test\n    path: {root / 'htpasswd'}\n")
        if token:
            self.tokens = TokenServer(root / "token", self.USER, self.PASSWORD, lifetime=token_lifetime)
            extra = (f"auth:\n  token:\n    realm: {self.tokens.realm}\n    service: {TokenServer.SERVICE}\n"
                     f"    issuer: {TokenServer.ISSUER}\n    rootcertbundle: {self.tokens.cert}\n")
        self.config = root / "registry.yml"
        self.config.write_text(f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n"
                               f"  filesystem:\n    rootdirectory: {root / 'blobs'}\n  delete:\n    enabled: true\n"
                               f"http:\n  addr: {self.address}\n{extra}")
        self.start()

    @staticmethod
    def _make_certs(certs) -> None:
        """A CA and a server certificate for IP 127.0.0.1 signed by it; skopeo trusts the CA via --cert-dir."""
        if shutil.which("openssl") is None:
            pytest.fail(f"openssl is not installed; {UNMARKED}")
        certs.mkdir()
        run = lambda *a: subprocess.run(["openssl", *a], cwd=certs, check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=swcli test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
        (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
        (certs / "trust").mkdir()  # what Docker's certs.d/<host:port>/ holds: the CA alone (a *.key means client auth)
        shutil.copy(certs / "ca.crt", certs / "trust" / "ca.crt")

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start; see {self.log}")

    def kill(self) -> None:
        """Die the hard way, mid-request: no graceful shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.tokens is not None:
            self.tokens.stop()

    def skopeo(self, *args: str, creds: bool = True) -> subprocess.CompletedProcess:
        """Run skopeo against this registry, verifying TLS with our CA when secure."""
        if shutil.which("skopeo") is None:
            pytest.fail(f"skopeo is not installed; {UNMARKED}")
        command = ["skopeo", *args]
        if self.secure:
            command[2:2] = ["--cert-dir", str(self.certs / "trust"), "--tls-verify=true"]
            command[2:2] = ["--creds", f"{self.USER}:{self.PASSWORD}"] if creds else ["--no-creds"]
        else:
            command[2:2] = ["--tls-verify=false"]
        return subprocess.run(command, capture_output=True, text=True)


def access_log(log, pattern: str = "") -> list[str]:
    """``METHOD path status`` of every request the registry answered whose path matches ``pattern``, in order."""
    found = re.findall(r'"([A-Z]+) (/v2/[^ ]*) HTTP/[0-9.]+" (\d+)', log.read_text())
    return [f"{method} {path.split('?')[0]} {status}" for method, path, status in found if re.search(pattern, path)]


UPLOAD_DONE = re.compile(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ]+digest=sha256%3A([0-9a-f]{64})')


def uploaded_blobs(log) -> int:
    """Blob uploads the registry completed (PUT .../blobs/uploads/<id>?digest=...), from its own access log."""
    return len(UPLOAD_DONE.findall(log.read_text()))


def uploads(root, log, since: int = 0) -> tuple[int, int]:
    """(blobs, bytes) the registry at ``root`` received after byte ``since`` of its access log ``log``: each
    completed upload counted from the log, its size read from the registry's own storage."""
    digests = UPLOAD_DONE.findall(log.read_text()[since:])
    return len(digests), sum(stored_blob(root, f"sha256:{d}").stat().st_size for d in digests)


def stored_blob(root, digest: str):
    """Where the registry keeps a blob's bytes in its filesystem storage (to check them from its side)."""
    hexdigest = digest.split(":", 1)[1]
    return root / "blobs" / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Bearer token server for docker-registry's ``auth: token`` mode, in a thread on a loopback port.

    ``GET /token?service=..&scope=..`` with Basic auth answers ``{"token": <JWT>}``: RS256 signed by the ``openssl``
    CLI with a self-signed key whose certificate rides in the JWT header (``x5c``) and is the registry's
    ``rootcertbundle``. It grants every scope asked by the one known user (or by ``POST`` with the identity token
    ``REFRESH``, ``grant_type=refresh_token``), nothing to anyone else. Tokens live
    ``lifetime`` seconds; like many token servers it does not say so (no ``expires_in``), so a client learns about
    an expired token from the registry's 401. ``requests`` records the scopes of every token it issued.
    """

    SERVICE, ISSUER = "swcli-test-registry", "swcli-test-issuer"
    REFRESH = "swcli-test-identity-token"  # the identity token (`identitytoken` in a Docker config) it accepts
    REGISTRY_LEEWAY = 60  # docker-registry accepts a token this long after its `exp`: issue it that much earlier

    def __init__(self, root, user: str, password: str, *, lifetime: float = 300.0):
        root.mkdir(parents=True, exist_ok=True)
        self.key, self.cert, self.lifetime = root / "token.key", root / "token.crt", lifetime
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=swcli test token issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self._basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._user = user
        self.requests: list[list[str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                scopes = [v for k, v in parse_qsl(urlsplit(self.path).query) if k == "scope"]
                self._answer(self.headers.get("Authorization") == server._basic, scopes)

            def do_POST(self):  # noqa: N802 - the OAuth2 form an identity token (refresh token) is traded with
                form = dict(parse_qsl(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()))
                valid = form.get("grant_type") == "refresh_token" and form.get("refresh_token") == server.REFRESH
                self._answer(valid, form.get("scope", "").split())

            def _answer(self, allowed: bool, scopes: list[str]):
                if not allowed:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.requests.append(scopes)
                body = json.dumps({"token": server.sign(scopes)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def sign(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": self._user, "aud": self.SERVICE, "jti": uuid.uuid4().hex,
                  "iat": now, "nbf": now - 5, "exp": int(now + self.lifetime - self.REGISTRY_LEEWAY),
                  "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Rule:
    """What the proxy does to requests matching ``method`` and the ``path`` regex (searched in path+query).

    ``action``: ``"garbage"`` (200, an HTML page), ``"hang"`` (accept, never answer), ``"status"`` (answer
    ``status`` with ``body``, of ``content_type``), ``"cut"`` (forward, then drop both connections after ``after``
    bytes: of the request body when it has one, else of the response body), ``"flip"`` (forward, flip one byte of
    the response body).
    ``skip``: matching requests let through untouched first; ``times``: how many requests it then applies to
    (None: all); ``hits`` counts them.
    """

    method: str
    path: str
    action: str
    status: int = 500
    body: bytes = b""
    content_type: str = "text/html"
    after: int = 0
    skip: int = 0
    times: int | None = None
    hits: int = field(default=0)


class FaultProxy:
    """A ThreadingHTTPServer on a loopback port forwarding to the registry at ``upstream`` (host:port), except
    where one of ``rules`` matches. ``address`` is what a client uses instead of the registry's."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}

    def __init__(self, upstream: str, rules: list[Rule]):
        self.upstream, self.rules = upstream, rules
        self._lock = threading.Lock()
        self._stop = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                rule = proxy._match(self.command, self.path)
                action = rule.action if rule else "forward"
                if action == "hang":
                    proxy._stop.wait()
                    self.close_connection = True
                    return
                if action in ("garbage", "status"):
                    self._drain()
                    body = b"<html><body>502 Bad Gateway, try later</body></html>" if action == "garbage" else rule.body
                    self.send_response(200 if action == "garbage" else rule.status)
                    self.send_header("Content-Type", rule.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self._forward(rule if action in ("cut", "flip") else None)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one  # noqa: E731

            def _drain(self):
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    left -= len(self.rfile.read(min(left, 1 << 20)) or b"x" * left)

            def _forward(self, rule):
                host, port = proxy.upstream.rsplit(":", 1)
                upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() not in proxy.HOP:
                        upstream.putheader(key, value)
                upstream.endheaders()
                left = int(self.headers.get("Content-Length") or 0)
                cut_request = rule is not None and rule.action == "cut" and left > 0
                sent = 0
                while left > 0:
                    data = self.rfile.read(min(left, 1 << 16))
                    if not data:
                        break
                    if cut_request and sent + len(data) >= rule.after:
                        upstream.send(data[: rule.after - sent])
                        upstream.sock.shutdown(socket.SHUT_RDWR)  # both sides see the transfer break off
                        upstream.close()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    upstream.send(data)
                    sent += len(data)
                    left -= len(data)
                response = upstream.getresponse()
                body = response.read() if self.command != "HEAD" else b""
                upstream.close()
                if rule is not None and rule.action == "flip" and body:
                    body = body[:len(body) // 2] + bytes([body[len(body) // 2] ^ 0xFF]) + body[len(body) // 2 + 1:]
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in proxy.HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(body))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if rule is not None and rule.action == "cut" and body:
                    self.wfile.write(body[:rule.after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method != method or not re.search(rule.path, path):
                    continue
                if rule.skip:
                    rule.skip -= 1
                elif rule.times is None or rule.hits < rule.times:
                    rule.hits += 1
                    return rule
        return None

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()


# --- hostile fakes ----------------------------------------------------------------------------------------------

@dataclass
class Answer:
    """What a :class:`HostileServer` sends back. ``body`` is sent ``repeat`` times (a huge body costs the server no
    memory); ``length``: the Content-Length to declare (None: the true length; -1: none, the body ends when the
    connection closes); ``chunked``: Transfer-Encoding chunked instead; ``drip``: seconds between single bytes of
    the body (``drip_head``: of the status line and headers too)."""

    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    repeat: int = 1
    length: int | None = None
    chunked: bool = False
    drip: float = 0.0
    drip_head: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


class HostileServer:
    """A ThreadingHTTPServer on a loopback address (``host``: 127.0.0.1, or 127.0.0.2 for "another host") whose
    every answer comes from ``answer(seen) -> Answer``. ``seen`` lists every request (method, path with query,
    headers with lower-case names, the first MiB of the body); ``sent`` counts the body bytes it managed to write."""

    def __init__(self, answer, host: str = "127.0.0.1"):
        self.answer, self.seen, self.sent = answer, [], 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                left, body = int(self.headers.get("Content-Length") or 0), b""
                while left > 0:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        break
                    body = body if len(body) >= 1 << 20 else body + data[:(1 << 20) - len(body)]
                    left -= len(data)
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.seen.append(seen)
                try:
                    self._send(server.answer(seen))
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one  # noqa: E731

            def _send(self, ans: Answer):
                size = len(ans.body) * ans.repeat
                head = [f"HTTP/1.1 {ans.status} X\r\n"]
                headers = dict(ans.headers)
                if ans.chunked:
                    headers["Transfer-Encoding"] = "chunked"
                elif ans.length != -1:
                    headers.setdefault("Content-Length", str(size if ans.length is None else ans.length))
                else:
                    headers["Connection"] = "close"
                    self.close_connection = True
                head += [f"{k}: {v}\r\n" for k, v in headers.items()] + ["\r\n"]
                raw = "".join(head).encode("latin-1")
                if ans.drip_head:
                    self._drip(raw, ans.drip)
                else:
                    self.wfile.write(raw)
                if self.command == "HEAD":
                    return
                for _ in range(ans.repeat):
                    if server._stop.is_set():
                        break
                    piece = ans.body
                    if ans.chunked and piece:
                        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                    if ans.drip:
                        self._drip(piece, ans.drip)
                    else:
                        self.wfile.write(piece)
                    with server._lock:
                        server.sent += len(ans.body)
                if ans.chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _drip(self, data: bytes, every: float):
                for i in range(len(data)):
                    if server._stop.wait(every):
                        raise BrokenPipeError
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.handle_error = lambda request, address: None  # a client that hung up on it is the point
        self.address = f"{host}:{self._httpd.server_address[1]}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def basic_challenge(seen: Seen, user: str = Registry.USER, password: str = Registry.PASSWORD) -> Answer | None:
    """401 with a Basic challenge unless ``seen`` carries ``user:password``; None when it does."""
    wanted = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if seen.headers.get("authorization") == wanted:
        return None
    return Answer(401, {"WWW-Authenticate": 'Basic realm="hostile"'})
