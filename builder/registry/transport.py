"""HTTP to one registry: scheme, TLS trust, deadlines, bounded bodies, where credentials may go, one session
per thread, and one-line error wording. Every byte swcli exchanges with a registry or a token server goes through
:meth:`Transport.request`.

* Scheme: https always; plain http only for loopback hosts and hosts listed in ``$SWCLI_INSECURE_REGISTRIES``
  (comma separated ``host[:port]``), and then only when the host does not speak TLS (as Docker does for insecure
  registries). A certificate that fails verification is never skipped.
* Trust: the system CAs, plus ``ca_cert``, plus every ``*.crt`` in ``/etc/docker/certs.d/<host:port>/`` (the root
  is ``$SWCLI_DOCKER_CERTS_D`` when set), plus a client certificate ``*.cert``/``*.key`` pair found there.
* Time: 10 s (or ``timeout`` if shorter) to connect and shake hands, ``timeout`` between bytes (default
  ``$SWCLI_REGISTRY_TIMEOUT``, else 30 s), and a deadline for the whole exchange (:mod:`builder.registry.deadline`).
* Bodies: ``Accept-Encoding: identity``; an answer with any other ``Content-Encoding`` is refused before a byte of
  it is read (a 1 MB gzip body may inflate to 1 GB). Bodies are read here, up to a limit the caller names, checked
  while reading; only the statuses a caller streams (a blob's 200) are handed over unread.
* Credentials: an ``Authorization`` header (and ``auth=``) goes only to the origin (scheme, host, port) it belongs
  to: the registry's, or the token realm the caller names. Redirects are followed here (GET and HEAD, at most
  :data:`MAX_REDIRECTS`); a hop to another origin carries none.
* Errors: every failure to talk to the registry is a :class:`RegistryError` whose one line names the registry and
  what was being done (``what``), never a traceback from ``requests``; text the registry wrote is cut to 200
  characters with its control characters escaped (:func:`shown`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from builder.errors import RegistryError
from builder.registry import deadline
from builder.registry.hosts import (RegistrySettingError, checked_url, default_timeout, min_rate, origin,  # noqa: F401
                                    plain_http_allowed, shown)

CONNECT_TIMEOUT = 10.0
CERTS_D = "/etc/docker/certs.d"
POOL_SIZE = 16  # connections kept per host: enough for the parallel layer uploads of one push
MAX_REDIRECTS = 5
SMALL_BODY = 64 << 10  # the most read of an answer whose body we do not need (an error, a 202): its first words
PIECE = 64 << 10       # bytes read at a time from a small answer
BIG_PIECE = 256 << 10  # bytes a blob is read, or an upload sent, at a time
REDIRECTS = (301, 302, 303, 307, 308)


class TransferError(RegistryError):
    """The connection broke in the middle of a request, or the registry answered 5xx: another attempt may work."""


def certs_dir(registry: str) -> Path:
    return Path(os.environ.get("SWCLI_DOCKER_CERTS_D") or CERTS_D) / registry


def _ssl_context(registry: str, ca_cert: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()  # the system CAs
    extra = [Path(ca_cert)] if ca_cert else []
    folder = certs_dir(registry)
    if folder.is_dir():
        extra += sorted(folder.glob("*.crt"))
        for cert in sorted(folder.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.exists():
                context.load_cert_chain(cert, key)
    for path in extra:
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as err:
            raise RegistryError(f"CA certificate {path} for {registry} is unreadable: {err}") from None
    return context


# --- connections that the deadline watchdog can cut ----------------------------------------------------------

class _Watched:
    def connect(self):
        deadline.attach(self)
        return super().connect()

    def request(self, *args, **kwargs):
        deadline.attach(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def __init__(self, context: ssl.SSLContext | None):
        self._context = context
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def init_poolmanager(self, *args, **kwargs):
        if self._context is not None:
            kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def _cause(err: BaseException) -> str:
    text = str(err)
    for needle, said in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                         ("nodename nor servname", "unknown host"), ("Temporary failure in name resolution",
                                                                       "unknown host"),
                         ("No route to host", "no route to host"), ("Connection reset", "connection reset"),
                         ("RemoteDisconnected", "connection closed by the registry"),
                         ("IncompleteRead", "connection closed mid-transfer"),
                         ("Broken pipe", "connection closed by the registry")):
        if needle in text:
            return said
    return shown(text, 160)


class _Counted:
    """A request body (an iterable with a length) that reports what was sent to the exchange's watch."""

    def __init__(self, body, watch: deadline.Watch):
        self.body, self.watch = body, watch

    def __len__(self) -> int:
        return len(self.body)

    def __iter__(self):
        for piece in self.body:
            yield piece
            self.watch.progress(len(piece))  # asked for the next piece: this one is sent


