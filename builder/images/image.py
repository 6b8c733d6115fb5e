"""Images as values: a config, a manifest and an ordered list of layers, written into the OCI layout.

An image is built on a parent (the base, or the runtime a model runs on) by appending layers and changing its
run-time config, the way a Dockerfile's FROM, COPY, ENV, LABEL... would. Nothing in it depends on the host or the
clock: ``created`` is ``SOURCE_DATE_EPOCH`` (0 when unset) everywhere, so the same inputs give the same config
digest, which is the image id an engine shows, on every machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from builder.images.oci import MEDIA_CONFIG, MEDIA_LAYER, MEDIA_MANIFEST, Descriptor, Layout, LayoutError


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def created_time() -> str:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org) as RFC 3339, else the epoch itself."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        seconds = int(raw)
    except ValueError:
        raise LayoutError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, got {raw!r}") from None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class NewLayer:
    """A layer blob already in the layout and the history line that says what it holds."""

    blob: Descriptor
    comment: str


@dataclass(frozen=True)
class ConfigChanges:
    """What a Dockerfile's ENV, LABEL, USER, WORKDIR, VOLUME, ENTRYPOINT and CMD would change."""

    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    volumes: tuple[str, ...] = ()
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None


@dataclass(frozen=True)
class Image:
    """An image in the layout: its manifest and config descriptors, the config itself, its layer blobs."""

    manifest: Descriptor
    config: Descriptor
    config_json: dict
    layers: tuple[Descriptor, ...]

    @property
    def image_id(self) -> str:
        """What `docker images --no-trunc` shows once it is loaded: the config's digest."""
        return self.config.digest

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config_json["rootfs"]["diff_ids"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config_json.get("config", {}).get("Labels") or {})


def _merge_env(env: list[str], changes: dict[str, str]) -> list[str]:
    out = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    out.update(changes)
    return [f"{k}={v}" for k, v in out.items()]


def scratch_config() -> dict:
    return {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
            "history": []}


def build_config(parent: dict | None, layers: list[NewLayer], changes: ConfigChanges) -> dict:
    """The parent's config with ``layers`` appended and ``changes`` applied; no host- or time-specific field."""
    base = parent or scratch_config()
    run = dict(base.get("config") or {})
    env = list(run.get("Env") or [])
    if parent is not None and not any(item.startswith("PATH=") for item in env):
        env.append(f"PATH={DEFAULT_PATH}")  # what `docker build` gives an image whose parent sets no PATH
    if changes.env or env != list(run.get("Env") or []):
        run["Env"] = _merge_env(env, changes.env)
    if changes.labels:
        run["Labels"] = {**(run.get("Labels") or {}), **changes.labels}
    if changes.user is not None:
        run["User"] = changes.user
    if changes.workdir is not None:
        run["WorkingDir"] = changes.workdir
    if changes.volumes:
        run["Volumes"] = {**(run.get("Volumes") or {}), **{v: {} for v in changes.volumes}}
    if changes.entrypoint is not None:
        run["Entrypoint"] = list(changes.entrypoint)
        if changes.cmd is None:
            run.pop("Cmd", None)  # like a Dockerfile: a new ENTRYPOINT drops the inherited CMD
    if changes.cmd is not None:
        run["Cmd"] = list(changes.cmd)
    when = created_time()
    history = [dict(h) for h in base.get("history") or []]
    history += [{"created": when, "created_by": f"swcli: {layer.comment}", "comment": "written by swcli"} for layer in layers]
    return {
        "architecture": base.get("architecture", "amd64"),
        "os": base.get("os", "linux"),
        "created": when,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": [*base.get("rootfs", {}).get("diff_ids", []),
                                                   *(layer.blob.digest for layer in layers)]},
        "history": history,
    }


def write_image(layout: Layout, parent: Image | None, layers: list[NewLayer], changes: ConfigChanges,
                refs: list[str] = ()) -> Image:
    """Write the config and manifest of ``parent`` + ``layers`` + ``changes`` and point ``refs`` at it.

    Layers are stored uncompressed, so each layer blob's digest is also its diff_id. An image whose manifest is
    already in the layout is not written again; the refs are (re)pointed either way.
    """
    for layer in layers:
        if layer.blob.media_type != MEDIA_LAYER or not layout.has(layer.blob.digest, layer.blob.size):
            raise LayoutError(f"layer {layer.blob.digest} ({layer.comment}) is not in the layout")
    config_json = build_config(parent.config_json if parent else None, layers, changes)
    config = layout.put_json(config_json, MEDIA_CONFIG)
    blobs = [*(parent.layers if parent else ()), *(layer.blob for layer in layers)]
    manifest_json = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config.to_json(),
                     "layers": [b.to_json() for b in blobs]}
    manifest = layout.put_json(manifest_json, MEDIA_MANIFEST)
    for ref in refs:
        layout.tag(ref, manifest)
    return Image(manifest, config, config_json, tuple(blobs))


def read_image(layout: Layout, ref: str) -> Image | None:
    """The image ``ref`` names in the layout (checking every blob is present), or None."""
    manifest = layout.resolve(ref)
    if manifest is None:
        return None
    doc = layout.read_json(manifest)
    try:
        config = Descriptor.from_json(doc["config"])
        layers = tuple(Descriptor.from_json(layer) for layer in doc["layers"])
    except (KeyError, TypeError, ValueError) as err:
        raise LayoutError(f"{layout.blob_path(manifest.digest)}: not an image manifest ({err})") from None
    for blob in layers:
        if not layout.has(blob.digest, blob.size):
            raise LayoutError(f"{ref}: layer {blob.digest} is missing from {layout.blobs}{_why_missing(layout, blob)}")
    return Image(manifest, config, layout.read_json(config), layers)


def _why_missing(layout: Layout, blob: Descriptor) -> str:
    """For a layer kept as a recipe over store files (:mod:`builder.images.recipes`): the first file it names that
    is gone or changed, and what to do (its files were deleted or edited by hand: `remove` keeps what images use)."""
    from builder.images import recipes

    try:
        _, parts = recipes.load(layout.root, blob.hex)
    except recipes.RecipeError:
        return ""
    for part in parts:
        if isinstance(part, recipes.FilePart):
            try:
                st = os.stat(layout.root.parent / part.rel, follow_symlinks=False)
            except OSError:
                st = None
            if st is None or not part.matches(st):
                how = "is gone" if st is None else "changed"
                return (f": it was kept as a recipe over {part.rel}, which {how} (deleted or edited outside swcli); "
                        "build the dataset or model again")
    return ""
