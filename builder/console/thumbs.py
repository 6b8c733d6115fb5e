"""Thumbnails of dataset records for the console: a minimal PNG encoder (:func:`png`), a record's bytes as an image
(:func:`record_image`: an encoded image passed through by its magic bytes, raw CIFAR-like pixels encoded), and a
thread-safe cache of both the open datasets and the encoded thumbnails (:class:`Thumbnails`).

No image library: a PNG is zlib and a few CRC'd chunks, and importing Pillow or matplotlib would cost more than
encoding a page of 32x32 thumbnails.
"""

from __future__ import annotations

import re
import struct
import threading
import time
import zlib
from collections import OrderedDict

import numpy as np

from builder.errors import SwcliError
from builder.refs import name_problem
from builder.store import Store
from builder.volumes import DatasetReader

MAX_PASSTHROUGH = 4 << 20  # an encoded image bigger than this is not served
MAX_PIXELS = 4096 * 4096  # pixels of a PNG made here (after scaling)
MAX_SCALE = 8
CIFAR_SHAPE = (3, 32, 32)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_VERSION = re.compile(r"[a-z0-9]{1,128}")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """``pixels`` (uint8, HxW grey or HxWx3 RGB) as PNG bytes, each pixel a ``scale`` x ``scale`` square."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"png: expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)) or 0 in pixels.shape:
        raise ValueError(f"png: expected HxW or HxWx3 pixels, got shape {pixels.shape}")
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"png: scale must be a whole number from 1 to {MAX_SCALE}, got {scale!r}")
    height, width = pixels.shape[0] * scale, pixels.shape[1] * scale
    if height * width > MAX_PIXELS:
        raise ValueError(f"png: {width}x{height} pixels is more than {MAX_PIXELS}")
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    rows = pixels.reshape(height, -1)
    raw = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0 (none) before every row
    raw[:, 1:] = rows
    colour = 0 if pixels.ndim == 2 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (_PNG_MAGIC + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _chunk(b"IEND", b""))


def image_type(data: bytes) -> str | None:
    """The media type of an encoded image by its magic bytes (PNG, JPEG, GIF, WebP), else None."""
    head = bytes(data[:12])
    if head.startswith(_PNG_MAGIC):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def record_image(data: bytes, shape: tuple[int, ...] | None = None, scale: int = 1) -> tuple[bytes, str] | None:
    """A record's data as (image bytes, media type): an encoded image (by its magic bytes, at most
    :data:`MAX_PASSTHROUGH` bytes) as it is; raw planar uint8 pixels of ``shape`` (C,H,W with C 1 or 3; without a
    shape, 3072 bytes are CIFAR's 3x32x32) as a PNG at ``scale``; anything else None."""
    if len(data) > MAX_PASSTHROUGH:
        return None
    kind = image_type(data)
    if kind is not None:
        return bytes(data), kind
    if shape is None and len(data) == 3 * 32 * 32:
        shape = CIFAR_SHAPE
    if shape is None or len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        return None
    channels, height, width = (int(n) for n in shape)
    if channels * height * width != len(data):
        return None
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(channels, height, width).transpose(1, 2, 0)
    try:
        return png(pixels, scale), "image/png"
    except ValueError:  # too big once scaled
        return None


class Thumbnails:
    """Record thumbnails by (dataset version, index, scale), encoded once and kept up to ``max_items`` and
    ``max_bytes``; the datasets they come from kept open (at most ``max_readers``, least recently used closed
    first); a dataset not found is not looked for again for ``missing_for`` seconds. One lock guards the caches
    and every read from a reader; encoding runs outside it."""

    def __init__(self, store: Store, max_items: int = 4096, *, max_bytes: int = 64 << 20, max_readers: int = 4,
                 missing_for: float = 5.0):
        self.store = store
        self.max_items, self.max_bytes, self.max_readers = max_items, max_bytes, max_readers
        self.missing_for = missing_for  # seconds a dataset found missing is not looked for again (a page asks 200x)
        self._missing: dict[tuple[str, str], float] = {}
        self._images: OrderedDict[tuple[str, int, int], tuple[bytes, str]] = OrderedDict()
        self._bytes = 0
        self._readers: OrderedDict[tuple[str, str], tuple[str, DatasetReader]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, dataset_name: str, dataset_version: str, index: int, scale: int = 2) -> tuple[bytes, str] | None:
        """The thumbnail of record ``index`` of ``dataset_name:dataset_version`` (a version or a prefix of one), or
        None: the dataset is not in the store or cannot be read, there is no such record, or it is no image."""
        if not _plain_args(dataset_name, dataset_version, index, scale):
            return None
        with self._lock:
            opened = self._reader(dataset_name, dataset_version)
            if opened is None:
                return None
            version, reader = opened
            key = (version, index, scale)
            kept = self._images.get(key)
            if kept is not None:
                self._images.move_to_end(key)
                return kept
            try:
                data = bytes(reader[index].data) if index < len(reader) else None
            except (SwcliError, OSError, ValueError):
                data = None  # a corrupt record (checksums) or volume: no picture
        image = None if data is None else record_image(data, scale=scale)
        if image is not None:
            self._keep(key, image)
        return image

    def _reader(self, name: str, version: str) -> tuple[str, DatasetReader] | None:
        """The open reader of a dataset (opened now if it is not), with its full version; call with the lock held."""
        key = (name, version)
        opened = self._readers.get(key)
        if opened is not None:
            self._readers.move_to_end(key)
            return opened
        now = time.monotonic()
        if now < self._missing.get(key, now):
            return None
        try:
            entry = self.store.resolve("dataset", f"{name}:{version}")
            opened = self._readers[key] = (entry.version, DatasetReader(entry.path, entry.manifest))
        except (SwcliError, OSError, ValueError):
            if len(self._missing) >= self.max_items:
                self._missing.clear()
            self._missing[key] = now + self.missing_for
            return None
        while len(self._readers) > self.max_readers:
            _, (_, old) = self._readers.popitem(last=False)
            old.close()
        return opened

    def _keep(self, key: tuple[str, int, int], image: tuple[bytes, str]) -> None:
        size = len(image[0])
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._images:
                return
            self._images[key] = image
            self._bytes += size
            while len(self._images) > self.max_items or self._bytes > self.max_bytes:
                _, (old, _) = self._images.popitem(last=False)
                self._bytes -= len(old)

    def close(self) -> None:
        with self._lock:
            for _, reader in self._readers.values():
                reader.close()
            self._readers.clear()
            self._images.clear()
            self._bytes = 0


def _plain_args(name: object, version: object, index: object, scale: object) -> bool:
    """A dataset name and version that can only name a store entry (never a path), a record index >= 0, a scale
    from 1 to :data:`MAX_SCALE`."""
    return (isinstance(name, str) and name_problem(name) is None and isinstance(version, str)
            and _VERSION.fullmatch(version) is not None and isinstance(index, int) and not isinstance(index, bool)
            and index >= 0 and isinstance(scale, int) and not isinstance(scale, bool) and 1 <= scale <= MAX_SCALE)
