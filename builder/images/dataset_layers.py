"""A dataset image's layers: volumes grouped into bounded layers in volume order, then one small meta layer.

Volumes (``data-NNNNN.swds``) go into layers greedily, in order: a layer takes volumes while its total stays within
``attr.layer_size``; a volume bigger than that is a layer of its own. Appending records changes only the last
volume(s), so every earlier layer keeps its bytes and digest, and a new version re-ships only its tail and the meta
layer. The meta layer (last) holds the manifest, the shard index and ``layers.json``, which says which layer holds
each volume, so a reader with only a registry fetches just the layers a record range needs
(docs/volume-format.md, "Image layers").

A volume layer is kept in the layout as a recipe over the store entry's volumes (``layers.write_recipe_layer``:
the bytes stay on disk once), several layers hashed at once; volumes outside the store beside the layout are tarred
into a blob with big reads (:func:`write_volume_tar`). Both are the bytes ``layers.write_tar`` makes of the same
entries (tested). Its cache key is made from the volumes' sha256 in the manifest, so an unchanged layer is never
made, nor a volume hashed, again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from builder.images import context as ctx
from builder.images import recipes
from builder.images.layers import LayerCache, _info, content_key, placed, write_recipe_layer
from builder.files import HashingWriter
from builder.parallel import in_order
from builder.images.oci import MEDIA_LAYER, Descriptor, Layout
from builder.volumes import VolumeFile, manifest_layout, plain_name_problem
from builder.spec import DEFAULT_LAYER_SIZE, MAX_LAYER_SIZE

LAYERS_NAME = "layers.json"
LAYERS_LABEL = "io.swcli.dataset.layers"  # the number of volume layers; the meta layer follows them
DEST = "/dataset"
CHUNK = 8 << 20
MAX_WORKERS = 4  # volume layers hashed at once, at most one per core


class LayersFileError(ValueError):
    """A layers.json that is not what :func:`layers_json` writes; the message names the file and the field."""


def layer_size_of(manifest: dict) -> int:
    """``attr.layer_size`` of a dataset manifest; manifests written before it existed get the default."""
    size = (manifest.get("attr") or {}).get("layer_size")
    return size if isinstance(size, int) and 0 < size <= MAX_LAYER_SIZE else DEFAULT_LAYER_SIZE


def plan_layers(shards: list[VolumeFile], layer_size: int) -> list[list[VolumeFile]]:
    """Volumes in order, grouped greedily into layers of at most ``layer_size`` bytes of volumes; a volume larger
    than that is a layer alone. A group depends only on the volumes before and in it, so appending never moves an
    earlier boundary."""
    groups: list[list[VolumeFile]] = []
    total = 0
    for shard in shards:
        if groups and total + shard.size <= layer_size:
            groups[-1].append(shard)
            total += shard.size
        else:
            groups.append([shard])
            total = shard.size
    return groups


@dataclass(frozen=True)
class VolumeLayer:
    """One planned layer: its folder in a build context (``layers/00003``), its volumes and its cache key."""

    src: str
    shards: tuple[VolumeFile, ...]
    key: str

    def entries(self, folder: Path) -> list[ctx.ContextEntry]:
        """Context entries of its volumes (``layers/00003/data-00012.swds``) from the dataset's ``folder``."""
        return [ctx.from_file(f"{self.src}/{s.file}", folder / s.file) for s in self.shards]


def volume_layers(manifest: dict, where: Path) -> list[VolumeLayer]:
    """The planned volume layers of a dataset manifest (checked by ``manifest_layout``; ``where`` names it)."""
    out = []
    for n, group in enumerate(plan_layers(manifest_layout(manifest, where).volumes, layer_size_of(manifest))):
        key = content_key("dataset volumes", ((f"{DEST[1:]}/{s.file}", s.sha256, False, None) for s in group))
        out.append(VolumeLayer(f"layers/{n:05d}", tuple(group), key))
    return out


# ----------------------------------------------------------------------------------------------- writing


def write_volume_tar(entries: list[ctx.ContextEntry], out) -> None:
    """The tar ``layers.write_tar`` makes of ``entries`` (regular files only, placed under one folder), written
    with big reads: the ``dataset`` folder, then each file's header, bytes and padding, then the end blocks and
    the padding to a whole record, as tarfile does. ``out.write`` must be done with a chunk once the write after
    the next one is called (two read buffers alternate)."""
    entries = sorted(entries, key=lambda e: e.arcname)
    top = entries[0].arcname.split("/", 1)[0]

    def header(info: tarfile.TarInfo) -> bytes:
        return info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")

    written = 0

    def put(data) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    put(header(_info(top, tarfile.DIRTYPE, 0o755)))
    # two buffers in turn: a sink may still be hashing the previous chunk while the next one is read
    views = [memoryview(bytearray(CHUNK)), memoryview(bytearray(CHUNK))]
    turn = 0
    for entry in entries:
        size = entry.stat().st_size
        put(header(_info(entry.arcname, tarfile.REGTYPE, 0o755 if entry.executable else 0o644, size)))
        left = size
        with open(entry.source, "rb", buffering=0) as fh:
            while left:
                view = views[turn]
                turn ^= 1
                n = fh.readinto(view[: min(CHUNK, left)])
                if not n:
                    raise OSError(f"{entry.source}: file shrank while it was being tarred")
                put(view[:n])
                left -= n
        if size % tarfile.BLOCKSIZE:
            put(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))
    put(bytes(2 * tarfile.BLOCKSIZE))
    if written % tarfile.RECORDSIZE:
        put(bytes(tarfile.RECORDSIZE - written % tarfile.RECORDSIZE))


