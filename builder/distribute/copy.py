"""`swcli copy`: an swcli image from one registry to another, over the distribution API; no engine, no store.

The manifest's bytes are PUT verbatim, so the image has the same digest on both sides. Each blob the target lacks
is mounted (the same registry: from the source repository; another: from a repository known to hold it) or
fetched into a temp file under ``$SWCLI_HOME/tmp`` (its digest verified) and uploaded from there. An index is
copied with every image it lists. The image's labels are checked before any blob moves: only swcli images are
copied.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from builder.errors import RegistryError
from builder.images.oci import Descriptor
from builder.registry import ClientFor
from builder.registry.media import INDEX_TYPES, MAX_CONFIG, checked_descriptor, checked_list
from builder.distribute.blobs import (Blob, KnownBlobs, OnProgress, TransferResult, check_labels,
                                      registry_clients, send_blobs)
from builder.store import swcli_home


def source_what(client, repository: str) -> str:
    return f"{getattr(client, 'registry', '?')}/{repository}"


def _fetched_source(client, repository: str, digest: str, size: int):
    """A blob source that fetches ``digest`` into a temp file (removed afterwards) and yields its opener."""

    @contextlib.contextmanager
    def source():
        from builder.distribute.pull import DiskBudget

        folder = swcli_home() / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        DiskBudget(folder).take(size, f"blob {digest} of {source_what(client, repository)} ({size} bytes)")
        fd, tmp = tempfile.mkstemp(prefix=f".copy-{os.getpid()}-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                client.fetch_blob(repository, digest, out, size=size)
            yield lambda: open(tmp, "rb")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    return source


def _copy_image(src, source, dst, dest, manifest, known: KnownBlobs, result: TransferResult,
                on_progress: OnProgress | None) -> None:
    """The blobs of one image manifest, then the manifest itself under its digest."""
    import io

    from builder.distribute.pull import MAX_BLOB, _image_config, _json

    what = str(source)
    doc = _json(manifest.data, what, "an image manifest")
    config = Descriptor.from_json(checked_descriptor(doc.get("config"), f"{what}: config", max_size=MAX_CONFIG))
    layers = [Descriptor.from_json(checked_descriptor(layer, f"{what}: layers[{n}]", max_size=MAX_BLOB))
              for n, layer in enumerate(checked_list(doc.get("layers"), f"{what}: layers"))]
    buffer = io.BytesIO()
    src.fetch_blob(source.repository, config.digest, buffer, size=config.size)
    _, labels, _ = _image_config(buffer.getvalue(), config, what)
    check_labels(what, labels)
    config_digest, config_size = config.digest, config.size
    descs = [(config.digest, config.size), *((layer.digest, layer.size) for layer in layers)]
    data = buffer.getvalue()
    same = source.registry == dest.registry
    send_blobs(dst, dest.repository, [
        Blob(config_digest, config_size, lambda: contextlib.nullcontext(lambda: io.BytesIO(data)), "config"),
        *(Blob(d, s, _fetched_source(src, source.repository, d, s)) for d, s in descs[1:])],
        result, known, on_progress=on_progress, also_from=source.repository if same else None)


def copy(source_text: str, target_text: str, *, ca_cert: Path | None = None, on_progress: OnProgress | None = None,
         client_for: ClientFor | None = None) -> TransferResult:
    """Copy ``source_text`` to ``target_text`` (both REGISTRY/REPO[:TAG|@DIGEST]); the digest is kept."""
    from builder.registry.reference import Reference

    source, dest = Reference.parse(source_text), Reference.parse(target_text)
    result = TransferResult(str(dest))
    try:
        client_for = client_for or registry_clients(ca_cert=ca_cert)
        src = client_for(source.registry)
        dst = src if dest.registry == source.registry else client_for(dest.registry)
        for client, ref in ((src, source), (dst, dest)):
            client.ping(ref.repository)  # auth settled before blobs move in parallel
        known = KnownBlobs(dest.registry)
        top = src.get_manifest(source.repository, source.ref)
        if top.media_type in INDEX_TYPES:
            from builder.distribute.pull import _json

            index = _json(top.data, str(source), "an image index")
            children = [checked_descriptor(entry, f"{source}: manifests[{n}]")["digest"]
                        for n, entry in enumerate(checked_list(index.get("manifests") or [], f"{source}: manifests"))]
            for digest in children:
                child = src.get_manifest(source.repository, digest)
                _copy_image(src, source, dst, dest, child, known, result, on_progress)
                dst.put_manifest(dest.repository, child.digest, child.data, child.media_type)
        else:
            _copy_image(src, source, dst, dest, top, known, result, on_progress)
        if dest.digest is not None and dest.digest != top.digest:
            raise RegistryError(f"{target_text}: the source's digest is {top.digest}")
        result.digest = dst.put_manifest(dest.repository, dest.tag or top.digest, top.data, top.media_type)
    except RegistryError as err:
        raise RegistryError(f"copy of {source} to {dest} failed: {err}") from None
    return result
