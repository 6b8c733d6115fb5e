"""The files a dataset manifest lists, checked before any path is made from them (:func:`manifest_layout`).

The manifest's ``shards`` (the volumes, in order), ``index`` and ``records`` fields are the on-disk names and stay
so; a field of the wrong shape or a file name that is not a plain name inside the entry is a :class:`ManifestError`
naming the manifest and the field. Every reader and verifier of a dataset entry goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import SwcliError

MANIFEST_NAME = "manifest.json"


class ManifestError(SwcliError):
    """A dataset manifest a reader must not trust: a field of the wrong shape, or a file name that is not a plain
    name inside the entry (``../x``, ``a/b``, ``/etc/passwd``). Names the manifest and the field."""

    exit_code = 3

    def __init__(self, manifest: str | Path, field: str, message: str):
        self.manifest = str(manifest)
        self.field = field
        super().__init__(f"{self.manifest}: field '{field}': {message}")


@dataclass(frozen=True)
class VolumeFile:
    """One volume as the manifest lists it."""

    file: str
    records: int
    size: int
    sha256: str


@dataclass(frozen=True)
class VolumeLayout:
    """The files of a dataset entry, checked: volumes in order (volume number = position) and the index."""

    volumes: list[VolumeFile]
    index: str
    index_size: int
    records: int


def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain file name that stays inside its folder, or None."""
    if not isinstance(name, str) or not name:
        return f"expected a file name, got {name!r}"
    if name in (".", "..") or any(ch in name for ch in "/\\\0"):
        return f"{name!r} is not a plain file name inside the entry"
    return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_layout(manifest: object, where: str | Path) -> VolumeLayout:
    """Check the ``shards``, ``index`` and ``records`` fields of a dataset manifest (``where`` names it in errors)
    before any path is made from them; every reader and verifier goes through here."""
    if not isinstance(manifest, dict):
        raise ManifestError(where, "(top level)", f"expected a JSON object, got {type(manifest).__name__}")
    listed = manifest.get("shards")
    if not isinstance(listed, list) or not listed:
        raise ManifestError(where, "shards", "expected a non-empty list of shard files")
    out = []
    for n, volume in enumerate(listed):
        field = f"shards[{n}]"
        if not isinstance(volume, dict):
            raise ManifestError(where, field, f"expected an object, got {type(volume).__name__}")
        problem = plain_name_problem(volume.get("file"))
        if problem:
            raise ManifestError(where, f"{field}.file", problem)
        for key in ("records", "size"):
            if not _count(volume.get(key)):
                raise ManifestError(where, f"{field}.{key}", f"expected a non-negative integer, got {volume.get(key)!r}")
        sha = volume.get("sha256")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise ManifestError(where, f"{field}.sha256", f"expected 64 lowercase hex digits, got {sha!r}")
        out.append(VolumeFile(volume["file"], volume["records"], volume["size"], sha))
    if len({s.file for s in out}) != len(out):
        raise ManifestError(where, "shards", "lists the same file twice")
    index = manifest.get("index")
    if not isinstance(index, dict):
        raise ManifestError(where, "index", "expected an object with 'file' and 'size'")
    problem = plain_name_problem(index.get("file"))
    if problem:
        raise ManifestError(where, "index.file", problem)
    if index["file"] in {s.file for s in out}:
        raise ManifestError(where, "index.file", f"{index['file']!r} is also listed as a shard")
    if not _count(index.get("size")):
        raise ManifestError(where, "index.size", f"expected a non-negative integer, got {index.get('size')!r}")
    records = manifest.get("records")
    if not _count(records) or records != sum(s.records for s in out):
        raise ManifestError(where, "records", f"{records!r} is not the sum of the shards' records "
                                              f"({sum(s.records for s in out)})")
    return VolumeLayout(out, index["file"], index["size"], records)
