"""A dataset's bytes once on disk: its volume layers are recipes over the store entry's volumes, byte for byte the
tar ``write_tar`` makes (so the same image ids as before), a volume that changed makes its layer missing (and the
next build writes it again), and an image whose entry was removed fails in one line.

No Docker engine: images are written with `--no-load`."""

from __future__ import annotations

import hashlib
import io
import os
import shutil

import pytest

from tests.helpers.disk import disk_bytes

from builder.images import dataset_layers as dl
from builder.images import recipes
from builder.images.layers import placed, write_tar
from builder.images.oci import Layout, LayoutError
from builder.store import Store
from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.layered_datasets import built, project
from tests.registry_servers import Registry

KIB = 1024


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")




def blob_bytes(layout: Layout, digest: str) -> bytes:
    with layout.open_blob(digest) as fh:
        return fh.read()


def test_a_dataset_build_with_its_image_keeps_the_volumes_once(cli, tmp_path, swcli_home):
    """Store + layout grow by the volumes and a little: the volume layers are recipes, not copies."""
    built(cli, project(tmp_path / "warm", 3))  # the base image, once
    before = disk_bytes(swcli_home)
    records = [(hashlib.sha256(str(i).encode()).digest() * 128, i % 3) for i in range(2000)]  # 4 KiB each
    path = write_tiny_dataset(tmp_path / "big", records, files=4, volume="256k",
                              yaml_extra="  layer_size: 1M\n")
    entry, image = built(cli, path)
    volumes = entry.manifest["totals"]["shard_bytes"]
    assert volumes > 8_000_000 and int(image.labels[dl.LAYERS_LABEL]) >= 8
    grown = disk_bytes(swcli_home) - before
    assert volumes < grown <= 1.1 * volumes + (64 << 10), (grown, volumes)
    layout = Store().layout
    assert not [b for b in image.layers[-1 - int(image.labels[dl.LAYERS_LABEL]):-1]
                if layout.blob_path(b.digest).exists()]


def test_recipe_layers_are_the_bytes_of_write_tar_and_of_a_layout_without_the_store(cli, tmp_path):
    """Each volume layer reads back as the tar ``write_tar`` makes of its volumes; a layout elsewhere (no store
    beside it: the layers are tar blobs) gets the same image, so the image ids are those of before recipes."""
    from builder.images.build import build_dataset_image

    entry, image = built(cli, project(tmp_path / "p", 200))
    layout = Store().layout
    planned = dl.volume_layers(entry.manifest, entry.path)
    count = int(image.labels[dl.LAYERS_LABEL])
    assert count == len(planned) >= 3
    for layer, blob in zip(planned, image.layers[-1 - count:-1]):
        assert recipes.path_of(layout.root, blob.hex).is_file() and not layout.blob_path(blob.digest).exists()
        tar = io.BytesIO()
        write_tar(placed(layer.entries(entry.path), layer.src, dl.DEST), tar)
        assert blob_bytes(layout, blob.digest) == tar.getvalue()
        assert blob.digest == "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest() and blob.size == len(tar.getvalue())
    elsewhere = Layout(tmp_path / "elsewhere" / "oci")
    again = build_dataset_image(entry, load=False, layout=elsewhere)
    assert again.image_id == image.image_id
    assert not recipes.folder(elsewhere.root).exists()


def test_a_changed_volume_makes_its_layer_missing_and_the_next_build_writes_it_again(cli, tmp_path):
    from builder.images.build import build_dataset_image
    from builder.images.image import read_image

    entry, image = built(cli, project(tmp_path / "p", 100))
    layout = Store().layout
    volume = entry.path / entry.manifest["shards"][0]["file"]
    first = image.layers[-1 - int(image.labels[dl.LAYERS_LABEL])]
    # the same bytes in a new file (a restore from a backup): a new inode, so the recipe no longer holds
    shutil.copyfile(volume, tmp_path / "copy")
    os.replace(tmp_path / "copy", volume)
    assert not layout.has(first.digest, first.size)
    with pytest.raises(LayoutError) as err:
        read_image(layout, f"swds/tiny:{entry.version}")
    assert len(str(err.value).splitlines()) == 1 and volume.name in str(err.value)
    again = build_dataset_image(entry, load=False)
    assert again.image_id == image.image_id and again.layers_written >= 1
    assert layout.verify(first.digest)


