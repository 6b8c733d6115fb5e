"""`swcli dataset build` and `swcli model build`, whole: a folder -> a store entry -> its image.

A dataset folder becomes a store entry (:mod:`builder.build.dataset`), then its `swds/` image; a model folder
becomes a snapshot entry (:mod:`builder.build.model`), then a runtime image is found or built for it
(:mod:`builder.build.runtime`), then its `swmp/` image on that runtime. Every input is checked before any work (an
image reference, a `--dockerfile-only` folder, the runtime a model names), so a typo never costs a long build and
never leaves a new store entry behind a failed command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.build.entry_image import image_for
from builder.refs import image_ref_problem
from builder.store import Store


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
                       on_package: Callable[[object], None] | None = None,
                       on_step: Callable[[str], None] | None = None) -> Built:
    """`swcli dataset build`: the dataset into the store, then its image (unless ``no_image``). ``on_step`` hears
    the Debian base's first build as it starts."""
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
    if dockerfile_only is None:
        from builder.build.runtime import build_base_first

        build_base_first(Store().layout, base_image, (), on_step)
    return Built(result, build_dataset_image(result.entry, base_image=base_image, dockerfile_only=dockerfile_only,
                                             load=load))


def model_with_image(directory: Path, *, runtime: str | None = None, skip_gen_env: bool = False, no_image: bool = False,
                     load: bool = True, dockerfile_only: Path | None = None, store: Store | None = None,
                     on_package: Callable[[object], None] | None = None, verify: bool = False,
                     on_step: Callable[[str], None] | None = None) -> Built:
    """`swcli model build`: the snapshot into the store, then the image on its runtime (``runtime``, else
    model.yaml's run.runtime, else one from pip_req, else from the current env), the runtime built if needed.
    ``on_step`` hears each long step as it starts (the runtime's build and what it is for, the Debian base's)."""
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
    result = build_model(directory, skip_gen_env=skip_gen_env, store=store, verify=verify)
    if on_package:
        on_package(result)
    if no_image:
        return Built(result, None)
    runtime_image = runtime_image or runtime_for_model(
        result.entry, None, store=store, dockerfile_only=dockerfile_only and dockerfile_only / "runtime",
        skip_gen_env=skip_gen_env, load=load, on_step=on_step)
    image = build_model_image(result.entry, runtime_image, dockerfile_only=dockerfile_only and dockerfile_only / "model",
                              load=load, layout=store.layout, verify=verify)
    return Built(result, image, runtime_image)
