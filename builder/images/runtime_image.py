"""The runtime image (`swrt/<name>:<version>`): a venv or conda env as layers on swcli's Debian base.

The env is split into layers by package size (:mod:`builder.images.env`), then the env lock and swcli itself, then
a small SBOM layer read from those layers' package metadata. The env's Python must be the base's; the version is
derived from the layers' digests, so the same env gives the same runtime on every machine. ``system_packages``
(runtime.yaml) build on a variant of the base (:mod:`builder.images.base_image`). The recipe machinery is
:mod:`builder.images.build`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

from builder.images import context as ctx
from builder.images.base_image import base_ref, ensure_base
from builder.images.build import (DEFAULT_BASE, ENTRYPOINT, SWCLI_LIB, USER, ImageInputError, ImageResult, LayerSpec,
                                  Log, Recipe, check_inputs, labels, new_layers, parent_image, realize, write_context)
from builder.images.env import ENV_PREFIX, RuntimeError_, conda_tree, env_mode, env_python_minor, runtime_context
from builder.images.image import ConfigChanges, Image, NewLayer, read_image
from builder.images.layers import entries_content_key, placed, stat_key
from builder.images.oci import Layout
from builder.images.sbom import SBOM_PATH, runtime_sbom
from builder.images.sbom import wanted as sbom_wanted
from builder.store import Store, make_version


def site_packages(minor: str) -> str:
    return f"{ENV_PREFIX}/lib/python{minor}/site-packages"


def base_python(layout: Layout, image: Image) -> str | None:
    """The Python minor version of a base image: its ``io.swcli.python`` label, else the newest
    ``usr/lib/python3.N/os.py`` in its layers (remembered per image in the layout's cache), else None."""
    import re
    import tarfile

    label = image.labels.get("io.swcli.python")
    if label:
        return label
    memo = layout.root / "cache" / "python" / image.config.hex
    with contextlib.suppress(OSError):
        return memo.read_text().strip() or None
    found = None
    pattern = re.compile(r"(?:\./)?usr/lib/python(3\.\d+)/os\.py")
    for blob in image.layers:
        with tarfile.open(layout.blob_path(blob.digest), "r|") as tar:
            for member in tar:
                match = pattern.fullmatch(member.name)
                if match:
                    found = match.group(1)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(found or "")
    return found


def runtime_version(mode: str, layers: list[NewLayer]) -> str:
    """A runtime's version from its layers' digests: the same env gives the same version on every machine."""
    h = hashlib.sha256(f"runtime\0{mode}\n".encode())
    for layer in layers:
        h.update(f"{layer.blob.digest}\n".encode())
    return make_version(h.digest())


def build_runtime_image(name: str, prefix: Path, *, base_image: str = DEFAULT_BASE, lock_text: str = "", client=None,
                        dockerfile_only: Path | None = None, log: Log | None = None, nocache: bool = False,
                        load: bool = True, verify: bool = False, system_packages: tuple[str, ...] = (),
                        layout: Layout | None = None) -> tuple[ImageResult, dict]:
    """`swrt/<name>:<version>` from a venv or conda env, in ``layout`` (default: the store's); returns the image and
    a manifest describing it. ``system_packages`` (Debian packages) give a variant of the default base,
    content-addressed by the list."""
    started = time.perf_counter()
    check_inputs("--base-image", base_image, dockerfile_only, name)
    layout = layout or Store().layout
    base_image = _variant_base(layout, base_image, system_packages)
    prefix = Path(prefix)
    if not prefix.is_dir():
        raise RuntimeError_(f"{prefix}: environment folder does not exist")
    mode = env_mode(prefix)
    with (conda_tree(prefix) if mode == "conda" else contextlib.nullcontext(prefix)) as tree:
        minor = env_python_minor(prefix)
        # the base's own Python must match the env's: read from the base (for --dockerfile-only, when the store has it)
        base = parent_image(layout, client, base_image, "--base-image") if dockerfile_only is None else read_image(layout, base_image)
        if base is not None:
            base_minor = base_python(layout, base)
            if base_minor and base_minor != minor:
                raise RuntimeError_(f"{prefix}: the environment is Python {minor}, the base image {base_image} has Python "
                                    f"{base_minor}; the minor versions must match")
        entries, table = runtime_context(tree, mode, lock_text=lock_text)
        specs = _runtime_specs(entries, table)
        layers, written = new_layers(layout, specs, nocache=nocache, verify=verify)
        version = runtime_version(mode, layers)
        # last, in a small layer of its own: it changes whenever anything below does, and only then
        document = runtime_sbom(layout, name, version, base, [layer.blob.digest for layer in layers],
                                lambda: _sbom_files(specs), (site_packages(minor), SWCLI_LIB))
        sbom_entries = [ctx.from_bytes("sbom.cdx.json", document)]
        specs.append(LayerSpec("sbom.cdx.json", SBOM_PATH, "sbom", entries_content_key("sbom", sbom_entries),
                               sbom_entries))
        sbom_layer, more = new_layers(layout, specs[-1:], nocache=nocache, verify=verify)
        layers, written = layers + sbom_layer, written + more
        recipe = runtime_recipe(name, version, base_image, mode, minor, specs, table)
        if dockerfile_only is not None:  # here, while a conda env's packed tree still exists
            result = write_context(recipe, dockerfile_only)
    if dockerfile_only is None:
        result = realize(recipe, layout=layout, client=client, load=load, log=log, started=started, layers=layers,
                         written=written)
    manifest = {"kind": "runtime", "name": name, "version": version, "mode": mode, "python": minor,
                "base_image": base_image, "system_packages": list(system_packages), "source": str(prefix),
                "prefix": ENV_PREFIX, "layers": table,
                "image": result.tags[0], "image_id": result.image_id}
    return result, manifest


def _variant_base(layout: Layout, base_image: str, system_packages: tuple[str, ...]) -> str:
    """The base a runtime is built on: ``base_image``, or with ``system_packages`` the default base's variant that
    adds them (written into ``layout`` when missing)."""
    if not system_packages:
        return base_image
    if base_image != DEFAULT_BASE:
        raise ImageInputError(f"system_packages extend swcli's Debian base; {base_image} is another base")
    variant = ensure_base(layout, system_packages)
    return base_ref(variant.labels["io.swcli.python"], system_packages, variant.labels["io.swcli.base-key"])


def runtime_recipe(name: str, version: str, base_image: str, mode: str, minor: str, specs: list[LayerSpec],
                   table: list[dict]) -> Recipe:
    """The runtime image's recipe on ``base_image``: its layers (``specs``) and the config that makes the env the
    image's Python (its site-packages, then swcli's, on PYTHONPATH; a conda env's bin on PATH)."""
    site = site_packages(minor)
    env = {"SWCLI_ENV": ENV_PREFIX, "PYTHONPATH": f"{site}:{SWCLI_LIB}"}
    if mode == "conda":
        env["PATH"] = f"{ENV_PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    description = f"{mode} environment, Python {minor}"
    extra = [("io.swcli.env-mode", mode), ("io.swcli.python", minor)]
    return Recipe("runtime", name, version, base_image, "--base-image", specs,
                  ConfigChanges(env=env, labels=labels("runtime", name, version, description, extra), user=USER,
                                entrypoint=ENTRYPOINT, cmd=["--help"]),
                  {"description": description, "extra_labels": extra, "env_prefix": ENV_PREFIX,
                   "site_packages": site, "env_layers": table, "conda": mode == "conda"})


def _sbom_files(specs: list[LayerSpec]) -> dict[str, ctx.ContextEntry]:
    """Image path -> context entry of the files the SBOM is read from (metadata of dists and conda packages)."""
    return {f"/{e.arcname}": e for spec in specs
            for e in placed([e for e in spec.entries if sbom_wanted(e.arcname)], spec.src, spec.dest)}


def _runtime_specs(entries: list[ctx.ContextEntry], table: list[dict]) -> list[LayerSpec]:
    by_dir: dict[str, list[ctx.ContextEntry]] = {}
    for e in entries:
        top = e.arcname.split("/", 2)
        key = "/".join(top[:2]) if top[0] == "layers" else top[0]
        by_dir.setdefault(key, []).append(e)
    specs = [LayerSpec(row["dir"], ENV_PREFIX, f"env: {row['dir'].split('/')[-1]}", stat_key(row["dir"], by_dir[row["dir"]]),
                       by_dir[row["dir"]]) for row in table]
    lock = by_dir["env.lock"]
    specs.append(LayerSpec("env.lock", "/opt/swcli/env.lock", "env lock", entries_content_key("env.lock", lock), lock))
    specs.append(LayerSpec("swcli", SWCLI_LIB, "swcli and its dependencies", stat_key("swcli", by_dir["swcli"]),
                           by_dir["swcli"]))
    return specs
