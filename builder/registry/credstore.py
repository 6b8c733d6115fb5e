"""Where logins live: the one owner of the Docker config and the credential helpers it names, read and written
the way the Docker CLI does, with bounds on both (the file may be anything the user, or another program, left there).

* :func:`stored_credentials` reads a registry's login for push, pull and copy: a per-registry ``credHelpers`` entry
  wins over the global ``credsStore``, which wins over the inline ``auths`` entry (base64 ``auth``, or
  ``username``/``password``, or ``identitytoken``). :func:`store_login` (`swcli login`) and :func:`forget_login`
  (`swcli logout`) write it, keeping every other key of the file as it was.

* ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``) is opened without blocking and must be a
  regular file of at most :data:`MAX_CONFIG_FILE` bytes: a FIFO, a device or a folder there is one line, not a
  hang. It is written to a fresh temp file in its folder (``O_EXCL``, mode 0600, never through a link) and renamed
  into place.
* A registry is named ``host[:port]`` (:func:`registry_problem`, Docker's domain grammar). Keys in ``auths`` and
  ``credHelpers`` match with or without a scheme and a trailing ``/``, ``/v1/`` or ``/v2/``
  (``https://reg.example:5000/v1/`` is ``reg.example:5000``), for reading, writing and forgetting alike.
* ``docker-credential-<helper> get|store|erase`` runs in its own session with stdin, a timeout
  (``$SWCLI_CREDENTIAL_HELPER_TIMEOUT``, default 60 s) and its whole process group killed when it is exceeded.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from builder.errors import RegistryError
from builder.refs import _DOMAIN
from builder.registry.hosts import RegistrySettingError, positive_setting, shown

MAX_CONFIG_FILE = 1 << 20  # bytes: a config with a thousand logins is ~100 KB
HELPER_TIMEOUT = 60.0      # seconds: a helper may ask the user to unlock a keychain; $SWCLI_CREDENTIAL_HELPER_TIMEOUT
MAX_HELPER_ANSWER = 1 << 20
HELPER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REGISTRY_RE = re.compile(_DOMAIN)
IDENTITY_TOKEN_USER = "<token>"  # what Docker stores as the username when the secret is an identity token


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # or an identity token (username "<token>")

    @property
    def is_identity_token(self) -> bool:
        return self.username == IDENTITY_TOKEN_USER


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``: where the Docker CLI keeps logins."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def registry_problem(registry: object) -> str | None:
    """Why ``registry`` is not a ``host[:port]`` to log in to (a scheme, a path, spaces, control characters, an
    empty host...), or None."""
    if not isinstance(registry, str) or not registry:
        return "a registry must be host[:port], e.g. registry.example or 127.0.0.1:5000"
    if not REGISTRY_RE.fullmatch(registry) or len(registry) > 255:
        return (f"{shown(registry, 100)!r} is not a registry: expected host[:port] (no scheme, path or spaces), e.g. "
                "registry.example or 127.0.0.1:5000")
    port = registry.rpartition(":")[2] if not registry.endswith("]") and ":" in registry else None
    if port is not None and not 0 < int(port) < 65536:
        return f"{registry!r}: port {port} is not between 1 and 65535"
    return None


def checked_registry(registry: object) -> str:
    problem = registry_problem(registry)
    if problem:
        raise RegistrySettingError(problem)
    return registry  # type: ignore[return-value]


def key_of(key: object) -> str | None:
    """The registry a config key names (``https://reg:5000/v1/`` -> ``reg:5000``), or None for a non-string."""
    if not isinstance(key, str):
        return None
    key = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", key).rstrip("/")
    for suffix in ("/v1", "/v2"):
        key = key.removesuffix(suffix)
    return key.rstrip("/").lower()


def keys_for(table: object, registry: str) -> list[str]:
    """The keys of ``table`` that name ``registry``, the exact one first."""
    if not isinstance(table, dict):
        return []
    want = registry.lower()
    return sorted((k for k in table if key_of(k) == want), key=lambda k: k != registry)


def lookup(table: object, registry: str):
    """The entry of ``table`` for ``registry``, whatever scheme or trailing path its key was written with."""
    keys = keys_for(table, registry)
    return table[keys[0]] if keys else None  # type: ignore[index]


def read_config(path: Path | None = None) -> dict:
    """The Docker config as a dict; {} when there is none. One line for anything else: not a regular file, more
    than :data:`MAX_CONFIG_FILE`, not JSON, not an object."""
    path = path or docker_config_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RegistryError(f"{path}: not a readable Docker config ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RegistryError(f"{path}: not a regular file; a Docker config is a JSON file")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(MAX_CONFIG_FILE + 1)
        except OSError as err:
            raise RegistryError(f"{path}: not a readable Docker config ({err.strerror})") from None
    if len(data) > MAX_CONFIG_FILE:
        raise RegistryError(f"{path}: larger than {MAX_CONFIG_FILE >> 20} MiB; not a Docker config")
    try:
        config = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise RegistryError(f"{path}: not a readable Docker config ({shown(err, 100)})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: not a Docker config (expected a JSON object)")
    return config


def write_config(path: Path, config: dict) -> None:
    """Write the config readable by its owner only (it may hold base64 credentials), in one rename, from a temp
    file of an unpredictable name created exclusively (a link planted in the folder is never written through)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(config, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def helper_for(config: dict, registry: str, path: Path) -> str | None:
    """The credential helper for ``registry``: its ``credHelpers`` entry, else ``credsStore``; checked."""
    helper = lookup(config.get("credHelpers"), registry) or config.get("credsStore")
    if helper is None or helper == "":
        return None
    if not isinstance(helper, str) or not HELPER_RE.fullmatch(helper):
        raise RegistryError(f"{path}: credential helper {shown(helper, 60)!r} for {registry} is not a helper name")
    return helper


def _from_helper(helper: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get`` (stdin: the server) for the credentials of ``registry``."""
    program = f"docker-credential-{helper}"
    status, out = run_helper(helper, "get", registry.encode(), registry)
    if status != 0:
        if b"credentials not found" in out.lower():
            return None
        raise RegistryError(f"credential helper {program} failed for {registry}: {helper_said(out, status)}")
    try:
        answer = json.loads(out)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise RegistryError(f"credential helper {program} answered {registry} with no Username/Secret JSON") from None
    if not isinstance(secret, str) or not isinstance(username, (str, type(None))):
        raise RegistryError(f"credential helper {program} answered {registry} with a Username/Secret that is not text")
    if not secret:
        return None
    return Credentials(username or IDENTITY_TOKEN_USER, secret)


def _from_auths(entry: object, registry: str, config) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return Credentials(IDENTITY_TOKEN_USER, str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            username, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise RegistryError(f"{config}: the 'auth' of {registry} is not base64 of USER:PASSWORD")
        return Credentials(username, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def stored_credentials(registry: str) -> Credentials | None:
    """The credentials ``docker login``/``swcli login`` stored for ``registry``; None when there are none."""
    path = docker_config_path()
    config = read_config(path)
    helper = helper_for(config, registry, path)
    if helper:
        found = _from_helper(helper, registry)
        if found is not None:
            return found
    return _from_auths(lookup(config.get("auths"), registry), registry, path)


def store_login(registry: str, username: str, password: str, check: Callable[[Credentials], None]) -> Path:
    """`swcli login`: ``check(credentials)`` (the registry's ``GET /v2/`` with them), then store them the way
    `docker login` does, so both tools share one login: through the configured credential helper when there is one
    (an empty ``auths`` entry says the registry has a login), otherwise base64 in ``auths``; under the bare
    ``host[:port]``, replacing every key that names the registry, keeping every other key. The registry must be
    ``host[:port]`` (exit 2 otherwise; nothing is sent or stored), and the config is read before ``check``, so a
    config that cannot be written back fails before the registry sees the password. Where the config is."""
    checked_registry(registry)
    if not username or not password:
        raise RegistryError(f"login to {registry} needs a username and a non-empty password")
    path = docker_config_path()
    config = read_config(path)
    helper = helper_for(config, registry, path)
    try:
        check(Credentials(username, password))
    except RegistryError as err:
        raise RegistryError(f"login to {registry} failed: {err}") from None
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    for key in keys_for(auths, registry):  # one entry per registry, under its bare name
        del auths[key]
    if helper:
        helper_store(helper, registry, username, password)
        auths[registry] = {}
    else:
        auths[registry] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    config["auths"] = auths
    write_config(path, config)
    return path


def forget_login(registry: str) -> bool:
    """`swcli logout`: forget the stored credentials of ``registry`` (every key naming it, with or without a scheme,
    and the helper's secret); False when there were none."""
    checked_registry(registry)
    path = docker_config_path()
    config = read_config(path)
    helper = helper_for(config, registry, path)
    known = helper is not None and helper_erase(helper, registry)
    auths = config.get("auths")
    keys = keys_for(auths, registry)
    for key in keys:
        del auths[key]
    if keys:
        write_config(path, config)
    return known or bool(keys)


def helper_timeout() -> float:
    return positive_setting("SWCLI_CREDENTIAL_HELPER_TIMEOUT", HELPER_TIMEOUT, 86400.0)


def run_helper(helper: str, action: str, stdin: bytes, registry: str) -> tuple[int, bytes]:
    """``docker-credential-<helper> <action>`` with ``stdin``: (exit status, stdout, at most 1 MiB). One line when
    it is missing or does not finish within the timeout (its whole process group is killed then)."""
    program, timeout = f"docker-credential-{helper}", helper_timeout()
    try:
        proc = subprocess.Popen([program, action], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise RegistryError(f"credential helper {program} for {registry} is not on PATH") from None
    except OSError as err:
        raise RegistryError(f"credential helper {program} for {registry} cannot run: {err.strerror}") from None
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise RegistryError(f"credential helper {program} did not finish {action!r} for {registry} within "
                            f"{timeout:g} s (SWCLI_CREDENTIAL_HELPER_TIMEOUT)") from None
    return proc.returncode, out[:MAX_HELPER_ANSWER]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    proc.wait()


def helper_said(out: bytes, status: int) -> str:
    return shown(out.decode(errors="replace")) or f"exit status {status}"


def helper_store(helper: str, registry: str, username: str, secret: str) -> None:
    answer = json.dumps({"ServerURL": registry, "Username": username, "Secret": secret}).encode()
    status, out = run_helper(helper, "store", answer, registry)
    if status != 0:
        raise RegistryError(f"credential helper docker-credential-{helper} could not store {registry}: "
                            f"{helper_said(out, status)}")


def helper_erase(helper: str, registry: str) -> bool:
    """Forget ``registry`` in the helper; False when it had nothing."""
    status, out = run_helper(helper, "erase", registry.encode(), registry)
    if status == 0:
        return True
    if b"credentials not found" in out.lower():
        return False
    raise RegistryError(f"credential helper docker-credential-{helper} could not erase {registry}: "
                        f"{helper_said(out, status)}")
