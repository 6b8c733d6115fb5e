"""The console's guard: every request is checked here before any route sees it.

A local server that can start jobs is a target for any web page the user visits (cross-site requests, DNS
rebinding) and for other users of the machine. What the guard asks of each request (docs/console.md):

- **Peer**: a loopback connection from a socket another uid owns is refused as it is accepted, before any request
  is read (:mod:`builder.console.peers`, installed as uvicorn's protocol by :mod:`builder.console.serve`): browsers
  send the session cookie to every port of 127.0.0.1, so another user's listener there can get the token, but it
  cannot connect as the user. A browser request from another site, or from a page on another port of this host
  (``Sec-Fetch-Site`` other than ``same-origin`` or ``none``), is refused too.
- **Host**: the address the connection came in on, with the port (``127.0.0.1:8765``), or ``localhost:PORT`` when that
  address is a loopback one. A rebinding attacker's page sends its own name there, so its requests are refused
  before anything is read.
- **Token**: the ``?token=`` of the URL the console printed, once; the answer then sets an HttpOnly, SameSite=Strict
  cookie and redirects to the same URL without the token (so it is not left in the history or a Referer). Scripts
  send ``Authorization: Bearer TOKEN``. Compared in constant time.
- **State changes** (any method but GET and HEAD): the ``Origin`` must be the console's own, and a cookie-authenticated
  request must carry the page's CSRF token (``<meta name="csrf-token">``) in ``X-CSRF-Token``. A Bearer request needs
  no CSRF token: a browser cannot attach that header to a cross-site request without a CORS preflight, which the
  console never grants.
- Every answer carries a Content-Security-Policy that allows only the console's own scripts and styles, no framing,
  no referrer and no caching.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode


COOKIE = "swcli_console_{port}"  # per port: browsers do not tell cookies apart by port, two consoles would clash
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD"}
HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


@dataclass(frozen=True)
class Secrets:
    """The session's token (in the printed URL) and the CSRF token the pages carry; new for every start."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def allowed_hosts(local_ip: str, port: int) -> set[str]:
    """The Host header values a request that came in on ``local_ip:port`` may carry."""
    ip = ipaddress.ip_address(local_ip)
    if ip.version == 6:
        names = {f"[{ip.compressed}]:{port}"}
        if ip.ipv4_mapped:
            names.add(f"{ip.ipv4_mapped}:{port}")
    else:
        names = {f"{ip}:{port}"}
    if ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback):
        names.add(f"localhost:{port}")
    return names


def _headers(scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in scope.get("headers") or []:
        name = key.decode("latin-1").lower()
        if name in out:  # two Host (or Origin, Cookie) headers: refused as ambiguous
            out[name] = "\0duplicate"
        else:
            out[name] = value.decode("latin-1")
    return out


def _cookie_token(header: str | None, name: str) -> str | None:
    if not header or header == "\0duplicate":
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no token (http.cookies raises CookieError and others)
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


class Guard:
    """ASGI middleware: the checks of the module docstring, then the wrapped app; answers carry HEADERS."""

    def __init__(self, app, secrets_: Secrets, port: int):
        self.app, self.secrets, self.port = app, secrets_, port
        self.cookie = COOKIE.format(port=port)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan; websockets are not served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            status, text, extra = refusal
            await _plain(send, status, text, extra)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, scope) -> tuple[int, str, list] | None:
        """None when the request may go on, else (status, one line, extra headers)."""
        headers = _headers(scope)
        server = scope.get("server") or ("", None)
        host = headers.get("host")
        if not host or host not in allowed_hosts(server[0], self.port):
            return 421, "this console answers only requests addressed to the address it serves (Host header)", []
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            # a page of another site or of another port of this host (browsers count ports as one site)
            return 403, "the console answers only its own pages and addresses typed or opened by you (Sec-Fetch-Site)", []
        method = scope["method"].upper()
        bearer = headers.get("authorization", "")
        by_bearer = bearer.startswith("Bearer ") and _same(bearer[7:].strip(), self.secrets.token)
        by_cookie = _same(_cookie_token(headers.get("cookie"), self.cookie), self.secrets.token)
        if not (by_bearer or by_cookie):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            if method in SAFE_METHODS and _same(query.get("token"), self.secrets.token):
                return 303, "signed in", self._sign_in(scope, query)
            return 401, "open the URL `swcli console` printed (it carries the token); scripts send Authorization: Bearer TOKEN", []
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and origin != f"http://{host}":
                return 403, "a request that changes state must come from the console's own pages (Origin)", []
            if not by_bearer:
                if origin is None:
                    return 403, "a request that changes state must say where it comes from (Origin)", []
                if not _same(headers.get(CSRF_HEADER), self.secrets.csrf):
                    return 403, "missing or wrong CSRF token (X-CSRF-Token)", []
        return None

    def _sign_in(self, scope, query: dict) -> list:
        query.pop("token", None)
        # one leading slash (a path of '//evil.example' would be another site's URL), the rest quoted (no CR/LF)
        path = "/" + quote(scope.get("path", "/").lstrip("/"), safe="/-._~")
        target = path + (f"?{urlencode(query)}" if query else "")
        cookie = f"{self.cookie}={self.secrets.token}; HttpOnly; SameSite=Strict; Path=/"
        return [(b"location", target.encode("latin-1", "replace")), (b"set-cookie", cookie.encode("latin-1"))]


async def _plain(send, status: int, text: str, extra: list) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            *extra, *HEADERS]})
    await send({"type": "http.response.body", "body": body})
