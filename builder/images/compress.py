"""Deterministic gzip of the store's uncompressed layer blobs, for registries, made once per layer.

Layers live uncompressed in the OCI layout (a layer's digest is its diff_id); a registry wants them gzipped (Docker
20.10 rejects zstd). The compressor is pinned: ISA-L (`isal`) at level 1, mtime 0, no file name, so the same layer
gives the same compressed bytes, hence the same manifest digest, on every machine with the same `isal` version.
The input is hashed as it is read (a layer blob that no longer matches its diff_id is refused, never pushed), the
output as it is written, straight into the layout's blobs (``Layout.writer``).

Compression is skipped where it does not pay: a layer whose first :data:`PROBE` bytes ISA-L shrinks by less than
:data:`MIN_SAVING` (weights, dataset volumes of encoded images: random-looking bytes) goes up as it is, an OCI
``tar`` layer (``application/vnd.oci.image.layer.v1.tar``, which Docker 20.10 pulls and registries keep like any
blob) whose digest is its diff_id: no compressing, no second copy on disk, and the upload runs at the wire's speed.
The probe reads only the start of the layer, so the choice is made from its bytes alone, the same on every machine.

A record ``$SWCLI_HOME/cache/gzip/<diff_id hex>.json`` = {digest, size, compressor} remembers each result, so a
second push, to any registry, compresses nothing. A record is used only when it names this compressor and its blob
is in the layout with its size; :func:`compressed` with ``verify`` also re-hashes that blob, and a record whose blob
is missing or corrupt is redone (to the same bytes). ISA-L releases the GIL, so several threads compress several
layers at once (a push compresses each layer on the worker that then uploads it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import isal
from isal import isal_zlib

from builder.images.oci import CHUNK, MEDIA_LAYER, Descriptor, Layout, LayoutError
from builder.files import write_json_atomic
from builder.store import swcli_home

MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LEVEL = 1
COMPRESSOR = f"isal {isal.__version__} level {LEVEL}"
GZIP_WBITS = 31  # a gzip wrapper: header with mtime 0, no name, OS 255 (ISA-L writes no host-specific byte)
PROBE = 4 << 20
MIN_SAVING = 0.10  # weights gzip to ~0.92 of their size: 8% saved costs ~10x the upload's CPU time
AS_IS = "none"  # the record's compressor for a layer that goes up uncompressed


@dataclass(frozen=True)
class Compressed:
    """The gzip blob of one layer: ``digest``/``size`` of the compressed bytes, in the layout's blobs."""

    diff_id: str
    digest: str
    size: int
    verified: bool = False  # its bytes were hashed by this process (just written, or re-read)

    @property
    def as_is(self) -> bool:
        """The layer goes up uncompressed: the blob is the layer itself."""
        return self.digest == self.diff_id

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(MEDIA_LAYER if self.as_is else MEDIA_LAYER_GZIP, self.digest, self.size)


def cache_dir() -> Path:
    return swcli_home() / "cache" / "gzip"


def _record_path(folder: Path, diff_id: str) -> Path:
    return folder / f"{diff_id.partition(':')[2]}.json"


def _read_record(folder: Path, diff_id: str) -> dict | None:
    try:
        record = json.loads(_record_path(folder, diff_id).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # missing or unreadable: compress again
    if not isinstance(record, dict) or record.get("compressor") not in (COMPRESSOR, AS_IS):
        return None
    if not isinstance(record.get("digest"), str) or not isinstance(record.get("size"), int):
        return None
    return record


def _hash_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(CHUNK):
            sha.update(piece)
    return "sha256:" + sha.hexdigest()


def _cached(layout: Layout, folder: Path, diff_id: str, verify: bool) -> Compressed | None:
    record = _read_record(folder, diff_id)
    if record is None:
        return None
    if record["compressor"] == AS_IS:
        return Compressed(diff_id, diff_id, record["size"]) if record["digest"] == diff_id else None
    try:
        if not layout.has(record["digest"], record["size"]):
            return None
        if verify and _hash_file(layout.blob_path(record["digest"])) != record["digest"]:
            layout.discard(record["digest"])  # corrupt: its name lies about its bytes
            return None
    except LayoutError:
        return None  # a record naming something that is not a digest
    return Compressed(diff_id, record["digest"], record["size"], verified=verify)


def pays(layout: Layout, layer: Descriptor) -> bool:
    """Whether gzip saves at least :data:`MIN_SAVING` on the layer's first :data:`PROBE` bytes."""
    with layout.open_blob(layer.digest) as fh:
        sample = fh.read(PROBE)
    return len(isal_zlib.compress(sample, LEVEL)) <= (1 - MIN_SAVING) * len(sample)


def _compress(layout: Layout, layer: Descriptor) -> Compressed:
    """Stream the layer blob through ISA-L into a new layout blob, checking the input against its digest."""
    source = layout.blob_path(layer.digest)
    sha = hashlib.sha256()
    size = 0
    engine = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    # open_blob: a LayoutError naming the blob when it is in the layout in no form
    with layout.open_blob(layer.digest) as fh, layout.writer(MEDIA_LAYER_GZIP) as out:
        while piece := fh.read(CHUNK):
            sha.update(piece)
            size += len(piece)
            out.write(engine.compress(piece))
        out.write(engine.flush())
        if size != layer.size or "sha256:" + sha.hexdigest() != layer.digest:
            raise LayoutError(f"layer blob {source} does not match its digest {layer.digest}: the store was "
                              "changed or corrupted; build the image again")
    desc = out.descriptor
    return Compressed(layer.digest, desc.digest, desc.size, verified=True)


def compressed(layout: Layout, layer: Descriptor, *, verify: bool = False, folder: Path | None = None) -> Compressed:
    """The gzip blob of ``layer`` (an uncompressed layer blob in ``layout``): the cached one when its record and
    blob are sound (``verify``: re-hashed too), else compressed now and remembered."""
    if layer.media_type != MEDIA_LAYER:
        raise LayoutError(f"layer {layer.digest} is {layer.media_type}, not an uncompressed layer")
    folder = folder or cache_dir()
    hit = _cached(layout, folder, layer.digest, verify)
    if hit is not None:
        return hit
    if pays(layout, layer):
        made, compressor = _compress(layout, layer), COMPRESSOR
    else:
        made, compressor = Compressed(layer.digest, layer.digest, layer.size), AS_IS
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(_record_path(folder, layer.digest),
                      {"digest": made.digest, "size": made.size, "compressor": compressor})
    return made

