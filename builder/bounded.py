"""JSON that came from a registry, a pulled image or a pulled run: its size bounded before it is parsed, and its
shape checked where it enters (`eval attach | list --image | pull`, `--dataset REGISTRY/...`, `--parts registry`).

A descriptor's declared size is capped before the blob is fetched (:func:`builder.registry.media.checked_descriptor`
with ``max_size``), and the client stops at that size, so a blob fetched to a file is bounded already; a file on
disk (a layer's member, a run folder's file) is read here with the cap checked while reading, never after.
"""

from __future__ import annotations

import json
from pathlib import Path

from builder import outdir
from builder.errors import RegistryError
from builder.registry.media import checked_digest, checked_list, checked_object


def parse(data: bytes | str, what: str, *, error: type = RegistryError) -> object:
    """``data`` parsed as JSON; one line naming ``what`` when it is not (nesting too deep included)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        raise error(f"{what}: not valid JSON ({' '.join(str(err).split())[:120]})") from None


def read_capped(path: Path, limit: int, what: str, *, error: type = RegistryError) -> bytes:
    """The bytes of the regular file ``path`` (never through a link at it, never waiting on a FIFO), at most
    ``limit``: a larger file is refused while it is read, so memory is bounded whatever the file holds. The one
    reader of files in folders another program may have prepared is :mod:`builder.outdir`; this names ``what``."""
    try:
        return outdir.read_bytes(path, limit, follow_folder=True)
    except outdir.UnsafeFileError as err:
        raise error(f"{what}: {err.strerror}") from None


def read_json(path: Path, limit: int, what: str, *, error: type = RegistryError) -> object:
    """The JSON document in ``path``, its size bounded before it is parsed (:func:`read_capped`)."""
    return parse(read_capped(path, limit, what, error=error), what, error=error)


def checked_strings(value: object, what: str) -> dict[str, str]:
    """``value`` when it maps strings to strings (annotations, image labels: both ``map[string]string`` in the
    OCI and Docker specs); None is the empty map; else one line (exit 5) naming ``what`` and the key."""
    if value is None:
        return {}
    checked_object(value, what)
    for key, item in value.items():
        if not isinstance(item, str):
            raise RegistryError(f"{what}: {key!r:.80} must be a string, not {type(item).__name__}")
    return value


def image_config(data: bytes, where: str) -> tuple[dict[str, str], list[str]]:
    """An image config's labels (strings to strings) and ``rootfs.diff_ids`` (sha256 digests), checked."""
    doc = checked_object(parse(data, f"{where}: config"), f"{where}: config")
    inner = checked_object(doc.get("config") or {}, f"{where}: config field 'config'")
    labels = checked_strings(inner.get("Labels"), f"{where}: config field 'config.Labels'")
    rootfs = checked_object(doc.get("rootfs"), f"{where}: config field 'rootfs'")
    diff_ids = checked_list(rootfs.get("diff_ids"), f"{where}: config field 'rootfs.diff_ids'")
    return labels, [checked_digest(d, f"{where}: config field 'rootfs.diff_ids[{n}]'") for n, d in enumerate(diff_ids)]
