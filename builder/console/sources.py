"""What `swcli console` shows of the store: models, datasets and runtimes with their versions, sizes, image digests
and where they were pushed; and which registry image a run's model could be attached to.

Pure reads with the collaborators passed in (the :class:`~builder.store.Store`, a
:class:`~builder.console.registry_view.RegistryView`). Sizes are the bytes of an entry's regular files, found with
``lstat`` (links are counted as links, never followed; a file hard-linked twice counts once) and cached by the
entry folder's (path, inode, mtime): entries never change once published, so a listing of 100 entries walks each
one once per process. Where an entry was pushed comes from the store's push records
(:func:`builder.distribute.push.push_records`), read bounded and shape-checked.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from builder.errors import SwcliError
from builder.files import stat_key
from builder.store import KINDS, Entry, Store

MAX_WALK = 200_000    # files counted in one entry; a bigger (planted) tree shows no size rather than stall the page
MAX_SIZES = 10_000    # entry sizes remembered
_sizes: OrderedDict[tuple, int | None] = OrderedDict()
_sizes_lock = threading.Lock()


def entry_size(path: Path) -> int | None:
    """The bytes of the regular files under ``path`` (not following links; each inode once); None when the folder
    cannot be read or holds more than :data:`MAX_WALK` files. Cached by the path and the folder's own stat (not
    through a link)."""
    stamp = stat_key(path, follow=False)
    if stamp is None:
        return None
    key = (str(path), *stamp)
    with _sizes_lock:
        if key in _sizes:
            _sizes.move_to_end(key)
            return _sizes[key]
    size = _walk_size(path)
    with _sizes_lock:
        _sizes[key] = size
        while len(_sizes) > MAX_SIZES:
            _sizes.popitem(last=False)
    return size


def _walk_size(path: Path) -> int | None:
    total, seen, count, stack = 0, set(), 0, [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as items:
                for item in items:
                    count += 1
                    if count > MAX_WALK:
                        return None
                    st = item.stat(follow_symlinks=False)
                    if item.is_dir(follow_symlinks=False):
                        stack.append(item.path)
                    elif item.is_file(follow_symlinks=False) and (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_size
        except OSError:
            return None
    return total


def _entry_image(entry: Entry, refs: dict) -> dict:
    """``{"ref", "digest"}`` of the entry's image in the layout (``refs``: the layout's ref -> descriptor), or
    Nones. A model with images on several runtimes shows the one ``:latest`` names, else its newest tag's."""
    from builder.refs import image_name, image_tags, is_model_tag_of

    if entry.kind != "model":
        ref = image_tags(entry.kind, entry.name, entry.version)[0]
        found = refs.get(ref)
        return {"ref": ref if found else None, "digest": found.digest if found else None}
    repo = image_name("model", entry.name)
    mine = {ref: desc for ref, desc in refs.items()
            if ref.rpartition(":")[0] == repo and is_model_tag_of(ref.rpartition(":")[2], entry.version)}
    if not mine:
        return {"ref": None, "digest": None}
    latest = refs.get(f"{repo}:latest")
    chosen = [r for r, d in mine.items() if latest is not None and d.digest == latest.digest] or sorted(mine)
    ref = max(chosen, key=len)  # `<version>-<image id>` rather than an older bare `<version>`
    return {"ref": ref, "digest": mine[ref].digest}


def _pushes(store: Store, problems: list[str]) -> list[dict]:
    from builder.distribute.push import push_records

    try:
        return push_records(store)
    except SwcliError as err:
        problems.append(str(err))
        return []


def _pushed(entry: Entry, records: list[dict]) -> list[str]:
    """The refs ``entry`` was pushed to, newest first, each once."""
    refs: list[str] = []
    for record in reversed(records):
        if (record["kind"], record["name"], record["version"]) == (entry.kind, entry.name, entry.version) \
                and record["ref"] not in refs:
            refs.append(record["ref"])
    return refs


def overview(store: Store) -> dict:
    """``{"models", "datasets", "runtimes": [item...], "problems": [line...]}``; an item is ``{"name", "version",
    "short_version", "created", "size", "image": {"ref", "digest"}, "pushed": [ref...]}``, newest first. An
    unreadable entry, layout or push record is a line in ``problems`` and never hides the rest."""
    from builder.images.oci import LayoutError

    problems: list[str] = []
    try:
        refs = store.layout.refs()
    except (LayoutError, OSError, KeyError, TypeError, ValueError) as err:
        problems.append(f"{store.layout.root}: the image index is unreadable: {err}")
        refs = {}
    records = _pushes(store, problems)
    out: dict = {}
    for kind in KINDS:
        entries, unreadable = store.scan(kind)
        problems += unreadable
        out[f"{kind}s"] = [{"name": e.name, "version": e.version, "short_version": e.short_version,
                            "created": e.created, "size": entry_size(e.path), "image": _entry_image(e, refs),
                            "pushed": _pushed(e, records)} for e in entries]
    out["problems"] = problems
    return out


def attach_target(run, view_or_store) -> str | None:
    """The registry image a run's model was pushed to, ``REGISTRY/REPO:TAG@digest``, for the console's "attach to
    REF" button; None when the run evaluated no store model, or its model was never pushed. With a
    :class:`~builder.console.registry_view.RegistryView`: a model image of its last listing; with a Store: the
    newest push record of the very image the run evaluated (by image id when run.json names one, else by the
    model's name and version)."""
    model = (run.run.get("model") or {}) if isinstance(getattr(run, "run", None), dict) else {}
    model = model if isinstance(model, dict) else {}
    name, version, image_id = model.get("name"), model.get("version"), model.get("image")
    if not isinstance(version, str) or not version:
        return None
    if not isinstance(view_or_store, Store):
        return view_or_store.model_ref(name, version, image_id if isinstance(image_id, str) else None)
    try:
        from builder.distribute.push import push_records

        records = push_records(view_or_store)
    except SwcliError:
        return None
    for record in reversed(records):
        if record["kind"] != "model":
            continue
        if (record["image_id"] == image_id) if image_id else ((record["name"], record["version"]) == (name, version)):
            return f"{record['ref']}@{record['digest']}"
    return None
