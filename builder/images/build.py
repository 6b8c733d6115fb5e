"""Image build services: dataset (`swds/`), runtime (`swrt/`) and model (`swmp/`) images.

Layer order, slowest-changing first: base -> environment (split by package size) -> swcli -> weights -> code ->
manifest. The environment and swcli live in the runtime image; the model image is built FROM it and its build
context holds only weights, code and the manifest, so the legacy builder (docker-py has no BuildKit, and Debian
bookworm ships no buildx) re-sends kilobytes, not the environment, on a code-only change.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import builder
from builder.errors import DockerError, SwcliError
from builder.images import context as ctx
from builder.images.engine import build_image, connect, image_exists
from builder.images.render import render_dockerfile
from builder.refs import image_ref_problem, image_tags, is_version, name_problem
from builder.store import Entry

DEFAULT_BASE = "swcli/base:bookworm-py3.11"
ENV_PREFIX = "/opt/swcli/env"
SITE_PACKAGES = f"{ENV_PREFIX}/lib/python3.11/site-packages"
BIG_PACKAGE = 64 << 20
# what `python -m builder.container eval` imports inside the image
IN_IMAGE_REQUIREMENTS = ("typer", "rich", "pyyaml", "numpy", "scikit-learn")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    tags: list[str]
    image_id: str
    seconds: float


class ImageInputError(SwcliError):
    """A base/runtime image, name or version handed to an image build is not what an image reference allows."""


def check_inputs(flag: str, image: str, dockerfile_only: Path | None, name: str | None = None,
                 version: str | None = None) -> None:
    """Refuse a bad base/runtime image (``flag`` names where it came from), name or version, and a used
    ``--dockerfile-only`` folder, before any work: nothing reaches the Dockerfile or a tag unchecked."""
    problem = image_ref_problem(image)
    if problem:
        raise ImageInputError(f"{flag}: {problem}")
    if name is not None and name_problem(name):
        raise ImageInputError(f"image name: {name_problem(name)}")
    if version is not None and not is_version(version):
        raise ImageInputError(f"image version {version!r} is not a store version (lowercase letters and digits)")
    if dockerfile_only is not None:
        ctx.check_context_dir(dockerfile_only)


def _build(entries: list[ctx.ContextEntry], tags: list[str], dockerfile_only: Path | None, client, log: Log | None,
           nocache: bool = False) -> ImageResult:
    import time

    started = time.perf_counter()
    if dockerfile_only is not None:
        ctx.write_context_dir(entries, dockerfile_only)
        return ImageResult(tags, "", time.perf_counter() - started)
    client = client or connect()
    with tempfile.TemporaryFile() as tar:
        ctx.write_context_tar(entries, tar)
        tar.seek(0)
        image_id = build_image(client, tar, tags, log=log, nocache=nocache)
    return ImageResult(tags, image_id, time.perf_counter() - started)


def _require_base(client, base_image: str, dockerfile_only: Path | None):
    if dockerfile_only is not None:
        return None
    client = client or connect()
    if not image_exists(client, base_image):
        hint = "build it with `make base-image`" if base_image == DEFAULT_BASE else "pull or build it first"
        raise DockerError(f"base image {base_image} is not in the local engine; {hint}")
    return client


def build_dataset_image(entry: Entry, *, base_image: str = DEFAULT_BASE, client=None, dockerfile_only: Path | None = None,
                        log: Log | None = None) -> ImageResult:
    """`swds/<name>:<version>`: the shards, index and manifest at /dataset, on a base that has `cp` for init containers."""
    check_inputs("--base-image", base_image, dockerfile_only, entry.name, entry.version)
    client = _require_base(client, base_image, dockerfile_only)
    m = entry.manifest
    dockerfile = render_dockerfile(
        "dataset", base_image=base_image, name=entry.name, version=entry.version, description=m.get("desc", ""),
        extra_labels=[("io.swcli.records", str(m.get("records"))), ("io.swcli.format", m.get("format", ""))],
    )
    entries = ctx.from_tree("dataset", entry.path) + [ctx.from_bytes("Dockerfile", dockerfile.encode())]
    return _build(entries, image_tags("dataset", entry.name, entry.version), dockerfile_only, client, log)


# ----------------------------------------------------------------------------------------------- runtime


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
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts)


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


def env_digest(entries: list[ctx.ContextEntry]) -> str:
    """A digest of the env snapshot: paths, sizes and mtimes (hashing GBs of wheels on every build is waste)."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.arcname):
        if e.source is not None:
            st = os.stat(e.source)
            h.update(f"{e.arcname}\0{st.st_size}\0{int(st.st_mtime)}\0{int(e.executable)}\n".encode())
        else:
            h.update(f"{e.arcname}\0{e.link}\0{hashlib.sha256(e.data or b'').hexdigest()}\n".encode())
    return h.hexdigest()


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
              "size": sum(os.stat(e.source).st_size for e in layer if e.source is not None)}
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


