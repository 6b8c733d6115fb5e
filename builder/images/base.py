"""The base image's root filesystem from Debian packages, as a reproducible, cached tar.

``base_rootfs(packages, cache_dir=...)`` runs mmdebstrap (variant minbase; python3, ca-certificates and the extra
packages; a user ``swcli``, uid 1000) into an uncompressed tar. The same inputs give byte-identical tars:

- ``SOURCE_DATE_EPOCH`` is fixed (:data:`SOURCE_DATE_EPOCH`). mmdebstrap then clamps every mtime to it and writes
  the entries in a stable order, and ``useradd`` takes the last-change day in ``/etc/shadow`` from it.
- mmdebstrap's own cleanup leaves no apt lists, no downloaded ``.deb``, no apt logs and no ldconfig aux-cache;
  minbase has no ``/etc/machine-id``. ``tests/images/test_base_rootfs.py`` checks that the tars of two runs are equal.
- What stays outside our control is the archive: two runs a month apart see different package versions on a
  moving mirror. Pass ``mirror`` (a dated ``snapshot.debian.org`` URL) to pin it; the mirror is part of the key.

The tar is cached under ``cache_dir`` as ``<key>.tar`` where the key is the sha256 of the suite, the mirror, the
machine, the sorted package list and :data:`RECIPE`; ``<key>.json`` beside it records the Python version read from
the rootfs. Both are written to temp files and renamed, the tar last, so a tar under its final name is complete.
A killed run leaves only ``.<key>.<pid>.tmp`` files, removed by the next call once that pid is gone.

``python -m builder.images.base --out DIR [PKG...]`` prints the tar's path (used by runtime_images/build-base.sh).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from builder.errors import SwcliError
from builder.files import pid_alive

# 2023-06-10 00:00:00 UTC, the day Debian 12 "bookworm" was released. Not 0: shadow reads a last-change day of 0
# as "the password must be changed at the next login", and tools treat epoch 0 as "no date".
SOURCE_DATE_EPOCH = 1686355200
# Bump whenever the mmdebstrap command or its hooks change: cached tars of the old recipe are then not reused.
RECIPE = "swcli-base/1"
BASE_PACKAGES = ("ca-certificates", "python3")
USER_HOOK = 'chroot "$1" useradd --uid 1000 --create-home --shell /bin/sh swcli'

# Debian policy 5.6.1 (names) and 5.6.12 (versions: [epoch:]upstream[-revision]); a colon in the upstream part
# only with an epoch, a hyphen in it only with a revision.
_NAME = r"[a-z0-9][a-z0-9+.-]+"
_VERSION = (r"(?:[0-9]+:[0-9][A-Za-z0-9.+~:-]*-[A-Za-z0-9.+~]+|[0-9]+:[0-9][A-Za-z0-9.+~:]*"
            r"|[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+|[0-9][A-Za-z0-9.+~]*)")
_PACKAGE = re.compile(rf"({_NAME})(?:=({_VERSION}))?")
_SUITE = re.compile(r"[a-z0-9][a-z0-9.-]*")
_MIRROR = re.compile(r"https?://[A-Za-z0-9._~:/?=&%+@-]+")
_TMP = re.compile(r"\.[0-9a-f]{64}\.(\d+)(?:\.json)?\.tmp")
_GENERIC = ("E: mmdebstrap failed", "E: setup failed", "E: run_")


class PackageNameError(SwcliError):
    """A Debian package (or ``name=version``) does not follow Debian's grammar, or two versions of one are asked."""

    def __init__(self, package: str, why: str = "not a Debian package name ([a-z0-9][a-z0-9+.-]+, optional =version)"):
        self.package = package
        super().__init__(f"system package {package!r}: {why}")


class BaseBuildError(SwcliError):
    """mmdebstrap is missing or failed (unknown package, no network...), or its rootfs has no python3."""

    def __init__(self, message: str, *, stderr_tail: tuple[str, ...] = ()):
        self.stderr_tail = stderr_tail
        super().__init__(message)


@dataclass(frozen=True)
class BaseRootfs:
    """A built rootfs tar: ``key`` names its inputs, ``python`` is its python3 minor version (e.g. ``"3.11"``)."""

    tar: Path
    key: str
    python: str
    packages: tuple[str, ...]


Log = Callable[[str], None]
Runner = Callable[[list[str], dict, Log], None]


