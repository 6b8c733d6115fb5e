"""Who we are to a registry: the Basic / Bearer-token challenge dance, with the credentials
:mod:`builder.registry.credstore` reads from the Docker config.

:class:`Authenticator` answers a registry's ``401`` the way the distribution spec describes: ``Basic`` sends the
credentials with every request from then on; ``Bearer realm=...,service=...`` fetches a token from the realm for the
scopes a request needs (``repository:<name>:pull,push``), caches it per scope set, and fetches a new one when the
registry refuses a cached token (it expired in the middle of a push). Nothing here logs or stores a secret.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from builder.errors import RegistryError
from builder.registry.credstore import Credentials
from builder.registry.hosts import checked_url, insecure_listed, plain_http_allowed, shown

TOKEN_MARGIN = 10.0  # seconds: a token this close to its expiry is fetched again before a request
MAX_TOKEN_ANSWER = 1 << 20  # bytes: a token server's JSON; real ones (JWTs) are a few KB
MAX_TOKEN_LIFETIME = 86400.0  # seconds: a longer expires_in is taken as a day
TOKEN_RE = re.compile(r"[\x21-\x7e]{1,65536}")  # what may follow "Bearer " in a header


def realm_may_get_credentials(realm: str, registry: str) -> bool:
    """Docker's rule for where a token realm may receive the user's credentials: over https anywhere (the realm
    is the registry's own choice, and TLS keeps them from everyone else); over plain http only on the registry's
    own host when that host may be plain http itself (loopback, or listed in $SWCLI_INSECURE_REGISTRIES), or on a
    ``host[:port]`` the user listed there. A realm on another host over plain http (another loopback address
    too) gets none: whoever answers there, or listens on the way, would have them."""
    parts = urlsplit(realm)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    same_host = parts.hostname.lower() == urlsplit(f"//{registry}").hostname
    return (same_host and plain_http_allowed(registry)) or insecure_listed(parts.netloc)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z]+)="([^"]*)"', rest)}
    return scheme.lower(), params


def _token_expiry(answer: dict) -> float:
    expires_in = answer.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return time.time() + min(float(expires_in), MAX_TOKEN_LIFETIME)  # NaN fails "> 0"; inf is capped
    return time.time() + 60.0  # the spec's default lifetime when the server does not say


class Authenticator:
    """Authorization headers for one registry, shared by every thread of a client.

    ``fetch(method, url, **kwargs)`` is the transport's request function, used to reach the token realm (which may
    be another host) with the same TLS settings and error wording.
    """

    def __init__(self, registry: str, credentials: Credentials | None | Callable[[], Credentials | None],
                 fetch: Callable):
        self.registry, self._credentials, self._fetch = registry, credentials, fetch
        self._lock = threading.Lock()
        self._scheme: str | None = None         # "basic" or "bearer" once the registry has said
        self._params: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}  # scope key -> (token, expiry)

    @property
    def credentials(self) -> Credentials | None:
        """The credentials, loaded (from the Docker config, a helper...) only once a registry asks for them."""
        with self._lock:
            if callable(self._credentials):
                self._credentials = self._credentials()
            return self._credentials

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header to send for a request needing ``scopes``, if the registry asked for one."""
        with self._lock:
            scheme = self._scheme
        creds = self.credentials if scheme == "basic" else None
        if creds is not None:
            raw = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if scheme == "bearer":
            return {"Authorization": "Bearer " + self._token(scopes)}
        return {}

    def challenged(self, response, scopes: tuple[str, ...], sent: dict[str, str]) -> bool:
        """Learn from a 401 to a request that carried ``sent`` headers; True when retrying it with new headers may
        succeed. A Basic retry is decided by what this request sent, not by which thread saw the challenge first:
        threads that went out together without credentials all retry, and credentials refused once are refused."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header)
        key = " ".join(scopes)
        with self._lock:
            self._scheme, self._params = scheme, params
            self._tokens.pop(key, None)  # a refused token expired or was revoked: fetch a new one
        if scheme == "basic":
            return not sent.get("Authorization", "").startswith("Basic ") and self.credentials is not None
        return scheme == "bearer"  # the caller retries once, so a token refused twice is an error

    def _token(self, scopes: tuple[str, ...]) -> str:
        key = " ".join(scopes)
        with self._lock:
            cached = self._tokens.get(key)
            params = dict(self._params)
        if cached and cached[1] - TOKEN_MARGIN > time.time():
            return cached[0]
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry} asked for a Bearer token but named no realm")
        realm = checked_url(realm, f"registry {self.registry}: the token realm")
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes] or ([("scope", params["scope"])] if params.get("scope") else [])
        creds = self.credentials
        if creds is not None and not realm_may_get_credentials(realm, self.registry):
            raise RegistryError(f"registry {self.registry} asks for credentials at the token realm {shown(realm, 100)}"
                                ", plain http on another host; swcli sends them there only over https (or to a "
                                "host listed in SWCLI_INSECURE_REGISTRIES)")
        what = f"token from {shown(realm, 100)}"
        if creds is not None and creds.is_identity_token:
            form = dict(query) | {"grant_type": "refresh_token", "refresh_token": creds.password, "client_id": "swcli"}
            form["scope"] = " ".join(s for k, s in query if k == "scope")
            response = self._fetch("POST", realm, data=form, what=what, limit=MAX_TOKEN_ANSWER, credentials_for=realm)
        else:
            auth = (creds.username, creds.password) if creds is not None else None
            response = self._fetch("GET", realm, params=query, auth=auth, what=what, limit=MAX_TOKEN_ANSWER,
                                   credentials_for=realm)
        if response.status_code in (401, 403):
            raise RegistryError(f"registry {self.registry}: the token server {shown(realm, 100)} refused the "
                                f"credentials (HTTP {response.status_code}); run `swcli login {self.registry}`")
        if response.status_code != 200:
            raise RegistryError(f"registry {self.registry}: the token server {shown(realm, 100)} answered HTTP "
                                f"{response.status_code}")
        if response.truncated:
            raise RegistryError(f"registry {self.registry}: the token server {shown(realm, 100)} answered more than "
                                f"{MAX_TOKEN_ANSWER >> 20} MiB")
        try:
            answer = json.loads(response.body)
        except (ValueError, RecursionError):
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            raise RegistryError(f"registry {self.registry}: the token server {shown(realm, 100)} answered with no "
                                "token (a JSON object whose token is printable text)")
        with self._lock:
            self._tokens[key] = (token, _token_expiry(answer))
        return token
