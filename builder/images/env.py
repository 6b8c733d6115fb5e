"""Environments as layers: what a venv or conda env is, where its site-packages are, how it splits into layers.

Inspection only: nothing here writes an image. Big site-packages entries (torch...) get a layer each, biggest
first; the rest share one, so a changed small dependency re-ships the small layer only. A venv contributes its
site-packages (its bin/python points at the build host's interpreter; the base image brings its own); a conda env
is conda-packed with its paths rewritten to the image's prefix, so nothing needs conda-unpack at run time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import os
import re
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

import builder
from builder.errors import SwcliError
from builder.images import context as ctx

ENV_PREFIX = "/opt/swcli/env"
BIG_PACKAGE = 64 << 20
# what `python -m builder.container eval` imports inside the image
IN_IMAGE_REQUIREMENTS = ("typer", "rich", "pyyaml", "numpy", "scikit-learn", "requests")  # requests: eval --dataset REGISTRY/REPO


class RuntimeError_(SwcliError):
    """The environment cannot be snapshotted onto the base image."""


def site_packages_of(prefix: Path) -> Path:
    candidates = sorted(prefix.glob("lib/python3.*/site-packages"))
    if not candidates:
        raise RuntimeError_(f"{prefix}: no lib/python3.X/site-packages; not a venv or conda env")
    return candidates[0]


def env_python_minor(prefix: Path) -> str:
    """The env's Python major.minor: pyvenv.cfg for a venv, the python package record for a conda env."""
    cfg = prefix / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                return ".".join(value.strip().split(".")[:2])
    for record in sorted((prefix / "conda-meta").glob("python-3*.json")):
        try:
            return ".".join(json.loads(record.read_text())["version"].split(".")[:2])
        except (ValueError, KeyError) as err:
            raise RuntimeError_(f"invalid conda prefix {prefix}: {record.name}: {err}") from None
    return site_packages_of(prefix).parent.name.removeprefix("python")


