"""Packages with their images, for the CLI and for library callers: the build -> runtime -> image sequence.

Every input is checked before any work (an image reference, a `--dockerfile-only` folder, the runtime a model
names), so a typo never costs a long build and never leaves a new store entry behind a failed command. Also the one
place that turns a ref into the image it names (:func:`image_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.errors import RefNotFoundError
from builder.refs import image_name, image_ref_problem, image_tags, is_model_tag_of
from builder.store import Entry, Store
from builder.text import clipped


def image_for(kind: str, ref: str, store: Store | None = None) -> str:
    """The image a ref names: a store entry's `swds|swrt/<name>:<version>` or model image (:func:`model_image`),
    else ``ref`` itself when it is an image reference with a registry path or a tag (`python:3.11`,
    `registry:5000/swmp/x:1`, `swmp/x:<version>-<image id>`)."""
    store = store or Store()
    try:
        entry = store.resolve(kind, ref)
    except RefNotFoundError:
        if not ("/" in ref or ":" in ref or "@" in ref):
            raise
        problem = image_ref_problem(ref)
        if problem is None:
            return ref
        raise RefNotFoundError(kind, ref, f"and it is not an image either: {problem}") from None
    if kind != "model":
        return image_tags(kind, entry.name, entry.version)[0]
    image = model_image(entry, store)
    if image is None:
        raise RefNotFoundError(kind, ref, f"{entry.ref} has no image in the store ({store.root / 'oci'}): build one "
                                          "with `swcli model build` (without --no-image), or pull it")
    return image


def model_images(entry: Entry, store: Store) -> dict[str, list[str]]:
    """Manifest digest -> the tags naming it, for every image of a model entry in the store's layout: one per
    runtime it was built on (`<version>-<image id>`), and the bare `<version>` an older swcli moved from one to the
    next."""
    from builder.images.oci import Layout

    repo = image_name("model", entry.name)
    found: dict[str, list[str]] = {}
    for ref, manifest in sorted(Layout(store.root / "oci").refs().items()):
        name, _, tag = ref.rpartition(":")
        if name == repo and is_model_tag_of(tag, entry.version):
            found.setdefault(manifest.digest, []).append(ref)
    return found


def model_image(entry: Entry, store: Store) -> str | None:
    """The image a model ref names: its only image, else the one `:latest` names (the newest built or pulled);
    None when it has none. Images on several runtimes, none of them the newest: a one-line error naming each,
    so the caller picks one by its tag (a tag names one image for good)."""
    images = model_images(entry, store)
    if len(images) > 1:
        from builder.images.oci import Layout

        latest = Layout(store.root / "oci").resolve(f"{image_name('model', entry.name)}:latest")
        images = {d: refs for d, refs in images.items() if latest is not None and d == latest.digest} or images
    if not images:
        return None
    if len(images) == 1:
        return max(next(iter(images.values())), key=len)  # `<version>-<id>` rather than an older bare `<version>`
    named = ", ".join(f"{max(refs, key=len)} (on {_runtime_of(store, refs[0])})" for refs in images.values())
    raise RefNotFoundError("model", entry.ref, f"it has {len(images)} images: {named}; "
                                               "name one of them instead of the model")


def model_image_id(name: str, version: str, store: Store) -> str | None:
    """The image id of the image a model names (for run.json), or None: no image, several, or an unreadable layout
    (a run does not fail for it; it only does not name an image)."""
    from builder.errors import SwcliError
    from builder.images.image import read_image
    from builder.images.oci import Layout

    try:
        tag = model_image(Entry("model", name, version, store.kind_dir("model") / name / version, {}), store)
        image = read_image(Layout(store.root / "oci"), tag) if tag else None
    except (SwcliError, OSError, ValueError):
        return None
    return image.image_id if image is not None else None


def _runtime_of(store: Store, ref: str) -> str:
    from builder.errors import SwcliError
    from builder.images.image import read_image
    from builder.images.oci import Layout

    try:
        image = read_image(Layout(store.root / "oci"), ref)
    except (SwcliError, OSError):
        image = None
    label = (image.labels.get("io.swcli.runtime") if image else None) or "an unknown runtime"
    return clipped(label, 200)  # a pulled image's label: shown, not obeyed


@dataclass(frozen=True)
class Built:
    package: object  # DatasetBuildResult | ModelBuildResult
    image: object | None  # ImageResult, or None with no_image
    runtime_image: str | None = None


def _check_image_flag(flag: str, image: str | None) -> None:
    from builder.images.build import ImageFlagError, ImageInputError

    if image is not None and image_ref_problem(image):
        raise (ImageFlagError if flag.startswith("--") else ImageInputError)(f"{flag}: {image_ref_problem(image)}")


def dataset_with_image(directory: Path, *, base_image: str, no_image: bool = False, load: bool = True,
                       dockerfile_only: Path | None = None, progress: Callable[[int], None] | None = None,
                       on_package: Callable[[object], None] | None = None) -> Built:
    """`swcli dataset build`: the dataset into the store, then its image (unless ``no_image``)."""
    from builder.images.build import build_dataset_image
    from builder.images.context import check_context_dir
    from builder.build.dataset import build_dataset

    if not no_image:
        _check_image_flag("--base-image", base_image)
        if dockerfile_only is not None:
            check_context_dir(dockerfile_only)
    result = build_dataset(directory, progress=progress)
    if on_package:
        on_package(result)
    if no_image:
        return Built(result, None)
    return Built(result, build_dataset_image(result.entry, base_image=base_image, dockerfile_only=dockerfile_only,
                                             load=load))


def model_with_image(directory: Path, *, runtime: str | None = None, skip_gen_env: bool = False, no_image: bool = False,
                     load: bool = True, dockerfile_only: Path | None = None, store: Store | None = None,
                     on_package: Callable[[object], None] | None = None) -> Built:
    """`swcli model build`: the snapshot into the store, then the image on its runtime (``runtime``, else
    model.yaml's run.runtime, else one from pip_req, else from the current env), the runtime built if needed."""
    from builder.images.build import build_model_image
    from builder.images.context import check_context_dir
    from builder.build.model import build_model
    from builder.build.runtime import runtime_for_model
    from builder.spec import load_model_spec

    store = store or Store()
    runtime_image = None
    if not no_image:
        if dockerfile_only is not None:  # it receives runtime/ and model/: the folder itself must be new or empty
            check_context_dir(dockerfile_only)
        named = runtime or load_model_spec(directory).runtime
        if named:
            runtime_image = image_for("runtime", named, store)
            _check_image_flag("--runtime" if runtime else "model.yaml run.runtime", runtime_image)
    result = build_model(directory, skip_gen_env=skip_gen_env, store=store)
    if on_package:
        on_package(result)
    if no_image:
        return Built(result, None)
    runtime_image = runtime_image or runtime_for_model(
        result.entry, None, store=store, dockerfile_only=dockerfile_only and dockerfile_only / "runtime",
        skip_gen_env=skip_gen_env, load=load)
    image = build_model_image(result.entry, runtime_image, dockerfile_only=dockerfile_only and dockerfile_only / "model",
                              load=load)
    return Built(result, image, runtime_image)