def package_list(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The base packages plus ``extra``, validated, deduplicated by name and sorted.

    ``pkg=version`` wins over a bare ``pkg``; two different versions of one package are an error.
    """
    by_name: dict[str, str] = {}
    for spec in (*BASE_PACKAGES, *extra):
        if not isinstance(spec, str) or not (m := _PACKAGE.fullmatch(spec)):
            raise PackageNameError(str(spec))
        name, version = m.group(1), m.group(2)
        old = by_name.get(name)
        if old is not None and "=" in old and version and old != spec:
            raise PackageNameError(spec, f"conflicts with {old!r}")
        if old is None or version:
            by_name[name] = spec
    return tuple(sorted(by_name.values()))


def cache_key(suite: str, packages: Sequence[str], mirror: str | None = None) -> str:
    """sha256 of everything that decides the tar's bytes on our side (the archive's content aside)."""
    doc = {"recipe": RECIPE, "suite": suite, "mirror": mirror or "", "machine": platform.machine(),
           "packages": sorted(packages), "source_date_epoch": SOURCE_DATE_EPOCH}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def mmdebstrap_command(suite: str, packages: Sequence[str], out: Path, mirror: str | None = None) -> list[str]:
    cmd = ["mmdebstrap", "--variant=minbase", "--format=tar", "--include=" + ",".join(packages),
           "--customize-hook=" + USER_HOOK, suite, str(out)]
    return cmd + [mirror] if mirror else cmd


def python_version(tar: Path) -> str:
    """The python3 minor version of a rootfs tar: the ``usr/bin/python3`` link target, else ``usr/lib/python3.X``."""
    libs = set()
    with tarfile.open(tar, "r:") as tf:
        for member in tf:
            name = member.name.removeprefix("./")
            if name == "usr/bin/python3" and member.issym():
                if m := re.fullmatch(r"(?:.*/)?python(3\.\d+)", member.linkname):
                    return m.group(1)
            if m := re.fullmatch(r"usr/lib/python(3\.\d+)/?", name):
                libs.add(m.group(1))
    if len(libs) == 1:
        return libs.pop()
    raise BaseBuildError(f"{tar}: no single python3 in the rootfs (found {sorted(libs) or 'none'})")


def run_mmdebstrap(cmd: list[str], env: dict, log: Log) -> None:
    """Run mmdebstrap, its ``I:`` progress to ``log``; a failure is one line with its last meaningful error."""
    if shutil.which(cmd[0]) is None:
        raise BaseBuildError("mmdebstrap is missing (apt-get install mmdebstrap)")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                tail.append(line)
                log(line)
    if proc.returncode:
        raise BaseBuildError(f"mmdebstrap failed (exit {proc.returncode}): {_last_error(tail)}",
                             stderr_tail=tuple(tail))


def _last_error(lines: Sequence[str]) -> str:
    """The last ``E:``/``W:`` line that is not mmdebstrap's generic wrapper, else the last line."""
    specific = [ln for ln in lines if ln.startswith(("E:", "W:")) and not ln.startswith(_GENERIC)]
    return (specific or list(lines) or ["no output"])[-1][:300]


def base_rootfs(packages: Sequence[str] = (), *, cache_dir: Path, suite: str = "bookworm",
                mirror: str | None = None, log: Log | None = None, run: Runner = run_mmdebstrap) -> BaseRootfs:
    """The cached rootfs tar for ``packages`` (on top of :data:`BASE_PACKAGES`), built on a miss."""
    log = log or (lambda line: None)
    pkgs = package_list(packages)
    if not _SUITE.fullmatch(suite):
        raise BaseBuildError(f"suite {suite!r}: not a Debian suite name")
    if mirror is not None and not _MIRROR.fullmatch(mirror):
        raise BaseBuildError(f"mirror {mirror!r}: not an http(s) URL")
    key = cache_key(suite, pkgs, mirror)
    cache_dir = Path(cache_dir)
    tar, meta = cache_dir / f"{key}.tar", cache_dir / f"{key}.json"
    if tar.is_file():
        return BaseRootfs(tar, key, _cached_python(tar, meta), pkgs)

    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache_dir)
    tmp_tar, tmp_meta = (cache_dir / f".{key}.{os.getpid()}.tmp", cache_dir / f".{key}.{os.getpid()}.json.tmp")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "LC_ALL": "C.UTF-8"}
    try:
        log(f"mmdebstrap {suite} minbase + {' '.join(pkgs)}")
        run(mmdebstrap_command(suite, pkgs, tmp_tar, mirror), env, log)
        python = python_version(tmp_tar)
        tmp_meta.write_text(json.dumps({"python": python, "packages": list(pkgs), "suite": suite,
                                        "mirror": mirror, "recipe": RECIPE}, indent=1) + "\n")
        os.replace(tmp_meta, meta)
        os.replace(tmp_tar, tar)  # last: a tar under its final name is complete
    finally:
        for leftover in (tmp_tar, tmp_meta):
            leftover.unlink(missing_ok=True)
    return BaseRootfs(tar, key, python, pkgs)


def _cached_python(tar: Path, meta: Path) -> str:
    try:
        python = json.loads(meta.read_text())["python"]
        if isinstance(python, str) and re.fullmatch(r"3\.\d+", python):
            return python
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return python_version(tar)  # no (or a bad) sidecar: read it from the tar itself


def _remove_stale_temps(cache_dir: Path) -> None:
    """Remove temp files of runs that died (kill -9): their pid no longer exists."""
    for path in cache_dir.iterdir():
        m = _TMP.fullmatch(path.name)
        if m and not pid_alive(int(m.group(1))):
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None, build: Callable[..., BaseRootfs] = base_rootfs) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder.images.base",
                                     description="Build (or reuse) the base rootfs tar; print its path.")
    parser.add_argument("--out", required=True, type=Path, help="cache folder for the tar")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--mirror", default=None, help="e.g. a dated http://snapshot.debian.org/archive/debian/... URL")
    parser.add_argument("--quiet", action="store_true", help="no mmdebstrap progress on stderr")
    parser.add_argument("packages", nargs="*", metavar="PKG", help="extra Debian packages (name or name=version)")
    args = parser.parse_args(argv)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        rootfs = build(args.packages, cache_dir=args.out, suite=args.suite, mirror=args.mirror, log=log)
    except SwcliError as err:
        print(f"build-base: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("build-base: interrupted", file=sys.stderr)
        return 130
    print(rootfs.tar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