class Transport:
    """Requests to one registry, safe to use from several threads (each thread gets its own session)."""

    def __init__(self, registry: str, *, ca_cert: Path | None = None, timeout: float | None = None):
        self.registry = registry
        self.read_timeout = timeout if timeout is not None else default_timeout()
        self.min_rate = min_rate()
        # connecting includes the TLS handshake: a registry that accepts and then says nothing must not get 10 s
        # when the user asked for 2
        self.timeouts = (min(CONNECT_TIMEOUT, self.read_timeout), self.read_timeout)
        self.ca_cert = ca_cert
        self._context = _ssl_context(registry, ca_cert)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._base: str | None = None

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "swcli"
            session.headers["Accept-Encoding"] = "identity"
            session.mount("https://", _Adapter(self._context))
            session.mount("http://", _Adapter(None))
            self._local.session = session
        return session

    @property
    def base(self) -> str:
        """``https://registry`` or, for a loopback/insecure registry that does not speak TLS, ``http://registry``."""
        with self._lock:
            if self._base is None:
                self._base = self._probe()
            return self._base

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin(self.base)

    def _probe(self) -> str:
        https = f"https://{self.registry}"
        if not plain_http_allowed(self.registry):
            return https
        what = "the API check (GET /v2/)"
        try:
            with deadline.watching(self._watch(0)) as watch, self.failures(what, watch, quiet=True):
                self.session().get(f"{https}/v2/", timeout=self.timeouts, allow_redirects=False, stream=True).close()
            return https
        except _Quiet as quiet:
            err = quiet.err
        if isinstance(err, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                return https  # it speaks TLS with a certificate we do not trust: say so, do not downgrade
            return f"http://{self.registry}"
        if isinstance(err, (requests.exceptions.Timeout, _TooSlow)):
            with self.failures(what):
                raise err  # a registry that hangs: say so now rather than wait a second time
        return https  # refused, unknown host...: the real request says so, naming what it was for

    def url(self, path: str) -> str:
        return self.base + path

    def _watch(self, slack: int) -> deadline.Watch:
        return deadline.Watch(self.read_timeout, self.min_rate, max(slack, PIECE))

    def request(self, method: str, url: str, *, what: str, headers: dict[str, str] | None = None,
                limit: int = SMALL_BODY, stream: tuple[int, ...] = (), credentials_for: str | None = None,
                auth=None, data=None, **kwargs) -> requests.Response:
        """One exchange, redirects followed (GET and HEAD), under a deadline; RegistryError naming the registry
        and ``what`` when it cannot be made or answered.

        The body is read here into ``response.body`` (at most ``limit`` bytes for a 2xx, :data:`SMALL_BODY` for
        anything else; ``response.truncated`` says there was more, and the rest is not read), unless the status is
        in ``stream``: then the caller reads it with :meth:`chunks`, which also ends the deadline.
        ``Authorization`` and ``auth`` go only to the origin of ``credentials_for`` (default: the registry)."""
        allowed = origin(credentials_for) if credentials_for else self.origin
        big = bool(stream) or (data is not None and not isinstance(data, (bytes, dict)))
        watch = self._watch(BIG_PIECE if big else len(data) if isinstance(data, bytes) else 0)
        with contextlib.ExitStack() as scope:
            scope.enter_context(deadline.watching(watch))
            with self.failures(what, watch):
                response = self._follow(method, url, allowed, watch, headers or {}, auth, data, kwargs, what)
                if response.status_code in stream:
                    response.watch, response.what, response.scope = watch, what, scope.pop_all()
                    return response
                response.body, response.truncated = self._read(response, watch,
                                                               limit if response.status_code < 300 else SMALL_BODY)
                if watch.expired:
                    raise _TooSlow()
                return response

    def _follow(self, method, url, allowed, watch, headers, auth, data, kwargs, what) -> requests.Response:
        session = self.session()
        if data is not None and not isinstance(data, (bytes, dict)):
            data = _Counted(data, watch)
        for hop in range(MAX_REDIRECTS + 1):
            mine = origin(url) == allowed
            sent = headers if mine else {k: v for k, v in headers.items() if k.lower() != "authorization"}
            response = session.request(method, url, headers=sent, auth=auth if mine else None, data=data,
                                       stream=True, allow_redirects=False, timeout=self.timeouts, **kwargs)
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity") and method != "HEAD":
                response.close()
                raise RegistryError(f"registry {self.registry} answered {what} with Content-Encoding "
                                    f"{shown(encoding, 40)!r}; swcli asks for and accepts only identity")
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or method not in ("GET", "HEAD") or not location:
                return response
            self._read(response, watch, SMALL_BODY)
            if hop == MAX_REDIRECTS:
                raise RegistryError(f"registry {self.registry}: {what}: more than {MAX_REDIRECTS} redirects")
            url = checked_url(urljoin(url, location), f"registry {self.registry}: {what}: the redirect")
            kwargs.pop("params", None)  # the Location carries its own query
        raise AssertionError("unreachable")

    def _read(self, response, watch: deadline.Watch, limit: int) -> tuple[bytes, bool]:
        """At most ``limit`` bytes of the body, and whether there was more (then the connection is dropped)."""
        parts, size = [], 0
        try:
            while size <= limit:
                piece = response.raw.read(min(PIECE, limit + 1 - size), decode_content=False)
                if not piece:
                    break
                parts.append(piece)
                size += len(piece)
                watch.progress(len(piece))
        finally:
            response.close()
        data = b"".join(parts)
        return data[:limit], len(data) > limit

    def chunks(self, response, size: int) -> Iterator[bytes]:
        """The body of a streamed answer (see :meth:`request`) in pieces of ``size`` bytes, under its deadline;
        closing the generator (or reaching the end) closes the answer and ends the deadline."""
        watch = response.watch
        try:
            with self.failures(response.what, watch):
                while True:
                    piece = response.raw.read(size, decode_content=False)
                    if watch.expired:
                        raise _TooSlow()
                    if not piece:
                        return
                    watch.progress(len(piece))
                    yield piece
        finally:
            response.close()
            response.scope.close()

    def release(self, response) -> None:
        """Close a streamed answer that will not be read, and end its deadline."""
        if hasattr(response, "scope"):
            response.close()
            response.scope.close()

    def too_slow(self, what: str, watch: deadline.Watch) -> RegistryError:
        return RegistryError(
            f"registry {self.registry}: {what} was too slow: {watch.done} bytes in {watch.elapsed():.0f} s (swcli "
            f"allows {self.read_timeout:g} s plus the time the bytes take at {self.min_rate / 1024:g} KiB/s; raise "
            "SWCLI_REGISTRY_TIMEOUT or lower SWCLI_REGISTRY_MIN_RATE if it is only slow)")

    @contextlib.contextmanager
    def failures(self, what: str, watch: deadline.Watch | None = None, quiet: bool = False) -> Iterator[None]:
        """Turn what ``requests`` or ``urllib3`` raise inside the block (also while streaming a body) into one
        RegistryError; a watch that expired meanwhile makes it "too slow", whatever the broken socket raised."""
        try:
            yield
        except RegistryError:
            if watch is not None and watch.expired:
                raise self.too_slow(what, watch) from None
            raise
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError, ValueError, _TooSlow) as err:
            if quiet:
                raise _Quiet(_TooSlow() if watch is not None and watch.expired else err) from None
            if watch is not None and watch.expired or isinstance(err, _TooSlow):
                raise self.too_slow(what, watch or self._watch(0)) from None
            raise self._wording(err, what) from None

    def _wording(self, err: BaseException, what: str) -> RegistryError:
        if isinstance(err, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                return RegistryError(
                    f"registry {self.registry}: its TLS certificate is not trusted ({_verify_reason(err)}); pass "
                    f"--ca-cert or put its CA in {certs_dir(self.registry)}/ca.crt")
            return RegistryError(f"registry {self.registry}: TLS failed ({what}): {_cause(err)}")
        if isinstance(err, requests.exceptions.ConnectTimeout):
            return RegistryError(f"registry {self.registry} is unreachable: no connection within "
                                 f"{self.timeouts[0]:g} s ({what})")
        timed_out = (requests.exceptions.ReadTimeout, TimeoutError, urllib3.exceptions.ReadTimeoutError)
        if isinstance(err, timed_out) or (isinstance(err, requests.exceptions.ConnectionError)
                                          and "timed out" in str(err)):
            return RegistryError(f"registry {self.registry} did not answer within {self.read_timeout:g} s ({what}); "
                                 "raise SWCLI_REGISTRY_TIMEOUT if it is only slow")
        if isinstance(err, (requests.exceptions.ConnectionError, urllib3.exceptions.ProtocolError,
                            http.client.HTTPException, ConnectionError)):
            cause = _cause(err)
            if cause in ("connection refused", "unknown host", "no route to host"):
                return RegistryError(f"registry {self.registry} is unreachable: {cause} ({what})")
            return TransferError(f"registry {self.registry}: {what} broke off: {cause}")
        return RegistryError(f"registry {self.registry}: {what} failed: {_cause(err)}")


class _TooSlow(Exception):
    """The exchange's watch expired (its socket was cut)."""


class _Quiet(Exception):
    def __init__(self, err: BaseException):
        super().__init__(str(err))
        self.err = err


def _verify_reason(err: BaseException) -> str:
    text = str(err)
    for reason in ("self-signed certificate in certificate chain", "self-signed certificate",
                   "unable to get local issuer certificate", "certificate has expired", "Hostname mismatch",
                   "IP address mismatch"):
        if reason in text:
            return reason
    return "certificate verify failed"
