"""Image builds: dataset (`swds/`) and model (`swmp/`) images, and the recipe machinery every kind shares (the
runtime's, `swrt/`, is :mod:`builder.images.runtime_image`), written by swcli itself.

No Dockerfile runs. Each kind is a :class:`Recipe`: a parent image (the base, or the runtime a model runs on), the
layers to add (each a folder of the build context and where it lands in the image, with a cache key) and the
config changes. The same recipe either becomes OCI layers in the store's layout (``Store.layout``), with every
unchanged layer taken from the cache, and is then loaded into the Docker engine (only what the engine lacks; no
load with ``load=False``), or is written out as ``templates/Dockerfile.j2`` plus its context
(``--dockerfile-only``), so any builder can build the same image. Layer order, slowest-changing first: base ->
environment (split by package size) -> env lock -> swcli -> weights -> code -> manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from builder.errors import DockerError, SwcliError, UsageError
from builder.images import context as ctx
from builder.images.engine import connect, image_exists
from builder.images.image import ConfigChanges, Image, NewLayer, read_image, write_image
from builder.images.layer_tar import shown
from builder.images.layers import LayerCache, content_key, entries_content_key, placed, write_recipe_layer
from builder.images.oci import Layout
from builder.images.render import render_dockerfile
from builder.snapshot import SOURCE_SUFFIXES
from builder.refs import image_ref_problem, image_tags, is_version, name_problem
from builder.store import Entry, Store

DEFAULT_BASE = "swcli/base:bookworm-py3.11"
# how a machine without the base gets it (no checkout needed): swcli writes it on first use, as root with mmdebstrap
BASE_HINT = ("swcli writes it itself on first use when run as root with mmdebstrap installed (apt-get install "
             "mmdebstrap), or once with `python3 -m builder.images.base_image --load` as root; or build on another base "
             "image with python3 (--base-image, runtime.yaml's base_image)")
USER = "1000:1000"
ENTRYPOINT = ["python3", "-m", "builder.container"]  # what images run, as templates/Dockerfile.j2 says
SWCLI_LIB = "/opt/swcli/lib"  # swcli and the dependencies it brings, on PYTHONPATH after the env's site-packages
# store-only fields of a manifest: the copy inside an image leaves them out, so the image is the same everywhere
HOST_FIELDS = ("created", "build_seconds", "source")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    tags: list[str]
    image_id: str
    seconds: float
    bytes_sent: int | None = None  # to the engine; None when nothing was loaded
    layers_written: int = 0  # layers tarred by this build (the others came from the cache)


class ImageInputError(SwcliError):
    """A base/runtime image, name or version handed to an image build is not what an image reference allows."""


class ImageFlagError(ImageInputError, UsageError):
    """The same, given by a flag (``--base-image``, ``--runtime``): a usage error, exit 2."""


def check_inputs(flag: str, image: str, dockerfile_only: Path | None, name: str | None = None,
                 version: str | None = None) -> None:
    """Refuse a bad base/runtime image (``flag`` names where it came from), name or version, and a used
    ``--dockerfile-only`` folder, before any work: nothing reaches the Dockerfile or a tag unchecked."""
    problem = image_ref_problem(image)
    if problem:
        raise (ImageFlagError if flag.startswith("--") else ImageInputError)(f"{flag}: {problem}")
    if name is not None and name_problem(name):
        raise ImageInputError(f"image name: {name_problem(name)}")
    if version is not None and not is_version(version):
        raise ImageInputError(f"image version {version!r} is not a store version (lowercase letters and digits)")
    if dockerfile_only is not None:
        ctx.check_context_dir(dockerfile_only)


@dataclass(frozen=True)
class LayerSpec:
    """`COPY src/ dest/`: the context entries under ``src``, landing at ``dest``; ``key`` is the cache key."""

    src: str
    dest: str
    comment: str
    key: str
    entries: list[ctx.ContextEntry]
    one_file: bool = False  # one big store file: kept as a recipe (builder.images.layers.write_recipe_layer)


@dataclass
class Recipe:
    kind: str
    name: str
    version: str
    parent: str  # the image ref it is built on
    parent_flag: str  # where that ref came from, for messages
    layers: list[LayerSpec]
    changes: ConfigChanges
    template: dict = field(default_factory=dict)  # what Dockerfile.j2 needs beyond name/version/base

    @property
    def tags(self) -> list[str]:
        """The tags before the image exists (a Dockerfile context); a model's version tag needs its image id."""
        return image_tags(self.kind, self.name, self.version)

    def tag(self, layout: Layout, image: Image) -> list[str]:
        """Point this recipe's tags at ``image`` in ``layout`` (a model's name its image id: they never move)."""
        tags = image_tags(self.kind, self.name, self.version, image.image_id)
        for ref in tags:
            layout.tag(ref, image.manifest)
        return tags


