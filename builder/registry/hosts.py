"""Whom swcli talks to, and how: the user's settings for it (timeouts, rates: a bad value is exit 2), which
hosts may be plain http, the origin credentials are tied to, the URLs a registry may send us to, and how the
text a peer wrote is shown in a message (escaped, capped)."""

from __future__ import annotations

import ipaddress
import math
import os
from urllib.parse import urlsplit

from builder.errors import RegistryError, SwcliError
from builder.text import clipped

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 86400.0  # a day: more is no timeout at all (and overflows the socket's)
MIN_RATE = 32 << 10    # bytes/s: 256 kbit/s, below any link a registry is used over (builder.registry.deadline)
SHOWN = 200            # characters of a registry's own text that go into a message


class RegistrySettingError(SwcliError):
    """A setting the user gave (an environment variable, a registry argument) is not one: a usage error, exit 2,
    like a bad flag value, not a registry's failure."""

    exit_code = 2


def shown(text: object, limit: int = SHOWN) -> str:
    """Text a registry (or a helper) wrote, fit for one line of a message: whitespace runs collapsed, then
    :func:`builder.text.clipped`."""
    return clipped(" ".join(str(text).split()), limit)


def positive_setting(name: str, default: float, maximum: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise RegistrySettingError(f"{name}={shown(raw, 40)!r}: expected a number of "
                                   f"{'seconds' if 'TIMEOUT' in name else 'bytes per second'} above 0 and at most "
                                   f"{maximum:g}")
    return value


def default_timeout() -> float:
    """``$SWCLI_REGISTRY_TIMEOUT`` (seconds, finite, above 0, at most a day), else 30 s; a bad value is exit 2."""
    return positive_setting("SWCLI_REGISTRY_TIMEOUT", DEFAULT_TIMEOUT, MAX_TIMEOUT)


def min_rate() -> float:
    """``$SWCLI_REGISTRY_MIN_RATE`` (bytes/s), else :data:`MIN_RATE`; a bad value is exit 2."""
    return positive_setting("SWCLI_REGISTRY_MIN_RATE", MIN_RATE, float(1 << 40))


def _host(registry: str) -> str:
    """``host`` of ``host[:port]`` (``[v6]:port`` too), lower case, without brackets."""
    return urlsplit(f"//{registry}").hostname or ""


def insecure_listed(registry: str) -> bool:
    """Whether the user listed ``registry`` (``host:port``, or its host alone) in $SWCLI_INSECURE_REGISTRIES."""
    listed = {h.strip().lower() for h in os.environ.get("SWCLI_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    return registry.lower() in listed or _host(registry) in listed


def is_loopback(registry: str) -> bool:
    host = _host(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_allowed(registry: str) -> bool:
    """Loopback hosts, and the hosts the user listed in $SWCLI_INSECURE_REGISTRIES."""
    return insecure_listed(registry) or is_loopback(registry)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL: what credentials are tied to."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme, 0)


def checked_url(url: str, what: str) -> str:
    """``url`` when it is an http(s) URL with a host (a Location, a redirect, a token realm); else one line."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ord(c) < 33 for c in url):
        raise RegistryError(f"{what} {shown(url, 100)!r} is not an http(s) URL")
    return url