def runtime_context(prefix: Path, tree: Path, mode: str, *, base_python: str = "3.11",
                    lock_text: str = "") -> tuple[list[ctx.ContextEntry], list[dict]]:
    """Context entries and layer table for the env at ``prefix`` (its snapshot at ``tree``)."""
    minor = env_python_minor(prefix)
    if minor != base_python:
        raise RuntimeError_(f"{prefix}: the environment is Python {minor}, the base image has Python {base_python}; "
                            "the minor versions must match")
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


def build_runtime_image(name: str, prefix: Path, *, base_image: str = DEFAULT_BASE, lock_text: str = "", client=None,
                        dockerfile_only: Path | None = None, log: Log | None = None, nocache: bool = False) -> tuple[ImageResult, dict]:
    """`swrt/<name>:<version>` from a venv or conda env; returns the image and a manifest describing it."""
    check_inputs("--base-image", base_image, dockerfile_only, name)
    prefix = Path(prefix)
    if not prefix.is_dir():
        raise RuntimeError_(f"{prefix}: environment folder does not exist")
    mode = env_mode(prefix)
    client = _require_base(client, base_image, dockerfile_only)
    with (conda_tree(prefix) if mode == "conda" else contextlib.nullcontext(prefix)) as tree:
        entries, layers = runtime_context(prefix, tree, mode, lock_text=lock_text)
        digest = env_digest(entries)
        from builder.store import make_version

        version = make_version(bytes.fromhex(digest))
        dockerfile = render_dockerfile("runtime", base_image=base_image, name=name, version=version, env_prefix=ENV_PREFIX,
                                       site_packages=SITE_PACKAGES, env_layers=layers, conda=(mode == "conda"),
                                       description=f"{mode} env from {prefix}",
                                       extra_labels=[("io.swcli.source-digest", digest), ("io.swcli.env-mode", mode)])
        entries.append(ctx.from_bytes("Dockerfile", dockerfile.encode()))
        result = _build(entries, image_tags("runtime", name, version), dockerfile_only, client, log, nocache)
    manifest = {"kind": "runtime", "name": name, "version": version, "mode": mode, "python": env_python_minor(prefix),
                "base_image": base_image, "source": str(prefix), "prefix": ENV_PREFIX, "layers": layers,
                "image": result.tags[0], "image_id": result.image_id}
    return result, manifest


# ------------------------------------------------------------------------------------------------- model


def build_model_image(entry: Entry, runtime_image: str, *, client=None, dockerfile_only: Path | None = None,
                      log: Log | None = None) -> ImageResult:
    """`swmp/<name>:<version>` FROM a runtime image: weights layer, code layer, then manifest and env lock."""
    check_inputs("runtime image (--runtime or model.yaml run.runtime)", runtime_image, dockerfile_only, entry.name,
                 entry.version)
    client = _require_base(client, runtime_image, dockerfile_only)
    m = entry.manifest
    src = entry.path / "src"
    weights, code = [], []
    for f in m["files"]:
        (weights if f["role"] == "weights" else code).append(ctx.from_file(f"{'weights' if f['role'] == 'weights' else 'code'}/{f['path']}", src / f["path"]))
    dockerfile = render_dockerfile(
        "model", base_image=runtime_image, name=entry.name, version=entry.version, weights=bool(weights),
        description=m.get("desc", ""),
        extra_labels=[("io.swcli.handler", m.get("handler", "")), ("io.swcli.runtime", runtime_image)],
    )
    # the manifest and the env lock land beside src/, so the image holds the whole store entry (`swcli pull` needs it)
    meta = [ctx.from_file(f"meta/{name}", entry.path / name) for name in ("manifest.json", "env.lock")
            if (entry.path / name).is_file()]
    entries = weights + code + meta + [ctx.from_bytes("Dockerfile", dockerfile.encode())]
    if not code:  # COPY code/ needs the folder to exist
        entries.append(ctx.from_bytes("code/.swcli-empty", b""))
    return _build(entries, image_tags("model", entry.name, entry.version), dockerfile_only, client, log)


def current_env_prefix() -> Path:
    """The running interpreter's env (a venv or conda prefix): the default runtime for a model."""
    return Path(os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX") or sys.prefix)


def export_dataset_image(image: str, directory: Path, *, client=None) -> int:
    """Copy /dataset out of a dataset image into ``directory`` (created; must be absent or an empty folder, checked
    before the engine is asked); returns files written. Folders and files get the umask's modes."""
    from builder.images.engine import check_target, copy_out

    check_target(Path(directory))
    client = client or connect()
    if not image_exists(client, image):
        raise DockerError(f"image {image} is not in the local engine")
    return copy_out(client, image, "/dataset", Path(directory))
