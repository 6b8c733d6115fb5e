"""One registry's authenticated requests: the plumbing every call of :class:`~builder.registry.client.RegistryClient`
goes through.

:func:`api_path` builds ``/v2/<repository>/<kind>/<ref>`` and refuses a repository, tag or digest that is not one (a
value read from a registry's answer must not steer a URL). :class:`Session` sends one request with auth: on a 401
from the registry itself it learns the challenge and retries once, and it turns any unexpected status into one line
naming the registry, what was asked and the registry's own words. Upload locations the registry hands out are made
absolute and checked here too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from builder.errors import RegistryError
from builder.registry.auth import Authenticator
from builder.registry.credstore import Credentials, stored_credentials
from builder.registry.media import DIGEST_RE
from builder.registry.transport import TransferError, Transport, checked_url, origin, shown

REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def api_path(repository: str, kind: str, ref: str = "") -> str:
    """``/v2/<repository>/<kind>/<ref>``, refusing in one line a repository, digest or tag that is not one (a
    value read from a registry's own answer, such as an index entry, must not steer the URL)."""
    if not isinstance(repository, str) or not REPOSITORY_RE.fullmatch(repository):
        raise RegistryError(f"{repository!r} is not a repository name")
    if ref and not (DIGEST_RE.fullmatch(ref) if kind in ("blobs", "referrers") or ":" in ref else TAG_RE.fullmatch(ref)):
        raise RegistryError(f"{ref!r} is not a {'digest' if kind != 'manifests' else 'tag or digest'} "
                            f"(in {repository})")
    return f"/v2/{repository}/{kind}/{ref}"


def content_length(response, what: str | None) -> int | None:
    """The answer's ``Content-Length`` as a number; None (``what`` None) or one line when it is none."""
    raw = response.headers.get("Content-Length") or "0"
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    if what is None:
        return None
    raise RegistryError(f"{what}: Content-Length {shown(raw, 40)!r} is not a number")


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def error_detail(response) -> str:
    """The registry's own words (``errors[].code: message``), short and escaped; "" when it said nothing usable
    (the body was read by the transport, at most 64 KiB)."""
    try:
        errors = json.loads(getattr(response, "body", b"") or b"null")
    except (ValueError, RecursionError):
        return ""
    errors = errors.get("errors") if isinstance(errors, dict) else None
    if not isinstance(errors, list):
        return ""
    said = [": ".join(str(e[k]) for k in ("code", "message") if isinstance(e.get(k), (str, int)))
            for e in errors[:3] if isinstance(e, dict)]
    return shown("; ".join(s for s in said if s))


class Session:
    """Requests to one registry, as ``registry`` (``host[:port]``) names it, with auth (see the module docstring)."""

    def __init__(self, registry: str, *, credentials: Credentials | None = None, ca_cert: Path | None = None,
                 timeout: float | None = None):
        self.registry = registry
        self._transport = Transport(registry, ca_cert=ca_cert, timeout=timeout)
        self._auth = Authenticator(registry, credentials if credentials is not None
                                   else (lambda: stored_credentials(registry)), self._transport.request)

    def _request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], what: str,
                 expect: tuple[int, ...], body: Callable[[], object] | bytes | None = None,
                 headers: dict[str, str] | None = None, limit: int | None = None, stream: tuple[int, ...] = ()):
        """One request with auth: on a 401 from the registry itself learn the challenge and retry once;
        RegistryError unless ``expect``. The body is read (``response.body``, at most ``limit`` bytes), except
        for the statuses in ``stream`` (see :meth:`Transport.request`). The Authorization header goes only to
        the registry's own origin: the transport drops it on the way to an upload Location or a redirect
        elsewhere, and a 401 from elsewhere is not a challenge to answer."""
        url = urljoin(self._transport.base + "/", path_or_url) if not path_or_url.startswith("http") else path_or_url
        for attempt in (1, 2):
            sent = dict(headers or {})
            sent.update(self._auth.headers(scopes))
            data = body() if callable(body) else body
            response = self._transport.request(method, url, what=what, headers=sent, data=data, stream=stream,
                                               **({"limit": limit} if limit is not None else {}))
            if (response.status_code == 401 and attempt == 1 and origin(response.url) == self._transport.origin
                    and self._auth.challenged(response, scopes, sent)):
                self._transport.release(response)
                continue
            break
        if response.status_code not in expect:
            self._transport.release(response)
            raise self._failure(response, what)
        return response

    def _failure(self, response, what: str) -> RegistryError:
        status, detail = response.status_code, error_detail(response)
        said = f" ({detail})" if detail else ""
        if status == 401:
            if self._auth.credentials is None:
                return RegistryError(f"registry {self.registry} needs credentials for {what}; "
                                     f"run `swcli login {self.registry}`")
            return RegistryError(f"registry {self.registry} refused the credentials for {what} (HTTP 401){said}")
        if status == 403:
            return RegistryError(f"registry {self.registry} denied {what} (HTTP 403){said}")
        error = TransferError if status >= 500 else RegistryError
        return error(f"registry {self.registry}: {what} failed: HTTP {status}{said}")

    @staticmethod
    def _scopes(repository: str, actions: str = "pull", *also: str) -> tuple[str, ...]:
        return (f"repository:{repository}:{actions}",) + tuple(f"repository:{r}:pull" for r in also)

    def _where(self, repository: str) -> str:
        return f"{self.registry}/{repository}"

    def _location(self, location: str, base: str, what: str) -> str:
        """An upload ``Location`` made absolute and checked (http(s), a host). It may name another origin (a
        registry may hand uploads to a storage front end): the transport sends no Authorization there."""
        return checked_url(urljoin(base, location), f"registry {self.registry}: {what}: the upload Location")
