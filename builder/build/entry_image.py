"""Which image a ref names: a store entry's image in the store's OCI layout, or an image reference as it is.

Datasets and runtimes have one image per version (`swds|swrt/<name>:<version>`); a model has one per runtime it
was built on (`swmp/<name>:<version>-<image id>`), and a ref names the only one or the newest (`:latest`). Every
command that runs, pushes or exports an image asks here (:func:`image_for`).
"""

from __future__ import annotations

from builder.errors import RefNotFoundError, SwcliError
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
        raise RefNotFoundError(kind, ref, f"{entry.ref} has no image in the store ({store.layout.root}): build one "
                                          "with `swcli model build` (without --no-image), or pull it")
    return image


def model_images(entry: Entry, store: Store) -> dict[str, list[str]]:
    """Manifest digest -> the tags naming it, for every image of a model entry in the store's layout: one per
    runtime it was built on (`<version>-<image id>`), and the bare `<version>` an older swcli moved from one to the
    next."""
    repo = image_name("model", entry.name)
    found: dict[str, list[str]] = {}
    for ref, manifest in sorted(store.layout.refs().items()):
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
        latest = store.layout.resolve(f"{image_name('model', entry.name)}:latest")
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
    from builder.images.image import read_image

    try:
        tag = model_image(Entry("model", name, version, store.kind_dir("model") / name / version, {}), store)
        image = read_image(store.layout, tag) if tag else None
    except (SwcliError, OSError, ValueError):
        return None
    return image.image_id if image is not None else None


def _runtime_of(store: Store, ref: str) -> str:
    from builder.images.image import read_image

    try:
        image = read_image(store.layout, ref)
    except (SwcliError, OSError):
        image = None
    label = (image.labels.get("io.swcli.runtime") if image else None) or "an unknown runtime"
    return clipped(label, 200)  # a pulled image's label: shown, not obeyed
