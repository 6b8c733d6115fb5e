"""`swcli copy`: an swcli image from one registry to another, over the distribution API; no engine, no store.

The manifest's bytes are PUT verbatim, so the image has the same digest on both sides. Each blob the target lacks
is mounted (the same registry: from the source repository; another: from a repository known to hold it) or
fetched into a temp file under ``$SWCLI_HOME/tmp`` (its digest verified) and uploaded from there. An index is
copied with every image it lists. The image's labels are checked before any blob moves: only swcli images are
copied.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from builder.errors import RegistryError
from builder.registry.media import INDEX_TYPES
from builder.services.registry import (Blob, KnownBlobs, OnProgress, TransferResult, check_labels, one_line,
                                       open_client, send_blobs)
from builder.store import swcli_home

MAX_CONFIG = 4 << 20


def _fetched_source(client, repository: str, digest: str, size: int):
    """A blob source that fetches ``digest`` into a temp file (removed afterwards) and yields its opener."""

    @contextlib.contextmanager
    def source():
        folder = swcli_home() / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
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

    try:
        doc = json.loads(manifest.data)
        blobs = [doc["config"], *doc["layers"]]
        descs = [(b["digest"], int(b["size"])) for b in blobs]
    except (ValueError, KeyError, TypeError) as err:
        raise RegistryError(f"{source}: not an image manifest ({one_line(err)})") from None
    config_digest, config_size = descs[0]
    if config_size > MAX_CONFIG:
        raise RegistryError(f"{source}: its config is {config_size} bytes; refusing more than 4 MiB")
    buffer = io.BytesIO()
    src.fetch_blob(source.repository, config_digest, buffer, size=config_size)
    try:
        labels = (json.loads(buffer.getvalue()).get("config") or {}).get("Labels") or {}
    except (ValueError, AttributeError) as err:
        raise RegistryError(f"{source}: config {config_digest} is not an image config ({one_line(err)})") from None
    check_labels(str(source), labels)
    data = buffer.getvalue()
    same = source.registry == dest.registry
    send_blobs(dst, dest.repository, [
        Blob(config_digest, config_size, lambda: contextlib.nullcontext(lambda: io.BytesIO(data)), "config"),
        *(Blob(d, s, _fetched_source(src, source.repository, d, s)) for d, s in descs[1:])],
        result, known, on_progress=on_progress, also_from=source.repository if same else None)


def copy(source_text: str, target_text: str, *, ca_cert: Path | None = None, on_progress: OnProgress | None = None,
         client_factory=open_client) -> TransferResult:
    """Copy ``source_text`` to ``target_text`` (both REGISTRY/REPO[:TAG|@DIGEST]); the digest is kept."""
    from builder.registry.reference import Reference

    source, dest = Reference.parse(source_text), Reference.parse(target_text)
    result = TransferResult(str(dest))
    try:
        src = client_factory(source.registry, ca_cert=ca_cert)
        dst = src if dest.registry == source.registry else client_factory(dest.registry, ca_cert=ca_cert)
        for client, ref in ((src, source), (dst, dest)):
            client.ping(ref.repository)  # auth settled before blobs move in parallel
        known = KnownBlobs(dest.registry)
        top = src.get_manifest(source.repository, source.ref)
        if top.media_type in INDEX_TYPES:
            try:
                children = [str(entry["digest"]) for entry in json.loads(top.data).get("manifests") or []]
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise RegistryError(f"{source}: not an image index ({one_line(err)})") from None
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