def labels(kind: str, name: str, version: str, description: str, extra: list[tuple[str, str]]) -> dict[str, str]:
    """The labels the template's ``labels`` macro writes (values with whitespace runs folded, as its filter does)."""
    fold = lambda value: " ".join(str(value).split())  # noqa: E731
    out = {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version,
           "org.opencontainers.image.description": description, "io.swcli.kind": kind, "io.swcli.name": name,
           "io.swcli.version": version, **dict(extra)}
    return {k: fold(v) for k, v in out.items()}


def image_manifest(manifest: dict) -> bytes:
    """The store manifest as an image carries it: without the build time or host paths."""
    return (json.dumps({k: v for k, v in manifest.items() if k not in HOST_FIELDS}, indent=2) + "\n").encode()


def parent_image(layout: Layout, client, ref: str, flag: str) -> Image:
    """The parent image from the layout, else imported once from the engine (a base built there, or pulled)."""
    image = read_image(layout, ref)
    if image is not None:
        return image
    if ref == DEFAULT_BASE:
        from builder.images.base_image import ensure_base, rootfs_available

        if rootfs_available():  # our own base, written from the reproducible rootfs: no engine involved
            return ensure_base(layout, refs=[ref])
    hint = (BASE_HINT if ref == DEFAULT_BASE else "pull or build it first")
    try:
        client = client or connect()
    except DockerError:
        raise DockerError(f"{flag} {ref} is not in the store ({layout.root}) and no Docker engine answers to import "
                          f"it from; {hint}, or pass --no-image to build the package only") from None
    if not image_exists(client, ref):
        raise DockerError(f"{flag} {ref} is neither in the store nor in the local engine; {hint}")
    from builder.images.daemon import import_image

    return import_image(client, ref, layout, ref)


def write_context(recipe: Recipe, directory: Path) -> ImageResult:
    started = time.perf_counter()
    dockerfile = render_dockerfile(recipe.kind, base_image=recipe.parent, name=recipe.name, version=recipe.version,
                                   **recipe.template)
    entries = [e for spec in recipe.layers for e in spec.entries] + [ctx.from_bytes("Dockerfile", dockerfile.encode())]
    ctx.write_context_dir(entries, directory)
    return ImageResult(recipe.tags, "", time.perf_counter() - started)


def new_layers(layout: Layout, specs: list[LayerSpec], *, nocache: bool, verify: bool) -> tuple[list[NewLayer], int]:
    cache = LayerCache(layout)
    out = []
    for spec in specs:
        def entries(spec=spec):
            return placed(spec.entries, spec.src, spec.dest)
        key = spec.key if not nocache else hashlib.sha256(f"{spec.key}{time.time_ns()}".encode()).hexdigest()
        write = write_recipe_layer if spec.one_file else None
        out.append(NewLayer(cache.layer(key, entries, verify=verify, write=write), spec.comment))
    return out, cache.misses


def realize(recipe: Recipe, *, layout: Layout, client=None, load: bool = True, log: Log | None = None,
            nocache: bool = False, verify: bool = False, started: float | None = None,
            layers: list[NewLayer] | None = None, written: int = 0) -> ImageResult:
    """Write the recipe's image into the layout and (``load``) into the engine; returns what was done."""
    started = started or time.perf_counter()
    layout.clean_temp()  # left by a build killed mid-write
    parent = parent_image(layout, client, recipe.parent, recipe.parent_flag)
    if layers is None:
        layers, written = new_layers(layout, recipe.layers, nocache=nocache, verify=verify)
    image = write_image(layout, parent, layers, recipe.changes)
    tags = recipe.tag(layout, image)
    sent = None
    if load:
        from builder.images.daemon import CorruptBlobError
        from builder.images.daemon import load as load_into

        client = client or connect()
        try:
            sent = load_into(client, layout, image, tags, log=log).bytes_sent
        except CorruptBlobError as err:
            # the loader hashes what it sends and dropped the bad blob: write our layer anew (the cache misses now)
            # and load again; a corrupt blob of the parent is not ours to rebuild
            if err.digest not in {layer.blob.digest for layer in layers} or not all(s.entries for s in recipe.layers):
                raise
            (log or (lambda line: None))(f"{err}; rewriting it")
            layers, more = new_layers(layout, recipe.layers, nocache=False, verify=True)
            written += more
            image = write_image(layout, parent, layers, recipe.changes)
            tags = recipe.tag(layout, image)
            sent = load_into(client, layout, image, tags, log=log).bytes_sent
    return ImageResult(tags, image.image_id, time.perf_counter() - started, sent, written)