def test_bytes_changed_in_place_are_caught_by_the_reader_not_sent(cli, tmp_path):
    """A volume edited in place keeping its size and mtime: every reader hashes what it reads, so verify fails."""
    entry, image = built(cli, project(tmp_path / "p", 100))
    layout = Store().layout
    volume = entry.path / entry.manifest["shards"][0]["file"]
    first = image.layers[-1 - int(image.labels[dl.LAYERS_LABEL])]
    st = volume.stat()
    volume.chmod(0o644)
    with open(volume, "r+b") as fh:
        fh.write(b"\xff")
    os.utime(volume, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert layout.has(first.digest, first.size)  # size, mtime and inode as they were
    assert not layout.verify(first.digest)


def recipe_files(layout: Layout, image) -> set[str]:
    """The store files the image's volume layers are kept over."""
    out = set()
    for blob in image.layers[-1 - int(image.labels[dl.LAYERS_LABEL]):-1]:
        out |= {p.rel for p in recipes.load(layout.root, blob.hex)[1] if isinstance(p, recipes.FilePart)}
    return out


@pytest.mark.registry
def test_a_removed_dataset_leaves_its_image_whole_and_a_rebuild_takes_its_volumes_back(cli, tmp_path):
    """`swcli dataset remove` keeps the volumes its image uses (in oci/files); building the dataset again keeps
    the layers over the new entry's volumes, so the bytes are once on disk again after `swcli gc`."""
    entry, image = built(cli, project(tmp_path / "p", 60))
    ref = f"swds/tiny:{entry.version}"
    assert cli("dataset", "remove", "tiny").code == 0
    layout = Store().layout
    assert all(not f.startswith("datasets/") for f in recipe_files(layout, image))
    reg = Registry(tmp_path / "registry")
    try:
        res = cli("dataset", "push", ref, f"{reg.address}/team/tiny:v1")
        assert res.code == 0, res.err
    finally:
        reg.stop()
    again, rebuilt = built(cli, project(tmp_path / "p", 60))
    assert again.version == entry.version and rebuilt.image_id == image.image_id
    assert all(f.startswith(f"datasets/tiny/{entry.version}/") for f in recipe_files(layout, rebuilt))


def test_an_old_tar_blob_becomes_a_recipe_on_the_next_build(cli, tmp_path, monkeypatch):
    """A layout written by an older swcli holds the volume layers as tar blobs: the next build keeps them over the
    store's volumes instead and drops the copies; the image id does not change."""
    from builder.images.build import build_dataset_image

    with monkeypatch.context() as patched:
        patched.setattr(dl, "_under", lambda path, root: False)  # as before recipes: every layer a tar blob
        entry, image = built(cli, project(tmp_path / "p", 60))
    layout = Store().layout
    volume_layers = image.layers[-1 - int(image.labels[dl.LAYERS_LABEL]):-1]
    assert all(layout.blob_path(b.digest).is_file() for b in volume_layers)
    again = build_dataset_image(entry, load=False)
    assert again.image_id == image.image_id and again.layers_written == len(volume_layers)
    assert not any(layout.blob_path(b.digest).exists() for b in volume_layers)
    assert all(layout.verify(b.digest) for b in volume_layers)
    assert build_dataset_image(entry, load=False).layers_written == 0


def test_a_version_sharing_volume_layers_keeps_them_over_the_first_versions_volumes(cli, tmp_path):
    """1% more records: only the tail layer(s) and the meta layer are made; the shared layers stay as they are."""
    v1, first = built(cli, project(tmp_path / "v1", 1000))
    v2, second = built(cli, project(tmp_path / "v2", 1010))
    shared = [b for b in second.layers if b in first.layers[-1 - int(first.labels[dl.LAYERS_LABEL]):-1]]
    assert len(shared) >= 5
    layout = Store().layout
    for blob in shared:
        files = {p.rel for p in recipes.load(layout.root, blob.hex)[1] if isinstance(p, recipes.FilePart)}
        assert all(f.startswith(f"datasets/tiny/{v1.version}/") for f in files)


@pytest.mark.registry
def test_an_image_whose_volumes_were_deleted_fails_to_push_in_one_line(cli, tmp_path):
    entry, image = built(cli, project(tmp_path / "p", 60))
    ref = f"swds/tiny:{entry.version}"
    entry.path.chmod(0o755)
    shutil.rmtree(entry.path)  # by hand, not `swcli dataset remove`: nothing kept the files
    reg = Registry(tmp_path / "registry")
    try:
        res = cli("dataset", "push", ref, f"{reg.address}/team/tiny:v1")
    finally:
        reg.stop()
    assert res.code != 0
    message = res.err.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "is missing" in message and "is gone" in message and "build the dataset" in message