def _store_layer(layout: Layout, entries: list[ctx.ContextEntry]) -> Descriptor:
    """The layer in the layout: a recipe over the volumes when they lie in the store beside it (the bytes stay on
    disk once: :func:`builder.images.layers.write_recipe_layer`, the same digest as the tar), else the tar written
    out as a blob, hashed beside the write."""
    if all(_under(e.source, layout.root.parent) for e in entries):
        return write_recipe_layer(layout, entries)
    with layout.writer(MEDIA_LAYER, behind=True) as out:
        write_volume_tar(entries, out)
    return out.descriptor


def realize_volume_layer(layer: VolumeLayer, folder: Path, layout: Layout, *, store: bool = True,
                         verify: bool = False) -> tuple[Descriptor, bool]:
    """The layer's blob descriptor and whether it was tarred now: from the cache when its key is known, else
    written into the layout (``store``) or only hashed (for a context folder, where the diff_id is all we need)."""
    cache = LayerCache(layout)
    if not store:
        desc = cache.get(layer.key)
        if desc is not None:
            return desc, False
        sink = HashingWriter(None, behind=True)
        write_volume_tar(placed(layer.entries(folder), layer.src, DEST), sink)
        return Descriptor(MEDIA_LAYER, sink.digest(), sink.size), True
    desc = cache.get(layer.key)
    inside = _under(folder, layout.root.parent)
    if desc is not None and inside and not _kept_over(layout, desc.hex, folder):
        # a tar blob of an older swcli, or volumes a removed entry left in oci/files: kept over this entry's
        # volumes instead, so the bytes are on disk once (hashed once more, this time only); a layer kept over
        # another version's volumes (a version that shares them) stays as it is
        cache.forget(layer.key)
    desc = cache.layer(layer.key, lambda: placed(layer.entries(folder), layer.src, DEST), verify=verify,
                       write=_store_layer)
    if cache.misses and inside and recipes.sound(layout.root, desc.hex) is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.blob_path(desc.digest))  # the old copy: readers that have it open keep reading it
    return desc, cache.misses > 0


def _under(path: Path, root: Path) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


def _kept_over(layout: Layout, hexd: str, folder: Path) -> bool:
    """Whether the blob is a recipe (and no file) whose every file part is a file of a store entry of the kind of
    the one at ``folder`` (``datasets/<name>/<version>``)."""
    if layout.blobs.joinpath(hexd).exists():
        return False
    try:
        _, parts = recipes.load(layout.root, hexd)
    except recipes.RecipeError:
        return False
    prefix = Path(os.path.abspath(folder)).parent.parent.relative_to(os.path.abspath(layout.root.parent)).as_posix()
    prefix += "/"
    return all(part.rel.startswith(prefix) for part in parts if isinstance(part, recipes.FilePart))


def realize_volume_layers(layers: list[VolumeLayer], folder: Path, layout: Layout, *, store: bool = True,
                          verify: bool = False) -> list[tuple[Descriptor, bool]]:
    """:func:`realize_volume_layer` of each layer, in order, several at once: a layer's work is a sha256 over its
    volumes (hashlib drops the GIL), so on N cores N layers hash in the time of one."""
    workers = min(len(layers), os.cpu_count() or 1, MAX_WORKERS)
    if workers <= 1:
        return [realize_volume_layer(layer, folder, layout, store=store, verify=verify) for layer in layers]
    return in_order([functools.partial(realize_volume_layer, layer, folder, layout, store=store, verify=verify)
                     for layer in layers], workers, "swds-layer")


# ----------------------------------------------------------------------------------------------- layers.json


def layers_json(layer_size: int, layers: list[VolumeLayer], blobs: list[Descriptor]) -> bytes:
    """``{"layer_size", "layers": [{"diff_id", "size", "volumes"}]}``: the volume layers in image order (without
    the meta layer), sorted keys, two-space indent, one trailing newline; the same inputs give the same bytes."""
    doc = {"layer_size": layer_size,
           "layers": [{"diff_id": blob.digest, "size": blob.size, "volumes": [s.file for s in layer.shards]}
                      for layer, blob in zip(layers, blobs, strict=True)]}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def read_layers_json(data: bytes, where: str = LAYERS_NAME) -> dict:
    """Parse and check a layers.json (``where`` names it in errors): every diff_id a sha256 digest, sizes
    non-negative integers, volumes plain file names, each volume in one layer only."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise LayersFileError(f"{where}: not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise LayersFileError(f"{where}: field 'layers': expected a list")
    if not _count(doc.get("layer_size")):
        raise LayersFileError(f"{where}: field 'layer_size': expected a non-negative integer")
    seen: set[str] = set()
    for n, layer in enumerate(doc["layers"]):
        field = f"layers[{n}]"
        if not isinstance(layer, dict):
            raise LayersFileError(f"{where}: field '{field}': expected an object")
        digest = layer.get("diff_id")
        hexd = digest[7:] if isinstance(digest, str) and digest.startswith("sha256:") else ""
        if len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            raise LayersFileError(f"{where}: field '{field}.diff_id': {digest!r} is not a sha256 digest")
        if not _count(layer.get("size")):
            raise LayersFileError(f"{where}: field '{field}.size': expected a non-negative integer")
        volumes = layer.get("volumes")
        if not isinstance(volumes, list) or not volumes:
            raise LayersFileError(f"{where}: field '{field}.volumes': expected a non-empty list of file names")
        for name in volumes:
            problem = plain_name_problem(name)
            if problem or name in seen:
                raise LayersFileError(f"{where}: field '{field}.volumes': {problem or f'{name!r} is listed twice'}")
            seen.add(name)
    return doc


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