# ----------------------------------------------------------------------------------------------- dataset


def dataset_recipe(entry: Entry, base_image: str = DEFAULT_BASE, *, layout: Layout,
                   store: bool = True, verify: bool = False) -> tuple[Recipe, list[NewLayer], int]:
    """The dataset's volume layers (from the cache, else tarred now: into ``layout`` when ``store``, else only
    hashed), then the meta layer's spec: manifest, index, ``layers.json`` and any other file of the entry.
    Returns the recipe, the volume layers realized, and how many of them were tarred now."""
    from builder.images import dataset_layers as dl

    m = entry.manifest
    planned = dl.volume_layers(m, entry.path / "manifest.json")
    specs, done, written = [], [], 0
    for layer, (desc, fresh) in zip(planned, dl.realize_volume_layers(planned, entry.path, layout, store=store,
                                                                       verify=verify)):
        names = [s.file for s in layer.shards]
        comment = f"dataset {entry.name} volumes {names[0]}..{names[-1]}" if len(names) > 1 else f"dataset {entry.name} volume {names[0]}"
        specs.append(LayerSpec(layer.src, dl.DEST, comment, layer.key, layer.entries(entry.path)))
        done.append(NewLayer(desc, comment))
        written += fresh
    # every other file of the entry (the index...), but the manifest and a layers.json a pulled entry may carry:
    # both are written anew
    skip = {s.file for layer in planned for s in layer.shards} | {"manifest.json", dl.LAYERS_NAME}
    meta = [ctx.ContextEntry(f"meta/{e.arcname.split('/', 1)[1]}", e.source, e.data, e.executable, e.link, e.st)
            for e in ctx.from_tree("dataset", entry.path) if e.arcname.split("/", 1)[1] not in skip]
    meta.append(ctx.from_bytes("meta/manifest.json", image_manifest(m)))
    meta.append(ctx.from_bytes(f"meta/{dl.LAYERS_NAME}", dl.layers_json(dl.layer_size_of(m), planned,
                                                                          [layer.blob for layer in done])))
    specs.append(LayerSpec("meta", dl.DEST, f"dataset {entry.name} manifest, index and layers.json",
                           entries_content_key("dataset meta", meta), meta))
    extra = [("io.swcli.records", str(m.get("records"))), ("io.swcli.format", m.get("format", "")),
             (dl.LAYERS_LABEL, str(len(planned)))]
    desc = m.get("desc", "")
    recipe = Recipe(
        "dataset", entry.name, entry.version, base_image, "--base-image", specs,
        ConfigChanges(labels=labels("dataset", entry.name, entry.version, desc, extra), user=USER, volumes=("/dataset",),
                      cmd=["ls", "-l", "/dataset"]),
        {"description": desc, "extra_labels": extra, "dataset_layers": [layer.src for layer in planned]})
    return recipe, done, written


def build_dataset_image(entry: Entry, *, base_image: str = DEFAULT_BASE, client=None, dockerfile_only: Path | None = None,
                        log: Log | None = None, load: bool = True, verify: bool = False,
                        layout: Layout | None = None) -> ImageResult:
    """`swds/<name>:<version>`: the volumes in bounded layers, then the manifest, index and layers.json at
    /dataset, on a base that has `cp` for init containers (layout: docs/volume-format.md, "Image layers"), in
    ``layout`` (default: the store's)."""
    started = time.perf_counter()
    check_inputs("--base-image", base_image, dockerfile_only, entry.name, entry.version)
    layout = layout or Store().layout
    recipe, volume_layers, written = dataset_recipe(entry, base_image, layout=layout, store=dockerfile_only is None,
                                                    verify=verify)
    if dockerfile_only is not None:
        return write_context(recipe, dockerfile_only)
    meta, more = new_layers(layout, recipe.layers[-1:], nocache=False, verify=verify)
    return realize(recipe, layout=layout, client=client, load=load, log=log, verify=verify, started=started,
                   layers=volume_layers + meta, written=written + more)


# ------------------------------------------------------------------------------------------------- model


# a file of at least this size that is not source gets a layer of its own, keyed by its content and kept in the
# layout as a recipe over the store's copy (builder.images.recipes): a code-only change re-ships none of them
OWN_LAYER_BYTES = 1 << 20
OWN_LAYERS_MAX = 16  # the largest files get one each; Docker allows 127 layers in all, the runtime has its own