def _tree_size(path: Path) -> int:
    """Bytes of the files and links under ``path`` (``__pycache__`` left out), with one scandir walk."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total, stack = 0, [str(path)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def split_layers(site: Path, threshold: int = BIG_PACKAGE) -> list[tuple[str, list[Path]]]:
    """Top-level site-packages entries bigger than ``threshold`` get a layer each (biggest first); the rest share one.

    One changed small dependency then re-ships the small layer only, never torch.
    """
    big, rest = [], []
    for child in sorted(site.iterdir()):
        if child.name == "__pycache__":
            continue
        size = _tree_size(child)
        (big if size > threshold else rest).append((size, child))
    layers = [(re.sub(r"[^a-z0-9]+", "-", child.name.lower()).strip("-"), [child]) for size, child in sorted(big, key=lambda t: -t[0])]
    layers.append(("rest", [c for _, c in rest]))
    return [(f"{n:02d}-{label}", paths) for n, (label, paths) in enumerate(layers)]


def _entries_for(prefix: str, paths: list[Path], root: Path) -> list[ctx.ContextEntry]:
    out = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for entry in ctx.from_tree(f"{prefix}/{path.relative_to(root).as_posix()}", path):
                if "/__pycache__/" not in entry.arcname and not entry.arcname.endswith(".pyc"):
                    out.append(entry)
        else:
            out.append(ctx.from_file(f"{prefix}/{path.relative_to(root).as_posix()}", path))
    return out


def _installed(site: Path) -> dict[str, str]:
    return {(d.metadata["Name"] or "").lower().replace("_", "-"): d.version for d in md.distributions(path=[str(site)])}


def swcli_layer_entries(env_site: Path) -> list[ctx.ContextEntry]:
    """swcli's package plus the distributions it needs in the image that the user's env does not already have."""
    from packaging.requirements import Requirement

    have = _installed(env_site)
    needed, queue = {}, list(IN_IMAGE_REQUIREMENTS)
    while queue:
        name = queue.pop().lower().replace("_", "-")
        if name in needed:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        needed[name] = dist
        for req in dist.requires or []:
            parsed = Requirement(req)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                queue.append(parsed.name)
    entries = _entries_for("swcli", [Path(builder.__file__).parent], Path(builder.__file__).parent.parent)
    for name, dist in sorted(needed.items()):
        if have.get(name) == dist.version:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            rel = file.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc") or not path.is_file():
                continue
            entries.append(ctx.from_file(f"swcli/{rel}", path))
    return entries


def env_layers(tree: Path, *, whole_prefix: bool) -> tuple[list[ctx.ContextEntry], list[dict]]:
    """Layer entries for an env tree, every path relative to the env prefix (they all land in /opt/swcli/env).

    Big site-packages entries get a layer each; the rest of site-packages (and, for a conda env, the rest of the
    prefix: its interpreter, shared libraries, conda-meta) share the last layer. A venv contributes only its
    site-packages: its bin/python points at the build host's interpreter, the base image brings its own.
    """
    site = site_packages_of(tree)
    site_rel = site.relative_to(tree)
    split = split_layers(site)
    rest_label, rest_paths = split[-1]
    entries: list[ctx.ContextEntry] = []
    layers = []
    for label, paths in split[:-1]:
        layer = _entries_for(f"layers/{label}/{site_rel.as_posix()}", paths, site)
        entries += layer
        layers.append((label, layer))
    rest = _entries_for(f"layers/{rest_label}/{site_rel.as_posix()}", rest_paths, site)
    if whole_prefix:
        others = [c for c in sorted(tree.iterdir()) if c.name != "lib"]
        others += [c for c in sorted((tree / "lib").iterdir()) if c != site.parent]
        others += [c for c in sorted(site.parent.iterdir()) if c != site]
        rest += _entries_for(f"layers/{rest_label}", others, tree)
    entries += rest
    layers.append((rest_label, rest))
    table = [{"dir": f"layers/{label}", "files": len(layer),
              "size": sum(e.stat().st_size for e in layer if e.source is not None)}
             for label, layer in layers if layer]
    return entries, table


@contextlib.contextmanager
def conda_tree(prefix: Path) -> Iterator[Path]:
    """conda-pack the env with its paths rewritten to /opt/swcli/env, unpacked in a temp dir for the build."""
    import conda_pack

    with tempfile.TemporaryDirectory(prefix="swcli-conda-") as tmp:
        archive = Path(tmp) / "env.tar"
        try:
            conda_pack.pack(prefix=str(prefix), output=str(archive), dest_prefix=ENV_PREFIX, format="tar",
                            verbose=False, force=True)
        except (conda_pack.CondaPackException, ValueError, KeyError, OSError) as err:
            # a corrupt conda-meta record surfaces as JSONDecodeError/KeyError from inside conda-pack
            raise RuntimeError_(f"invalid conda prefix {prefix}: {type(err).__name__}: {' '.join(str(err).split())}") from None
        tree = Path(tmp) / "env"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="tar")
        archive.unlink()
        yield tree


def runtime_context(tree: Path, mode: str, *, lock_text: str = "") -> tuple[list[ctx.ContextEntry], list[dict]]:
    """Context entries and layer table of an env's snapshot at ``tree`` (its Python is checked against the base's
    by the image build, which reads the base)."""
    entries, layers = env_layers(tree, whole_prefix=(mode == "conda"))
    entries += swcli_layer_entries(site_packages_of(tree))
    entries.append(ctx.from_bytes("env.lock", lock_text.encode()))
    return entries, layers


def env_mode(prefix: Path) -> str:
    if (prefix / "conda-meta").is_dir():
        return "conda"
    if (prefix / "pyvenv.cfg").is_file():
        return "venv"
    raise RuntimeError_(f"{prefix}: neither a venv (pyvenv.cfg) nor a conda env (conda-meta/)")


def current_env_prefix() -> Path:
    """The running interpreter's env (a venv or conda prefix): the default runtime for a model."""
    return Path(os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX") or sys.prefix)
