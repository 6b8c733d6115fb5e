"""`swcli dataset|model|runtime push`: an image from the store's OCI layout straight to a registry, no engine.

The remote image is an OCI manifest with the same config blob (so the same image id) and the layers gzipped by
:mod:`builder.images.compress` where it pays (weights and other random-looking layers go up as they are, tar layers
read straight from the layout; deterministic, cached per layer: the same image pushed from two machines has the
same manifest digest, and a second push to any registry compresses nothing). Blobs are skipped, mounted or uploaded
by :func:`~builder.distribute.blobs.send_blobs`, each layer compressed on the worker that sends it (largest
first, so compressing overlaps uploading); the manifest is PUT last, once every blob is in, so a push that
fails leaves no tag. A runtime image's CycloneDX SBOM, when it carries one, is attached to the pushed manifest as a
referrer artifact (:mod:`builder.distribute.artifact`).

A push that succeeds is recorded in the store's ``pushes.json`` (:func:`record_push`: the entry, the image id, the
remote ref and digest, the time; the newest :data:`MAX_PUSHES`): where an entry was pushed is shown by
`swcli console`, which reads it back bounded and shape-checked (:func:`push_records`). The record is a convenience:
a push whose record cannot be written still succeeds.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from builder.errors import RegistryError, StoreError, SwcliError
from builder.files import flock_wait
from builder.images.oci import MEDIA_CONFIG, MEDIA_MANIFEST, Layout, LayoutError, canonical_json
from builder.registry import ClientFor
from builder.distribute.artifact import CREATED, EMPTY_CONFIG, ArtifactFile, put_artifact
from builder.distribute.blobs import (Blob, KnownBlobs, OnProgress, TransferResult, file_source,
                                      registry_clients, send_blobs)


def _layer_blob(layout: Layout, layer, item) -> Blob:
    """A gzip layer blob whose bytes are re-hashed (and made again if damaged) just before they are uploaded."""
    from builder.images.compress import compressed

    if item.as_is:  # the layer itself goes up; the registry checks its digest as it stores it
        return Blob(item.digest, item.size, lambda: contextlib.nullcontext(lambda: layout.open_blob(layer.digest)))

    @contextlib.contextmanager
    def source():
        checked = item if item.verified else compressed(layout, layer, verify=True)
        if checked.digest != item.digest:
            raise LayoutError(f"layer {item.diff_id} compressed to {checked.digest}, not {item.digest} as before")
        path = layout.blob_path(item.digest)
        yield lambda: open(path, "rb")

    return Blob(item.digest, item.size, source)


def remote_manifest(image, layers) -> bytes:
    """The OCI manifest a registry gets: our config blob, the gzip layers, in one canonical serialisation."""
    return canonical_json({
        "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": image.config.digest, "size": image.config.size},
        "layers": [item.descriptor.to_json() for item in layers]})


def attach_sbom(client, repository: str, subject_digest: str, subject_size: int, sbom: bytes) -> str:
    """Push ``sbom`` as an OCI artifact whose ``subject`` is the pushed manifest; returns the artifact's digest."""
    from builder.images.image import created_time
    from builder.images.sbom import SBOM_MEDIA_TYPE

    subject = {"mediaType": MEDIA_MANIFEST, "digest": subject_digest, "size": subject_size}
    return put_artifact(client, repository, subject, SBOM_MEDIA_TYPE,
                        [ArtifactFile.from_bytes("sbom.cdx.json", sbom, SBOM_MEDIA_TYPE)],
                        {CREATED: created_time()}, config=EMPTY_CONFIG)


