"""How many CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (``--workers`` auto)."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path


def cpu_budget() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container's ``--cpus``, a
    Kubernetes CPU limit), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors (a limit may sit on a parent:
    a systemd slice, a pod above its container), v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when there is
    none, or nothing can be read."""
    quotas = [q for q in map(_quota_in, _cgroup_folders(root, membership)) if q is not None]
    return min(quotas, default=None)


def _cgroup_folders(root: Path, membership: Path) -> list[Path]:
    """The folders of this process's CPU cgroup and its ancestors, from ``/proc/self/cgroup`` (``0::/path`` for
    v2, ``N:cpu,cpuacct:/path`` for v1); the mount's root alone when that file says nothing."""
    bases: list[tuple[Path, Path]] = []
    with contextlib.suppress(OSError):
        for line in membership.read_text().splitlines():
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if controllers == "":
                mounts = [root]
            elif "cpu" in controllers.split(","):
                mounts = [root / controllers, root / "cpu"]  # v1: "cpu,cpuacct", usually with a "cpu" link
            else:
                continue
            bases += [(mount, Path(path.lstrip("/"))) for mount in mounts]
    folders = [mount / part for mount, rel in bases for part in (rel, *rel.parents)]
    return folders or [root, root / "cpu"]


def _quota_in(folder: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None
