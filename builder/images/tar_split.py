"""A layer tar split as it arrives: big files' bytes into content-named files, the rest into a recipe's bytes.

A pulled layer that went up uncompressed (weights, volumes: :mod:`builder.images.compress`) is written into the
layout already in the shape a build leaves it: each regular member of :data:`SPLIT_MIN` bytes or more goes to
``oci/files/<sha256 of its bytes>`` (hashed on a second thread while the next bytes arrive), everything else (header
blocks, small members, padding, end blocks) stays in memory as the recipe's literal parts
(:mod:`builder.images.recipes`). The store entry unpacked from the layer then hard-links those files
(:mod:`builder.images.unpack`) instead of writing the bytes again: one copy on disk, written once.

What the registry sends is hostile until checked. The stream's digest is checked by the registry client as it
arrives (the caller calls :meth:`SplitWriter.finish` only once the client has checked it); a header is parsed from
its 512 bytes only (``tarfile.TarInfo.frombuf``: bounded), a member's data after a PAX header (which may change its
size) is never split, and literal bytes are bounded by :data:`LITERAL_MAX`: past that the split stops and the
layer is written as a plain blob (the files split so far copied into it). Nothing is renamed into ``oci/files`` or
the recipes before :meth:`~SplitWriter.finish`; :meth:`~SplitWriter.abort` removes the temp files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from builder.files import QueuedHasher
from builder.images import recipes
from builder.images.recipes import files_dir
from builder.images.oci import MEDIA_LAYER, Descriptor, Layout

SPLIT_MIN = 1 << 20
LITERAL_MAX = 16 << 20
BLOCK = tarfile.BLOCKSIZE


class SplitWriter:
    """A file object the registry client writes a plain layer into (see the module docstring)."""

    def __init__(self, layout: Layout, take=None):
        self.layout, self.take = layout, take or (lambda n: None)
        self.parts: list = [b""]
        self.literal = 0
        self.pending = b""  # header bytes not yet complete
        self.data_left = 0  # bytes of the current member's data (and padding) still to come
        self.split: tuple[QueuedHasher, str, int] | None = None  # (writer, temp path, size) of a member split out
        self.pad_left = 0
        self.no_split = False  # the next member follows a PAX header: its size is not the header's
        self.ended = False
        self.temps: list[str] = []
        self.done: list[tuple[str, str, int]] = []  # (temp path, sha256, size) per split member, in order
        self.plain = None  # the blob writer once the split stopped (LITERAL_MAX)

    # -------------------------------------------------------------------------------------------- writing

    def write(self, data) -> int:
        self.take(len(data))
        if self.plain is not None:
            self.plain.write(data)
            return len(data)
        view = memoryview(data)
        while view:
            view = self._step(view)
        return len(data)

    def _lit(self, data) -> None:
        self.parts[-1] += bytes(data)
        self.literal += len(data)
        if self.literal > LITERAL_MAX:
            self._go_plain()

    def _step(self, view: memoryview) -> memoryview:
        if self.split is not None:
            writer, tmp, size = self.split
            n = min(len(view), self.data_left)
            writer.write(view[:n])
            self.data_left -= n
            if not self.data_left:
                self.split = None
                self.done.append((tmp, writer.hexdigest(), size))
                self.parts.append(len(self.done) - 1)
                self.parts.append(b"")
                self.data_left, self.pad_left = self.pad_left, 0
            return view[n:]
        if self.data_left or self.ended:
            n = len(view) if self.ended else min(len(view), self.data_left)
            self._lit(view[:n])
            if not self.ended:
                self.data_left -= n
            return view[n:] if self.plain is None else self._rest(view[n:])
        need = BLOCK - len(self.pending)
        self.pending += bytes(view[:need])
        if len(self.pending) == BLOCK:
            header, self.pending = self.pending, b""
            self._header(header)
        return view[need:] if self.plain is None else self._rest(view[need:])

    def _rest(self, view: memoryview) -> memoryview:
        """After the split stopped mid-step: the rest of this write goes to the plain blob."""
        self.plain.write(view)
        return view[len(view):]

    def _header(self, block: bytes) -> None:
        try:
            info = tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            self.ended = True  # the end blocks, or bytes that are no header: literal to the end
            self._lit(block)
            return
        size = info.size if info.type not in (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE) else 0
        padded = size + (-size % BLOCK)
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and size >= SPLIT_MIN and not self.no_split:
            self._lit(block)
            if self.plain is not None:
                self.data_left = 0
                return
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", dir=self._files())
            self.temps.append(tmp)
            self.split = (QueuedHasher(os.fdopen(fd, "wb")), tmp, size)
            self.data_left, self.pad_left = size, padded - size
        else:
            self.no_split = info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
            self._lit(block)
            self.data_left = padded

    def _files(self) -> Path:
        folder = files_dir(self.layout)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _go_plain(self) -> None:
        """Too much literal: write what came so far (the split files copied back in) as a plain blob."""
        self.plain_cm = self.layout.writer(MEDIA_LAYER, behind=True)
        self.plain = self.plain_cm.__enter__()
        for part in self.parts:
            if isinstance(part, bytes):
                self.plain.write(part)
            else:
                self._copy_in(self.done[part][0])
        if self.split is not None:
            self.split[0].close()
            self._copy_in(self.split[1])
            self.split = None
        self.parts, self.done = [b""], []
        self._remove_temps()

    def _copy_in(self, path: str) -> None:
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, self.plain, 8 << 20)

    # ------------------------------------------------------------------------------------------- outcome

    def finish(self, digest: str) -> Descriptor:
        """The layer in the layout, once its bytes (``digest``, checked by the caller) are all here."""
        if self.plain is not None:
            self.plain_cm.__exit__(None, None, None)
            return self.plain.descriptor
        if self.split is not None or self.pending or self.data_left:
            raise ValueError("the layer stream ended inside a tar member")
        if not self.done:  # nothing big: a plain blob of the literal bytes
            return self.layout.put_bytes(b"".join(p for p in self.parts if isinstance(p, bytes)), MEDIA_LAYER)
        parts, folder = [], self._files()
        for part in self.parts:
            if isinstance(part, bytes):
                if part:
                    parts.append(part)
                continue
            tmp, sha, size = self.done[part]
            final = folder / sha
            if final.is_file() and not final.is_symlink() and final.stat().st_size == size:
                os.unlink(tmp)  # the same bytes are here already (another layer, an earlier pull)
            else:
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
            parts.append(recipes.file_part(self.layout.root.parent, final))
        self.temps = []
        return self.layout.put_recipe(MEDIA_LAYER, parts, digest=digest)

    def _remove_temps(self) -> None:
        for tmp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.temps = []

    def abort(self) -> None:
        if self.split is not None:
            with contextlib.suppress(OSError):
                self.split[0].close()
        if self.plain is not None:
            with contextlib.suppress(BaseException):
                self.plain_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._remove_temps()
