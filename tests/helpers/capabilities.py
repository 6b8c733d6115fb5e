"""What a test needs from the machine, probed once per session: the capability markers of pyproject.toml.

``tests/conftest.py`` turns a marker whose capability is missing into a skip, or into a failure on CI
(``CI=true``), where ``make test`` provides every one of them. Tests never probe for themselves; a fixture that
needs a capability says so with ``@needs(marker)`` and its tests carry the marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Callable

import pytest

from tests.helpers.engine import BASE, engine_or_none


def _tools(*names: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        absent = [name for name in names if shutil.which(name) is None]
        return f"{', '.join(absent)} not on PATH" if absent else None

    return probe


def _docker() -> str | None:
    client = engine_or_none()
    if client is None:
        return "no Docker engine answers a ping"
    try:
        import docker

        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        return f"{BASE} is not in the engine (make base-image)"
    finally:
        client.close()
    return None


def _browser() -> str | None:
    return None if chromium() else "chromium is not installed"


def _mmdebstrap() -> str | None:
    return _tools("mmdebstrap")() or (None if os.geteuid() == 0 else "mmdebstrap needs root")


def _tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    with tempfile.TemporaryDirectory(prefix="swcli-tmpfs-probe-") as folder:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder], capture_output=True, text=True)
        if res.returncode != 0:
            return f"cannot mount a tmpfs: {res.stderr.strip()}"
        subprocess.run(["umount", folder], check=True)
    return None


def _gnu_time() -> str | None:
    return None if os.access("/usr/bin/time", os.X_OK) else "/usr/bin/time is not installed"


def _base_rootfs() -> str | None:
    from builder.images.base_image import rootfs_available

    return None if rootfs_available() else "the base rootfs is neither cached nor buildable here (make base-image)"


# marker -> probe: None when the capability is there, else why not
PROBES: dict[str, Callable[[], str | None]] = {
    "docker": _docker,
    "registry": _tools("docker-registry", "htpasswd", "openssl", "skopeo"),
    "browser": _browser,
    "skopeo": _tools("skopeo"),
    "umoci": _tools("umoci"),
    "mmdebstrap": _mmdebstrap,
    "base_rootfs": _base_rootfs,
    "tmpfs": _tmpfs,
    "gnu_time": _gnu_time,
}
_seen: dict[str, str | None] = {}


def missing(marker: str) -> str | None:
    """Why the capability of ``marker`` is missing here (probed on first use), or None."""
    if marker not in _seen:
        _seen[marker] = PROBES[marker]()
    return _seen[marker]


def require(marker: str) -> None:
    """Skip the running test when the capability of ``marker`` is missing here; fail it on CI (``CI=true``),
    which provides every one. The capability markers come here from tests/conftest.py."""
    why = missing(marker)
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"capability `{marker}` missing on CI: {why}", pytrace=False)
    pytest.skip(f"capability `{marker}` missing: {why}")


def needs(marker: str):
    """Mark a fixture function: every test that asks for it (directly or through another fixture) carries
    ``marker``. Goes under ``@pytest.fixture``."""
    assert marker in PROBES, marker

    def mark(func):
        func.capability = marker
        return func

    return mark


def chromium() -> str | None:
    """The headless browser's executable, if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")
