"""The deterministic gzip of layer blobs for pushes (builder.images.compress): same bytes every time and in every
process, made once (the cache record), redone when the cached blob is missing or corrupt."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from builder.images import compress
from builder.images.oci import MEDIA_LAYER, Descriptor, Layout, LayoutError


def put_layer(layout: Layout, data: bytes) -> Descriptor:
    with layout.writer(MEDIA_LAYER) as out:
        out.write(data)
    return out.descriptor


def layer_bytes(seed: int, size: int = 3 << 20) -> bytes:
    """Half random, half repetitive: something gzip both can and cannot squeeze, over several read chunks."""
    random = hashlib.sha256(str(seed).encode()).digest() * (size // 64)
    return random + bytes(size // 2)


@pytest.fixture()
def layout(swcli_home):
    return Layout(swcli_home / "oci")


def test_the_gzip_blob_is_the_layer_and_is_the_same_every_time(layout, swcli_home):
    data = layer_bytes(1)
    layer = put_layer(layout, data)
    first = compress.compressed(layout, layer)
    blob = layout.blob_path(first.digest).read_bytes()
    assert gzip.decompress(blob) == data
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == first.digest and len(blob) == first.size < len(data)
    assert blob[4:8] == b"\0\0\0\0" and not blob[3] & 0x08  # mtime 0, no file name
    record = json.loads((swcli_home / "cache" / "gzip" / f"{layer.hex}.json").read_text())
    assert record == {"digest": first.digest, "size": first.size, "compressor": compress.COMPRESSOR}

    # made anew (record gone, blob gone): the same bytes
    (swcli_home / "cache" / "gzip" / f"{layer.hex}.json").unlink()
    layout.discard(first.digest)
    again = compress.compressed(layout, layer)
    assert again.digest == first.digest and layout.blob_path(again.digest).read_bytes() == blob


def test_another_process_makes_the_same_bytes(layout, swcli_home, tmp_path):
    data = layer_bytes(2)
    layer = put_layer(layout, data)
    here = compress.compressed(layout, layer)
    other_home = tmp_path / "other-home"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from builder.images import compress
        from builder.images.oci import MEDIA_LAYER, Layout
        layout = Layout(Path({str(other_home / 'oci')!r}))
        with layout.writer(MEDIA_LAYER) as out:
            out.write(Path({str(layout.blob_path(layer.digest))!r}).read_bytes())
        print(compress.compressed(layout, out.descriptor).digest)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "SWCLI_HOME": str(other_home), "PYTHONHASHSEED": "7"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == here.digest


def test_a_cache_hit_does_no_work(layout, monkeypatch):
    layer = put_layer(layout, layer_bytes(3))
    first = compress.compressed(layout, layer)

    def fail(*args, **kwargs):
        raise AssertionError("compressed again")

    monkeypatch.setattr(compress, "_compress", fail)
    assert compress.compressed(layout, layer).digest == first.digest
    assert compress.compressed(layout, layer, verify=True).digest == first.digest


@pytest.mark.parametrize("damage", ["corrupt", "missing", "record"])
def test_a_damaged_cache_is_redone(layout, swcli_home, damage):
    layer = put_layer(layout, layer_bytes(4))
    first = compress.compressed(layout, layer)
    path = layout.blob_path(first.digest)
    if damage == "corrupt":  # same size, one byte flipped: only a re-hash sees it
        os.chmod(path, 0o644)
        raw = bytearray(path.read_bytes())
        raw[100] ^= 1
        path.write_bytes(bytes(raw))
        assert compress.compressed(layout, layer).digest == first.digest  # unverified: trusted by its size
    elif damage == "missing":
        path.unlink()
    else:
        (swcli_home / "cache" / "gzip" / f"{layer.hex}.json").write_text("{not json")
    again = compress.compressed(layout, layer, verify=True)
    assert again.digest == first.digest and again.verified
    assert layout.verify(first.digest)


def test_layers_compress_on_several_threads_at_once(layout):
    from concurrent.futures import ThreadPoolExecutor

    layers = [put_layer(layout, layer_bytes(seed)) for seed in range(5, 9)]
    with ThreadPoolExecutor(4) as pool:  # the same layer twice at once too: both get the same blob
        done = list(pool.map(lambda layer: compress.compressed(layout, layer), layers + layers[:1]))
    assert [c.diff_id for c in done] == [lay.digest for lay in layers + layers[:1]]
    assert done[-1].digest == done[0].digest
    for item, layer in zip(done, layers):
        assert gzip.decompress(layout.blob_path(item.digest).read_bytes()) == \
            layout.blob_path(layer.digest).read_bytes()


def test_a_layer_blob_that_changed_is_refused_not_compressed(layout, swcli_home):
    layer = put_layer(layout, layer_bytes(9))
    path = layout.blob_path(layer.digest)
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(LayoutError, match="does not match its digest"):
        compress.compressed(layout, layer)
    assert not (swcli_home / "cache" / "gzip" / f"{layer.hex}.json").exists()
    assert not list(layout.blobs.glob(".tmp-*"))
