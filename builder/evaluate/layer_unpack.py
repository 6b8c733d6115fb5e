"""A dataset layer's tar unpacked from a registry blob while its uncompressed bytes are hashed (its diff_id).

The layer is a gzip or plain tar whose entries are the folder ``dataset`` and regular files ``dataset/<name>``
(:mod:`builder.images.dataset_layers`). :func:`_unpack` streams it once: gunzipped (ISA-L where the host has it,
else the standard library's zlib, several gzip members too), hashed, and each expected file written into a folder,
checked against the sizes the dataset manifest gives and the free disk before a byte of it is written. What follows
the tar's end is hashed too, but bounded (:data:`TRAILING_MAX`): a small gzip may unpack to gigabytes of zeros there.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

try:  # ISA-L where the host has it; the model image may carry only the standard library's zlib
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - depends on the image's packages
    import zlib as _zlib

from builder.errors import RegistryError

DISK_SPARE = 256 << 20  # a layer entry is not unpacked when it would leave less than this free
TRAILING_MAX = 1 << 20  # bytes after a layer's tar end (zero padding: tarfile writes at most 10 KiB)
TOP = "dataset"  # the folder every layer's entries sit in (/dataset)


class _Hashing:
    """A read-only file over ``source`` that hashes every byte read (the layer's diff_id)."""

    def __init__(self, source):
        self.source, self.sha = source, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha.update(data)
        return data

    def drain(self, limit: int, what: str) -> str:
        """Hash what follows the tar's end (its zero padding) and return the diff_id; more than ``limit`` bytes of
        it is refused: a small compressed blob may unpack to gigabytes of zeros there."""
        left = limit
        while data := self.read(1 << 20):
            left -= len(data)
            if left < 0:
                raise RegistryError(f"{what}: more than {limit} bytes after the end of its tar; not a swcli layer")
        return "sha256:" + self.sha.hexdigest()


class _Gunzipped:
    """A readable stream of the gunzipped bytes of ``source`` (several gzip members too)."""

    def __init__(self, source):
        self.source, self.engine, self.pending = source, _zlib.decompressobj(31), b""

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else 1 << 20
        while True:
            # with no input, an unfinished member may still hold output (a match cut by ``size``): ask for it
            out = self.engine.decompress(self.pending, size) if self.pending or not self.engine.eof else b""
            if self.engine.eof:  # a member ended: the rest is unused_data (zlib also leaves it in unconsumed_tail)
                self.pending = self.engine.unused_data
                self.engine = _zlib.decompressobj(31)
            else:
                self.pending = self.engine.unconsumed_tail
            if out:
                return out
            if not self.pending:
                self.pending = self.source.read(1 << 20)
                if not self.pending:
                    return b""


def _unpack(blob: Path, gzipped: bool, folder: Path, expect: dict[str, int | None], what: str, others: bool,
            at_most: dict[str, int] | None = None) -> str:
    """Unpack the layer tar in ``blob`` into ``folder`` (``dataset/<name>`` -> ``<name>``); its diff_id.

    Only the ``dataset`` folder and regular files ``dataset/<name>`` are accepted: every name in ``expect`` (at its
    size, unless None), and other plain names only when ``others``. Anything else (a link, a path elsewhere or
    deeper, a missing or extra file) is refused naming it."""
    from builder.volumes import plain_name_problem

    seen: set[str] = set()
    with open(blob, "rb") as raw:
        stream = _Hashing(_Gunzipped(raw) if gzipped else raw)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.isdir() and member.name.rstrip("/") == TOP:
                        continue
                    top, _, name = member.name.partition("/")
                    known = name in expect or (others and plain_name_problem(name) is None)
                    if not member.isfile() or top != TOP or not known or name in seen:
                        raise RegistryError(f"{what}: unexpected entry {member.name!r} (expected only "
                                            f"{', '.join(sorted(expect))} under /{TOP})")
                    if expect.get(name) is not None and member.size != expect[name]:
                        raise RegistryError(f"{what}: {member.name} is {member.size} bytes, the dataset manifest "
                                            f"says {expect[name]}")
                    if member.size > (at_most or {}).get(name, member.size):  # refused before it is written
                        raise RegistryError(f"{what}: {member.name} is {member.size} bytes, more than the "
                                            f"{at_most[name]} it may be")
                    free = shutil.disk_usage(folder).free - DISK_SPARE
                    if member.size > free:  # refused before a byte is written, not at ENOSPC halfway
                        raise RegistryError(f"{what}: {member.name} is {member.size} bytes; {folder.parent} has "
                                            f"{max(free, 0)} free beyond {DISK_SPARE} kept spare")
                    with tar.extractfile(member) as src, open(folder / name, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    seen.add(name)
        except (tarfile.TarError, _zlib.error, EOFError) as err:
            raise RegistryError(f"{what}: not a readable layer tar ({err})") from None
        missing = sorted(set(expect) - seen)
        if missing:
            raise RegistryError(f"{what}: {', '.join(missing)} missing from the layer")
        return stream.drain(TRAILING_MAX, what)
