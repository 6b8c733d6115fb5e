"""Thumbnails (builder.console.thumbs): the PNG encoder's output decodes to the same pixels (read back with Pillow),
encoded images pass through by their magic bytes, anything else is no image; the cache serves a page of CIFAR-like
thumbnails quickly, and a missing dataset, a bad index or a ref that is a path is None."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from builder.console.thumbs import MAX_PASSTHROUGH, Thumbnails, png, record_image
from builder.store import Store
from tests.helpers.record_datasets import cifar_like, publish_records


def _decoded(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image)


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 7), (1, 1, 3), (32, 32, 3)])
@pytest.mark.parametrize("scale", [1, 3])
def test_png_decodes_to_the_same_pixels(shape, scale):
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    decoded = _decoded(png(pixels, scale))
    assert decoded.shape == (shape[0] * scale, shape[1] * scale, *shape[2:])
    assert np.array_equal(decoded[::scale, ::scale], pixels)
    assert np.array_equal(decoded, pixels.repeat(scale, 0).repeat(scale, 1))


@pytest.mark.parametrize("pixels, scale", [(np.zeros((4, 4), np.float32), 1), (np.zeros((4, 4, 4), np.uint8), 1),
                                           (np.zeros((0, 4), np.uint8), 1), (np.zeros((4, 4), np.uint8), 0),
                                           (np.zeros((4, 4), np.uint8), 99), (np.zeros((4096, 4096), np.uint8), 2)])
def test_png_refuses_what_it_cannot_encode(pixels, scale):
    with pytest.raises(ValueError, match="^png: "):
        png(pixels, scale)


def test_cifar_records_and_given_shapes_become_pngs():
    planar = np.arange(3072, dtype=np.uint32).astype(np.uint8).reshape(3, 32, 32)
    data, kind = record_image(planar.tobytes())
    assert kind == "image/png" and np.array_equal(_decoded(data), planar.transpose(1, 2, 0))
    grey = np.arange(6 * 4, dtype=np.uint8).reshape(1, 6, 4)
    data, kind = record_image(grey.tobytes(), shape=(1, 6, 4), scale=2)
    assert np.array_equal(_decoded(data), grey[0].repeat(2, 0).repeat(2, 1))


@pytest.mark.parametrize("fmt, kind", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"),
                                       ("WEBP", "image/webp")])
def test_encoded_images_pass_through_by_magic(fmt, kind):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format=fmt)
    assert record_image(buf.getvalue()) == (buf.getvalue(), kind)


@pytest.mark.parametrize("data, shape", [(b"", None), (b"hello world", None), (b"\x00" * 3071, None),
                                         (b"\x00" * 3073, None), (b"\x00" * 12, (3, 2, 3)), (b"\x00" * 16, (4, 2, 2)),
                                         (b"\x00" * 4, (1, -2, -2)), (b"\x89PNG\r\n\x1a\n" + bytes(MAX_PASSTHROUGH), None)])
def test_anything_else_is_no_image(data, shape):
    assert record_image(data, shape) is None


@pytest.fixture()
def store():
    return Store()


def test_thumbnails_come_from_the_store_and_are_cached(store):
    records = cifar_like(20)
    entry = publish_records(store, "cifar", records)
    thumbs = Thumbnails(store)
    data, kind = thumbs.get("cifar", entry.version, 7)
    expected = np.frombuffer(records[7], np.uint8).reshape(3, 32, 32).transpose(1, 2, 0).repeat(2, 0).repeat(2, 1)
    assert kind == "image/png" and np.array_equal(_decoded(data), expected)
    assert thumbs.get("cifar", entry.version[:8], 7, scale=2)[0] is data  # one cache entry per full version
    assert _decoded(thumbs.get("cifar", entry.version, 7, scale=1)[0]).shape == (32, 32, 3)


@pytest.mark.parametrize("name, version, index, scale", [
    ("nothere", "abcdabcd", 0, 2), ("cifar", "zzzzzzzz", 0, 2), ("cifar", "VERSION", 0, 2), ("cifar", "", 0, 2),
    ("cifar", "{v}", 20, 2), ("cifar", "{v}", -1, 2), ("cifar", "{v}", True, 2), ("cifar", "{v}", 0, 0),
    ("cifar", "{v}", 0, 50), ("../cifar", "{v}", 0, 2), ("/etc", "{v}", 0, 2), ("cifar", "../../x", 0, 2),
])
def test_a_missing_dataset_or_a_bad_argument_is_none(store, name, version, index, scale):
    entry = publish_records(store, "cifar", cifar_like(20))
    assert Thumbnails(store).get(name, version.format(v=entry.version), index, scale) is None


def test_a_missing_dataset_is_looked_for_again_only_after_a_while(store):
    waiting, eager = Thumbnails(store, missing_for=3600), Thumbnails(store, missing_for=0)
    records = cifar_like(3)
    version = publish_records(Store(store.root.parent / "elsewhere"), "late", records).version  # same version
    assert waiting.get("late", version, 0) is None and eager.get("late", version, 0) is None
    publish_records(store, "late", records)
    assert waiting.get("late", version, 0) is None
    assert eager.get("late", version, 0) is not None


def test_a_record_that_is_no_image_is_none(store):
    entry = publish_records(store, "text", [b"just some text"] * 3)
    assert Thumbnails(store).get("text", entry.version, 1) is None


def test_bounds_on_items_bytes_and_open_readers(store):
    entries = [publish_records(store, f"ds{n}", cifar_like(10, seed=n)) for n in range(3)]
    thumbs = Thumbnails(store, max_items=5, max_readers=2)
    for entry in entries:
        for i in range(10):
            assert thumbs.get(entry.name, entry.version, i) is not None
    assert len(thumbs._images) == 5 and len(thumbs._readers) == 2
    small = Thumbnails(store, max_bytes=3 * len(thumbs.get("ds0", entries[0].version, 0)[0]))
    for i in range(10):
        small.get("ds0", entries[0].version, i)
    assert 1 <= len(small._images) <= 3 and small._bytes <= small.max_bytes


def test_200_thumbnails_are_served_quickly_when_warm_and_from_many_threads(store):
    records = cifar_like(300)
    entry = publish_records(store, "cifar", records)
    thumbs = Thumbnails(store)
    for i in range(200):
        thumbs.get("cifar", entry.version, i)
    started = time.perf_counter()
    served = [thumbs.get("cifar", entry.version, i) for i in range(200)]
    seconds = time.perf_counter() - started
    assert all(s is not None for s in served) and seconds < 0.3, f"200 warm thumbnails took {seconds:.3f}s"
    cold = Thumbnails(store)
    started = time.perf_counter()
    assert all(cold.get("cifar", entry.version, i) is not None for i in range(200))
    assert time.perf_counter() - started < 1.0
    fresh, failures = Thumbnails(store, max_items=50, max_readers=1), []

    def work(offset):
        for i in range(300):
            got = fresh.get("cifar", entry.version, (i * 7 + offset) % 300)
            if got is None or got[0][:8] != b"\x89PNG\r\n\x1a\n":
                failures.append(i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