def _own_layer_files(files: list[dict]) -> list[dict]:
    big = [f for f in files if f["size"] >= OWN_LAYER_BYTES and not f.get("link")
           and (f["role"] == "weights" or PurePosixPath(f["path"]).suffix.lower() not in SOURCE_SUFFIXES)]
    big.sort(key=lambda f: (-f["size"], f["path"]))
    return sorted(big[:OWN_LAYERS_MAX], key=lambda f: f["path"])


def model_recipe(entry: Entry, runtime_image: str) -> Recipe:
    m = entry.manifest
    src = entry.path / "src"
    own = _own_layer_files(m["files"])
    own_paths = {f["path"] for f in own}
    specs, weights, code, known = [], [], [], {}
    for i, f in enumerate(own):  # context big/<i>/<path>: the Dockerfile names only the index, no user text
        item = ctx.from_file(f"big/{i}/{f['path']}", src / f["path"])
        key = content_key("file", [(f"opt/swcli/model/src/{f['path']}", f["sha256"], f["executable"], None)])
        specs.append(LayerSpec(f"big/{i}", "/opt/swcli/model/src", f"file {shown(f['path'])}", key, [item],
                               one_file=True))
    for f in m["files"]:
        if f["path"] in own_paths:
            continue
        arcname = f"weights/{f['path']}" if f["role"] == "weights" else f"model/src/{f['path']}"
        item = ctx.from_file(arcname, src / f["path"])
        (weights if f["role"] == "weights" else code).append(item)
        known[item.arcname] = f.get("sha256", "")
    # the manifest and the env lock land beside src/, so the image holds the whole store entry (`swcli pull` needs
    # it); they share the code's layer, which changes with them anyway: a code-only change is one layer to push
    code.append(ctx.from_bytes("model/manifest.json", image_manifest(m)))
    if (entry.path / "env.lock").is_file():
        code.append(ctx.from_file("model/env.lock", entry.path / "env.lock"))
    if weights:
        specs.append(LayerSpec("weights", "/opt/swcli/model/src", "weights",
                               entries_content_key("weights", weights, known), weights))
    specs.append(LayerSpec("model", "/opt/swcli/model", "code, model manifest and env lock",
                           entries_content_key("model", code, known), code))
    extra = [("io.swcli.handler", m.get("handler", "")), ("io.swcli.runtime", runtime_image)]
    desc = m.get("desc", "")
    return Recipe(
        "model", entry.name, entry.version, runtime_image, "runtime image (--runtime or model.yaml run.runtime)", specs,
        ConfigChanges(env={"SWCLI_RUNTIME": runtime_image}, labels=labels("model", entry.name, entry.version, desc, extra),
                      workdir="/opt/swcli/model", user=USER, entrypoint=ENTRYPOINT, cmd=["eval"]),
        {"description": desc, "extra_labels": extra, "weights": bool(weights), "own_layers": len(own)})


def build_model_image(entry: Entry, runtime_image: str, *, client=None, dockerfile_only: Path | None = None,
                      log: Log | None = None, load: bool = True, verify: bool = False,
                      layout: Layout | None = None) -> ImageResult:
    """`swmp/<name>:<version>-<image id>` (and `:latest`) on a runtime image: weights layer, code layer, then manifest
    and env lock, in ``layout`` (default: the store's)."""
    check_inputs("runtime image (--runtime or model.yaml run.runtime)", runtime_image, dockerfile_only, entry.name,
                 entry.version)
    recipe = model_recipe(entry, runtime_image)
    if dockerfile_only is not None:
        return write_context(recipe, dockerfile_only)
    return realize(recipe, layout=layout or Store().layout, client=client, load=load, log=log, verify=verify)


def export_dataset_image(image: str, directory: Path, *, client=None) -> int:
    """Copy /dataset out of a dataset image into ``directory`` (created; must be absent or an empty folder, checked
    before the engine is asked); returns files written. Folders and files get the umask's modes. The image's
    layers.json describes the image, not the dataset: it is left out, so the folder is the store entry's."""
    from builder.images.dataset_layers import LAYERS_NAME
    from builder.images.engine import check_target, copy_out

    check_target(Path(directory))
    client = client or connect()
    if not image_exists(client, image):
        raise DockerError(f"image {image} is not in the local engine")
    written = copy_out(client, image, "/dataset", Path(directory))
    try:
        (Path(directory) / LAYERS_NAME).unlink()
    except FileNotFoundError:
        return written
    return written - 1
