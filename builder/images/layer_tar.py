"""Reading a layer tar that came from somewhere else (a registry), with memory bounded whatever its headers say.

Python's :mod:`tarfile` reads a PAX or GNU long-name header's whole body into memory, follows chains of them by
recursion, collects a GNU sparse map of any length (old format: one extension block after another; PAX 1.0: numbers
read until the map is done) and keeps every member it has read in ``TarFile.members``. :func:`open_layer` reads with
a :class:`tarfile.TarInfo` subclass that refuses an extended header over :data:`MAX_HEADER` bytes, more than
:data:`MAX_HEADER_CHAIN` of them before one member, more than :data:`MAX_HEADER_BYTES` of them in one tar, and any
sparse member (swcli never writes one, Docker's and Go's tar writers neither; a sparse member is how a tiny layer
becomes gigabytes on disk); :func:`members` yields the members without keeping them. Member names are shown with
:func:`shown`: control characters escaped, length capped.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterator

from builder.errors import SwcliError
from builder.text import clipped

# A PAX header carries a long name or link (PATH_MAX is 4,096 bytes), times, ids and xattrs; GNU tar and Go's
# archive/tar write them in hundreds of bytes. 1 MiB is far above any of those, and bounded.
MAX_HEADER = 1 << 20
MAX_HEADER_CHAIN = 4  # before one member: a global PAX header, a PAX header, a GNU long name and a long link at most
MAX_HEADER_BYTES = 16 << 20  # all extended headers of one tar: a member's name rarely needs a PAX header at all
_HEADER_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
SHOWN = 160  # characters of a hostile name shown in an error line


class TarRefused(SwcliError):
    """A layer tar holds something swcli does not read: an oversized or sparse header, a chain of headers."""


def shown(text: object, limit: int = SHOWN) -> str:
    """``text`` for one error line (:func:`builder.text.clipped`)."""
    return clipped(text, limit)


class _BoundedInfo(tarfile.TarInfo):
    """A TarInfo that refuses what would make :mod:`tarfile` read without bound (see the module docstring)."""

    def _proc_member(self, tar):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise TarRefused(f"{shown(self.name)}: a sparse member (GNU); swcli does not extract sparse files")
        if self.type not in _HEADER_TYPES:
            return super()._proc_member(tar)
        depth, total = getattr(tar, "_swcli_depth", 0), getattr(tar, "_swcli_header_bytes", 0) + self.size
        if self.size > MAX_HEADER:
            raise TarRefused(f"an extended tar header of {self.size} bytes; refusing more than {MAX_HEADER}")
        if depth >= MAX_HEADER_CHAIN:
            raise TarRefused(f"more than {MAX_HEADER_CHAIN} extended tar headers before one member")
        if total > MAX_HEADER_BYTES:
            raise TarRefused(f"more than {MAX_HEADER_BYTES} bytes of extended tar headers")
        tar._swcli_depth, tar._swcli_header_bytes = depth + 1, total
        try:
            return super()._proc_member(tar)
        finally:
            tar._swcli_depth = depth

    def _sparse(self, *args):
        raise TarRefused(f"{shown(args[0].name if args else self.name)}: a sparse member (PAX); swcli does not "
                         "extract sparse files")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _sparse


def open_layer(source) -> tarfile.TarFile:
    """A plain (uncompressed) layer tar opened for reading with bounded headers; iterate it with :func:`members`.
    ``source``: a path, or a binary file (one that cannot seek, such as a recipe blob, is read as a stream)."""
    if isinstance(source, (str, Path)):
        return tarfile.open(source, mode="r:", tarinfo=_BoundedInfo)
    return tarfile.open(fileobj=source, mode="r:" if source.seekable() else "r|", tarinfo=_BoundedInfo)


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Every member in order, none kept by the TarFile (a tar of a million empty files costs one at a time).
    A chain of headers too deep for Python's recursion is refused like one too long."""
    while True:
        try:
            member = tar.next()
        except RecursionError:
            raise TarRefused("extended tar headers nested too deep") from None
        if member is None:
            return
        tar.members.clear()
        yield member
