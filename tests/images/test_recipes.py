"""Layers kept as recipes over store files, and plain layers split as they arrive: the same bytes as the tar
written out, one copy on disk, and a changed, removed or hostile file part makes the blob missing, never wrong."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile

import pytest

from builder.images import context as ctx
from builder.images import recipes
from builder.images.layers import placed, write_recipe_layer, write_tar
from builder.images.oci import Layout, LayoutError
from builder.images.tar_split import LITERAL_MAX, SplitWriter


@pytest.fixture()
def store(tmp_path):
    """A store root with an entry folder of files, and its layout beside them."""
    src = tmp_path / "models" / "m" / "v1" / "src"
    src.mkdir(parents=True)
    return tmp_path, src, Layout(tmp_path / "oci")


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    write_tar(entries, buf)
    return buf.getvalue()


def _read(layout: Layout, digest: str) -> bytes:
    with layout.open_blob(digest) as fh:
        return fh.read()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 8704, (3 << 20) + 7])
def test_a_one_file_layer_is_write_tars_bytes_with_no_copy_in_the_layout(store, size):
    _, src, layout = store
    (src / "w.bin").write_bytes(os.urandom(size))
    entries = placed([ctx.from_file("weights/w.bin", src / "w.bin")], "weights", "/opt/swcli/model/src")
    desc = write_recipe_layer(layout, entries)
    expected = _tar(entries)
    assert desc.digest == "sha256:" + hashlib.sha256(expected).hexdigest() and desc.size == len(expected)
    assert _read(layout, desc.digest) == expected
    assert not layout.blob_path(desc.digest).exists()  # a recipe, not a copy
    assert layout.has(desc.digest, desc.size) and layout.verify(desc.digest)
    assert layout.blob_size(desc.digest) == len(expected)


def test_many_files_links_hard_links_and_literal_bytes_come_out_exactly(store):
    _, src, layout = store
    (src / "a.bin").write_bytes(os.urandom(2 << 20))
    (src / "b.bin").write_bytes(os.urandom(777))
    os.link(src / "b.bin", src / "c.bin")
    entries = placed([ctx.from_file("w/a.bin", src / "a.bin"), ctx.from_file("w/b.bin", src / "b.bin"),
                      ctx.from_file("w/c.bin", src / "c.bin"), ctx.from_bytes("w/sub/x.txt", b"hello"),
                      ctx.ContextEntry("w/l", link="b.bin")], "w", "/d")
    desc = write_recipe_layer(layout, entries)
    assert _read(layout, desc.digest) == _tar(entries)


def test_seeking_a_recipe_blob_reads_what_the_tar_holds_there(store):
    _, src, layout = store
    (src / "w.bin").write_bytes(os.urandom((1 << 20) + 3))
    entries = placed([ctx.from_file("w/w.bin", src / "w.bin")], "w", "/x")
    expected = _tar(entries)
    desc = write_recipe_layer(layout, entries)
    with layout.open_blob(desc.digest) as fh:
        for offset in (len(expected), 0, 511, 512, 513, 700_000, len(expected) - 1):
            fh.seek(offset)
            assert fh.read(5000) == expected[offset:offset + 5000]


def test_a_file_outside_the_store_is_tarred_into_a_blob(store, tmp_path_factory):
    _, _, layout = store
    outside = tmp_path_factory.mktemp("elsewhere") / "w.bin"
    outside.write_bytes(os.urandom(4096))
    entries = [ctx.from_file("d/w.bin", outside)]
    desc = write_recipe_layer(layout, entries)
    assert layout.blob_path(desc.digest).read_bytes() == _tar(entries)


def test_a_changed_or_removed_file_makes_the_blob_missing_not_wrong(store):
    _, src, layout = store
    path = src / "w.bin"
    path.write_bytes(os.urandom(1 << 20))
    entries = placed([ctx.from_file("w/w.bin", path)], "w", "/x")
    desc = write_recipe_layer(layout, entries)
    st = path.stat()
    with open(path, "r+b") as fh:  # same size, same mtime: only the bytes changed
        fh.write(b"\0" * 16)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert layout.has(desc.digest) and not layout.verify(desc.digest)  # the stat matches: --verify finds it
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not layout.has(desc.digest)
    path.unlink()
    assert not layout.has(desc.digest)
    with pytest.raises(LayoutError):
        layout.open_blob(desc.digest)


@pytest.mark.parametrize("rel", ["../outside", "/etc/passwd", "models/../../x", "models/./m", ""])
def test_a_recipe_naming_a_path_outside_the_store_counts_as_missing(store, rel):
    root, _, layout = store
    (root.parent / "outside").write_bytes(b"secret")
    hexd = "ab" * 32
    recipes.folder(layout.root).mkdir(parents=True, exist_ok=True)
    recipes.path_of(layout.root, hexd).write_text(json.dumps(
        {"digest": f"sha256:{hexd}", "size": 6, "parts": [{"file": rel, "size": 6, "mtime_ns": 0, "ino": 0}]}))
    layout.blobs.mkdir(parents=True, exist_ok=True)
    assert not layout.has(f"sha256:{hexd}")
    with pytest.raises(LayoutError):
        layout.open_blob(f"sha256:{hexd}")


def test_a_recipe_file_part_that_is_a_link_is_not_followed(store):
    root, src, layout = store
    (src / "w.bin").write_bytes(os.urandom(1 << 20))
    entries = placed([ctx.from_file("w/w.bin", src / "w.bin")], "w", "/x")
    desc = write_recipe_layer(layout, entries)
    (src / "w.bin").rename(src / "real.bin")
    (src / "w.bin").symlink_to(src / "real.bin")
    assert not layout.has(desc.digest)


def test_collect_removes_unreachable_recipes_and_keeps_the_store_files(store):
    _, src, layout = store
    (src / "w.bin").write_bytes(os.urandom(1 << 20))
    desc = write_recipe_layer(layout, placed([ctx.from_file("w/w.bin", src / "w.bin")], "w", "/x"))
    removed, _ = Layout(layout.root).collect()
    assert desc.digest in removed
    assert not recipes.path_of(layout.root, desc.hex).exists() and (src / "w.bin").is_file()


# ------------------------------------------------------------------------------------------------ split


def _layer(src, sizes: dict[str, int]) -> bytes:
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    return _tar(placed(ctx.from_tree("a", src), "a", "/opt/x"))


@pytest.mark.parametrize("piece", [None, 512, 100_000, 262_144])
def test_a_split_layer_reads_back_exactly_and_keeps_big_members_as_content_named_files(store, piece):
    _, src, layout = store
    data = _layer(src, {"big.bin": 3_000_123, "small.txt": 1000, "big2": 2 << 20})
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    writer, at, rng = SplitWriter(layout), 0, random.Random(7)
    while at < len(data):
        n = piece or rng.randint(1, 5000)
        writer.write(data[at:at + n])
        at += n
    desc = writer.finish(digest)
    assert desc.digest == digest and _read(layout, digest) == data and layout.verify(digest)
    files = sorted(p.name for p in recipes.files_dir(layout).iterdir())
    assert files == sorted(hashlib.sha256((src / n).read_bytes()).hexdigest() for n in ("big.bin", "big2"))
    assert not layout.blob_path(digest).exists()


def test_a_member_after_a_pax_header_is_not_split(store):
    _, src, layout = store
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x/" + "n" * 120)  # a long name: a PAX header before it
        payload = os.urandom(2 << 20)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    writer = SplitWriter(layout)
    writer.write(data)
    desc = writer.finish("sha256:" + hashlib.sha256(data).hexdigest())
    assert layout.blob_path(desc.digest).read_bytes() == data  # kept whole, as a plain blob


def test_too_much_literal_turns_the_split_into_a_plain_blob(store):
    _, src, layout = store
    sizes = {"big.bin": 2 << 20, **{f"s{i:04d}": 64 << 10 for i in range(LITERAL_MAX // (64 << 10) + 8)}}
    data = _layer(src, sizes)
    writer = SplitWriter(layout)
    for at in range(0, len(data), 262_144):
        writer.write(data[at:at + 262_144])
    desc = writer.finish("sha256:" + hashlib.sha256(data).hexdigest())
    assert layout.blob_path(desc.digest).read_bytes() == data
    assert not [p for p in recipes.files_dir(layout).iterdir() if not p.name.startswith(".")]


def test_a_stream_cut_inside_a_member_is_refused_and_leaves_no_files(store):
    _, src, layout = store
    data = _layer(src, {"big.bin": 2 << 20})
    writer = SplitWriter(layout)
    writer.write(data[:1 << 20])
    with pytest.raises(ValueError, match="inside a tar member"):
        writer.finish("sha256:" + "0" * 64)
    writer.abort()
    assert list(recipes.files_dir(layout).iterdir()) == []
