"""The environment lock: what an env holds, exported once per build into the model or runtime entry (``env.lock``).

:func:`export_env_lock` is the one exporter, for model and runtime builds alike. A conda env gives
``conda env export`` (or its conda-meta records when conda is not installed), any other env ``pip freeze`` (or its
dist-info records when it has no pip). A failure is one :class:`EnvLockError` line that names the env and the
command and says how to build without a lock (``--skip-gen-env``). A lock is remembered per env state under
``$SWCLI_HOME/cache/locks``, so an unchanged env is not frozen again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.errors import SwcliError
from builder.files import write_bytes_atomic
from builder.images.env import site_packages_of

SKIP_HINT = "pass --skip-gen-env to build without a lock"


class EnvLockError(SwcliError):
    """Exporting an environment's lock failed; the message says how to build without one."""


@dataclass(frozen=True)
class EnvLock:
    kind: str  # "pip-freeze", "dist-info" (a venv without pip), "conda-env-export" or "conda-meta"
    text: str


def _conda_meta_list(prefix: Path) -> str:
    lines = ["# conda packages (from conda-meta; conda itself is not installed here)"]
    for rec in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            info = json.loads(rec.read_text(encoding="utf-8"))
            lines.append(f"{info['name']}=={info['version']}={info.get('build', '')}")
        except (ValueError, KeyError, TypeError) as err:
            raise EnvLockError(f"{rec}: not a conda package record ({type(err).__name__}: {err}); {SKIP_HINT}") from None
    return "\n".join(lines) + "\n"


def _dist_info_list(prefix: Path) -> str:
    import importlib.metadata as md

    site = site_packages_of(prefix)
    names = {(d.metadata["Name"] or "").lower(): f"{d.metadata['Name']}=={d.version}" for d in md.distributions(path=[str(site)])}
    return "".join(f"{names[k]}\n" for k in sorted(names) if k)


def export_env_lock(prefix: Path | None = None, *, run: Callable = subprocess.run) -> EnvLock:
    """The lock of the env at ``prefix`` (default: the running interpreter's env), exported once.

    A conda env: ``conda env export`` when conda is on PATH, else its conda-meta package records. Any other env:
    ``pip freeze --exclude-editable`` with the env's own python, or its dist-info records when it has no pip.
    A failure (no python, pip crashing, a timeout) is an :class:`EnvLockError` line naming the env and the command.
    """
    python = Path(sys.executable) if prefix is None else Path(prefix) / "bin" / "python"
    prefix = Path(sys.prefix) if prefix is None else Path(prefix)
    conda = shutil.which("conda")
    if (prefix / "conda-meta").is_dir():
        if conda is None:
            return EnvLock("conda-meta", _conda_meta_list(prefix))
        cmd, kind = [conda, "env", "export", "--prefix", str(prefix)], "conda-env-export"
    elif not python.exists():
        raise EnvLockError(f"{prefix}: no bin/python to run 'pip freeze' with; {SKIP_HINT}")
    else:
        cmd, kind = [str(python), "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"], "pip-freeze"
    shown = " ".join(cmd[:1] + cmd[1:4])
    memo = _lock_memo(prefix, kind) if run is subprocess.run else None
    if memo is not None and memo.is_file():
        return EnvLock(kind, memo.read_text(encoding="utf-8"))
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvLockError(f"{prefix}: exporting the environment lock ('{shown}') failed: {err}; {SKIP_HINT}") from None
    if proc.returncode != 0:
        if kind == "pip-freeze" and "No module named pip" in proc.stderr:
            return EnvLock("dist-info", _dist_info_list(prefix))
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvLockError(f"{prefix}: '{shown}' exited {proc.returncode}: {last}; {SKIP_HINT}")
    if memo is not None:
        with contextlib.suppress(SwcliError):  # a store that cannot remember only costs the next build a freeze
            write_bytes_atomic(memo, proc.stdout.encode("utf-8"))
    return EnvLock(kind, proc.stdout)


def _lock_memo(prefix: Path, kind: str) -> Path | None:
    """Where the lock of ``prefix`` is remembered, keyed by what `pip freeze` reads: the env's distribution
    metadata folders (their names carry the versions) and their mtimes. None when the env cannot be read."""
    from builder.store import swcli_home

    h = hashlib.sha256(f"{kind}\0{prefix}\n".encode())
    try:
        for site in sorted(prefix.glob("lib/python3*/site-packages")):
            for entry in sorted(os.scandir(site), key=lambda e: e.name):
                if entry.name.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")):
                    h.update(f"{entry.name}\0{entry.stat().st_mtime_ns}\n".encode())
    except OSError:
        return None
    return swcli_home() / "cache" / "locks" / f"{h.hexdigest()}.txt"
