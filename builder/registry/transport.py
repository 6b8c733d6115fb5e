"""HTTP to one registry: scheme, TLS trust, timeouts, one session per thread, and one-line error wording.

* Scheme: https always; plain http only for loopback hosts and hosts listed in ``$SWCLI_INSECURE_REGISTRIES``
  (comma separated ``host[:port]``), and then only when the host does not speak TLS (as Docker does for insecure
  registries). A certificate that fails verification is never skipped.
* Trust: the system CAs, plus ``ca_cert``, plus every ``*.crt`` in ``/etc/docker/certs.d/<host:port>/`` (the root
  is ``$SWCLI_DOCKER_CERTS_D`` when set), plus a client certificate ``*.cert``/``*.key`` pair found there.
* Timeouts: 10 s (or ``timeout`` if shorter) to connect and shake hands, then ``timeout`` between bytes
  (default ``$SWCLI_REGISTRY_TIMEOUT``, else 30 s).
* Errors: every failure to talk to the registry is a :class:`RegistryError` whose one line names the registry and
  what was being done (``what``), never a traceback from ``requests``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import threading
from pathlib import Path
from typing import Iterator

import requests
from requests.adapters import HTTPAdapter

from builder.errors import RegistryError

CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 30.0
CERTS_D = "/etc/docker/certs.d"
POOL_SIZE = 16  # connections kept per host: enough for the parallel layer uploads of one push


class TransferError(RegistryError):
    """The connection broke in the middle of a request, or the registry answered 5xx: another attempt may work."""


def certs_dir(registry: str) -> Path:
    return Path(os.environ.get("SWCLI_DOCKER_CERTS_D") or CERTS_D) / registry


def default_timeout() -> float:
    raw = os.environ.get("SWCLI_REGISTRY_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise RegistryError(f"SWCLI_REGISTRY_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise RegistryError(f"SWCLI_REGISTRY_TIMEOUT={raw!r} must be positive")
    return value


def plain_http_allowed(registry: str) -> bool:
    """Loopback hosts, and the hosts the user listed in $SWCLI_INSECURE_REGISTRIES."""
    listed = {h.strip() for h in os.environ.get("SWCLI_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    if registry in listed:
        return True
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 or registry.startswith("[") else registry
    host = host.strip("[]")
    if host == "localhost" or host in listed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class _TrustAdapter(HTTPAdapter):
    def __init__(self, context: ssl.SSLContext):
        self._context = context
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self._context
        return super().init_poolmanager(*args, **kwargs)


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
    return " ".join(text.split())[:160]


class Transport:
    """Requests to one registry, safe to use from several threads (each thread gets its own session)."""

    def __init__(self, registry: str, *, ca_cert: Path | None = None, timeout: float | None = None):
        self.registry = registry
        self.read_timeout = timeout if timeout is not None else default_timeout()
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
            session.mount("https://", _TrustAdapter(self._context))
            session.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE))
            self._local.session = session
        return session

    @property
    def base(self) -> str:
        """``https://registry`` or, for a loopback/insecure registry that does not speak TLS, ``http://registry``."""
        with self._lock:
            if self._base is None:
                self._base = self._probe()
            return self._base

    def _probe(self) -> str:
        https = f"https://{self.registry}"
        if not plain_http_allowed(self.registry):
            return https
        try:
            self.session().get(f"{https}/v2/", timeout=self.timeouts).close()
            return https
        except requests.exceptions.SSLError as err:
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                return https  # it speaks TLS with a certificate we do not trust: say so, do not downgrade
            return f"http://{self.registry}"
        except requests.exceptions.Timeout as err:
            with self.failures("the API check (GET /v2/)"):
                raise err  # a registry that hangs: say so now rather than wait a second time
        except requests.exceptions.RequestException:
            return https  # refused, unknown host...: the real request says so, naming what it was for

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, url: str, *, what: str, **kwargs) -> requests.Response:
        """One HTTP request; RegistryError naming the registry and ``what`` when it cannot be made or answered."""
        kwargs.setdefault("timeout", self.timeouts)
        with self.failures(what):
            return self.session().request(method, url, **kwargs)

    @contextlib.contextmanager
    def failures(self, what: str) -> Iterator[None]:
        """Turn what ``requests`` raises inside the block (also while streaming a body) into one RegistryError."""
        try:
            yield
        except requests.exceptions.SSLError as err:
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                raise RegistryError(
                    f"registry {self.registry}: its TLS certificate is not trusted ({_verify_reason(err)}); pass "
                    f"--ca-cert or put its CA in {certs_dir(self.registry)}/ca.crt") from None
            raise RegistryError(f"registry {self.registry}: TLS failed ({what}): {_cause(err)}") from None
        except requests.exceptions.ConnectTimeout:
            raise RegistryError(f"registry {self.registry} is unreachable: no connection within "
                                f"{self.timeouts[0]:g} s ({what})") from None
        except (requests.exceptions.ReadTimeout, TimeoutError):
            raise RegistryError(f"registry {self.registry} did not answer within {self.read_timeout:g} s ({what}); "
                                "raise SWCLI_REGISTRY_TIMEOUT if it is only slow") from None
        except requests.exceptions.ConnectionError as err:
            if "timed out" in str(err):
                raise RegistryError(f"registry {self.registry} did not answer within {self.read_timeout:g} s "
                                    f"({what}); raise SWCLI_REGISTRY_TIMEOUT if it is only slow") from None
            cause = _cause(err)
            if cause == "connection refused" or cause == "unknown host" or cause == "no route to host":
                raise RegistryError(f"registry {self.registry} is unreachable: {cause} ({what})") from None
            raise TransferError(f"registry {self.registry}: {what} broke off: {cause}") from None
        except (requests.exceptions.RequestException, OSError) as err:
            raise RegistryError(f"registry {self.registry}: {what} failed: {_cause(err)}") from None


def _verify_reason(err: BaseException) -> str:
    text = str(err)
    for reason in ("self-signed certificate in certificate chain", "self-signed certificate",
                   "unable to get local issuer certificate", "certificate has expired", "Hostname mismatch",
                   "IP address mismatch"):
        if reason in text:
            return reason
    return "certificate verify failed"