def push(kind: str, ref: str, target: str, *, credentials=None, ca_cert: Path | None = None,
         on_progress: OnProgress | None = None, layout: Layout | None = None, store=None,
         client_for: ClientFor | None = None) -> TransferResult:
    """Push the image of ``ref`` (a store entry or an image in the layout) as ``target`` (REGISTRY/REPO[:TAG])."""
    from builder.images.compress import compressed
    from builder.images.image import read_image
    from builder.registry.reference import Reference
    from builder.build.entry_image import image_for
    from builder.store import Store

    layout_given = layout
    local = image_for(kind, ref, store)
    dest = Reference.parse(target)
    if dest.digest is not None:
        raise RegistryError(f"push to {target}: give a tag, not a digest (the digest is what the push makes)")
    layout = layout or (store or Store()).layout
    image = read_image(layout, local)
    if image is None:
        raise RegistryError(f"image {local} is not in the store's OCI layout ({layout.root}); build it first "
                            f"(swcli {kind} build)")
    what = f"push of {dest}"
    result = TransferResult(str(dest))
    try:
        client = (client_for or registry_clients(credentials=credentials, ca_cert=ca_cert))(dest.registry)
        client.ping(dest.repository)  # auth settled (and refused early) before blobs go up in parallel
        made: dict[str, object] = {}

        def prepare(layer) -> Blob:  # on a worker thread: compressing one layer overlaps uploading another
            made[layer.digest] = compressed(layout, layer)
            return _layer_blob(layout, layer, made[layer.digest])

        largest_first = sorted({layer.digest: layer for layer in image.layers}.values(), key=lambda b: -b.size)
        known = KnownBlobs(dest.registry)
        send_blobs(client, dest.repository, [
            Blob(image.config.digest, image.config.size, file_source(layout.blob_path(image.config.digest)), "config"),
            *(functools.partial(prepare, layer) for layer in largest_first)], result, known, on_progress=on_progress)
        manifest = remote_manifest(image, [made[layer.digest] for layer in image.layers])
        result.digest = client.put_manifest(dest.repository, dest.tag, manifest, MEDIA_MANIFEST)
    except RegistryError as err:
        raise RegistryError(f"{what} failed: {err}") from None
    if kind == "runtime":
        from builder.images.sbom import read_sbom

        sbom = read_sbom(layout, image)
        if sbom is not None:
            try:
                attach_sbom(client, dest.repository, result.digest, len(manifest), sbom)
            except RegistryError as err:
                raise RegistryError(f"{what}: the image is pushed ({result.digest}) but its SBOM could not be "
                                    f"attached: {err}") from None
    if layout_given is None:
        record_push(store or Store(), image, dest, result.digest)
    return result


# --- where entries were pushed (pushes.json in the store) ----------------------------------------------------------

PUSHES = "pushes.json"
MAX_PUSHES = 500             # records kept, newest last: ~150 KB; one store seldom pushes more images than that
MAX_PUSHES_FILE = 1 << 20    # read at most this much of the file back (it lies in a folder that could be planted)
LOCK_WAIT = 5.0              # seconds a push waits for another push's record to be written, then records nothing
_RECORD_KEYS = ("kind", "name", "version", "image_id", "ref", "digest", "at")


def record_problem(record: object) -> str | None:
    """Why ``record`` (read back from pushes.json) is not one push record, or None."""
    from builder.refs import image_ref_problem, is_version, name_problem
    from builder.registry.media import DIGEST_RE
    from builder.store import KINDS

    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in _RECORD_KEYS):
        return "not an object of strings " + ", ".join(_RECORD_KEYS)
    if record["kind"] not in KINDS or name_problem(record["name"]) or not is_version(record["version"]):
        return "kind, name or version is not one"
    if image_ref_problem(record["ref"]) or not all(DIGEST_RE.fullmatch(record[k]) for k in ("image_id", "digest")):
        return "ref, image_id or digest is not one"
    return "at: too long" if len(record["at"]) > 64 else None


def push_records(store) -> list[dict]:
    """The pushes recorded in ``store``, oldest first; records of the wrong shape are passed over. StoreError
    (one line naming the file) when the file is unreadable: a link, a FIFO, over 1 MiB, not JSON."""
    from builder.bounded import read_json

    path = store.root / PUSHES
    if not os.path.lexists(path):
        return []
    document = read_json(path, MAX_PUSHES_FILE, str(path),
                         error=lambda msg: StoreError(path, msg.removeprefix(f"{path}: ")))
    pushes = document.get("pushes") if isinstance(document, dict) else None
    if not isinstance(pushes, list):
        raise StoreError(path, "expected an object with a list 'pushes'")
    return [{k: r[k] for k in _RECORD_KEYS} for r in pushes if record_problem(r) is None]


def record_push(store, image, dest, digest: str) -> bool:
    """Add this push to ``store``'s pushes.json (atomic rewrite under an flock, the newest :data:`MAX_PUSHES`
    kept); False when it could not be (a damaged file is started over; an image without swcli's labels, or a
    store that cannot be written, records nothing). Never raises: the push itself has succeeded."""
    from builder.distribute.blobs import check_labels
    from builder.files import write_json_atomic
    from builder.store import utc_now

    try:
        kind, name, version = check_labels(str(dest), image.labels)
        record = {"kind": kind, "name": name, "version": version, "image_id": image.image_id,
                  "ref": f"{dest.registry}/{dest.repository}:{dest.tag}", "digest": digest, "at": utc_now()}
        if record_problem(record) is not None:
            return False
        store.root.mkdir(parents=True, exist_ok=True)
        with _locked(store.root / (PUSHES + ".lock")):
            try:
                kept = push_records(store)
            except SwcliError:
                kept = []
            kept = [r for r in kept if (r["ref"], r["digest"]) != (record["ref"], record["digest"])] + [record]
            write_json_atomic(store.root / PUSHES, {"pushes": kept[-MAX_PUSHES:]})
        return True
    except (SwcliError, OSError, TimeoutError):
        return False


@contextlib.contextmanager
def _locked(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    try:
        if not flock_wait(fd, LOCK_WAIT):
            raise TimeoutError(f"{path} is held by another process")
        yield
    finally:
        os.close(fd)
