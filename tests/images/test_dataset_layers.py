"""Dataset images in bounded layers: the grouping, layers.json, the meta layer last, determinism, delta versions
that share every layer but their tail (counted on a real registry's side), and independent readers (skopeo, umoci).

No Docker engine: images are written with `--no-load`, pushes go through the daemonless client."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from builder.images import dataset_layers as dl
from builder.images.context import from_file
from builder.images.layers import placed, write_tar
from builder.volumes import VolumeFile
from builder.spec import load_dataset_spec
from builder.store import Store
from tests.helpers.layered_datasets import built, project
from tests.registry_servers import Registry, uploaded_blobs

KIB = 1024


def shard(n: int, size: int) -> VolumeFile:
    return VolumeFile(f"data-{n:05d}.swds", 1, size, f"{n:064x}")


def layer_files(layout, digest: str) -> dict[str, bytes]:
    with layout.open_blob(digest) as blob, tarfile.open(fileobj=blob, mode="r|") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar}


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")


# ----------------------------------------------------------------------------------------------- grouping


def test_volumes_are_grouped_greedily_in_order_within_the_layer_size():
    sizes = [4, 4, 4, 4, 10, 3, 3, 4]
    groups = dl.plan_layers([shard(n, s) for n, s in enumerate(sizes)], 12)
    assert [[s.size for s in g] for g in groups] == [[4, 4, 4], [4], [10], [3, 3, 4]]
    # a volume bigger than the layer size is a layer of its own
    groups = dl.plan_layers([shard(0, 5), shard(1, 30), shard(2, 5)], 12)
    assert [[s.size for s in g] for g in groups] == [[5], [30], [5]]


def test_appending_never_moves_an_earlier_boundary():
    sizes = [4, 3, 5, 4, 4, 2, 6, 1, 4, 4]
    full = dl.plan_layers([shard(n, s) for n, s in enumerate(sizes)], 10)
    for cut in range(1, len(sizes)):
        head = dl.plan_layers([shard(n, s) for n, s in enumerate(sizes[:cut])], 10)
        assert head[:-1] == full[:len(head) - 1]


def spec_error(tmp_path, attr: str) -> str:
    from builder.errors import SpecError

    path = project(tmp_path / "p", 3, layer=None)
    (path / "dataset.yaml").write_text((path / "dataset.yaml").read_text() + attr)
    with pytest.raises(SpecError) as err:
        load_dataset_spec(path)
    return str(err.value)


def test_layer_size_above_4g_is_refused_in_one_line_naming_the_file_and_field(tmp_path):
    message = spec_error(tmp_path, "  layer_size: 5G\n")
    assert len(message.splitlines()) == 1
    assert "dataset.yaml" in message and "attr.layer_size" in message and "4G" in message


def test_a_volume_above_4g_without_a_layer_size_names_the_volume_size(tmp_path):
    from builder.errors import SpecError

    with pytest.raises(SpecError) as err:
        load_dataset_spec(project(tmp_path / "p", 3, volume="8G", layer=None))
    message = str(err.value)
    assert "attr.volume_size" in message and "'8G' is above 4G" in message and "None" not in message


def test_layer_size_below_the_volume_size_is_refused(tmp_path):
    message = spec_error(tmp_path, "  layer_size: 2k\n")
    assert "attr.layer_size" in message and "smaller than attr.volume_size" in message


def test_layer_size_default_is_256m_or_the_volume_size(tmp_path):
    assert load_dataset_spec(project(tmp_path / "a", 3, layer=None)).layer_size == 256 << 20
    assert load_dataset_spec(project(tmp_path / "b", 3, volume="1G", layer=None)).layer_size == 1 << 30
    assert load_dataset_spec(project(tmp_path / "c", 3, layer="4G")).layer_size == 4 << 30


def test_volumes_are_hashed_while_written_with_little_held_back(tmp_path, monkeypatch):
    """The writer's sha256 of each volume equals the file's, also when records outgrow the hasher's byte budget
    (here 1 KiB: every record waits for the one before it to be hashed)."""
    from builder.volumes import writer as volume_writer

    monkeypatch.setattr(volume_writer._Hasher.__init__, "__defaults__", (1024,))
    writer = volume_writer.VolumeWriter(tmp_path, 64, 8 * KIB)
    for i in range(200):
        writer.add(bytes([i % 256]) * (100 + 37 * i), b"label")
    volumes = writer.close()
    assert len(volumes) > 5
    for vol in volumes:
        assert vol.sha256 == hashlib.sha256((tmp_path / vol.name).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- the tar


def test_volume_tar_is_the_bytes_the_generic_layer_writer_makes(tmp_path):
    """So a layer rewritten by the generic path (a corrupt blob found at load) keeps its digest."""
    for n, size in enumerate([0, 1, 511, 512, 513, 10_000, 3 * dl.CHUNK // 2]):
        (tmp_path / f"data-{n:05d}.swds").write_bytes(bytes([n + 1]) * size)
    entries = [from_file(f"layers/00000/{p.name}", p) for p in sorted(tmp_path.glob("*.swds"))]
    fast, generic = io.BytesIO(), io.BytesIO()
    dl.write_volume_tar(placed(entries, "layers/00000", "/dataset"), fast)
    write_tar(placed(entries, "layers/00000", "/dataset"), generic)
    assert fast.getvalue() == generic.getvalue()


# ----------------------------------------------------------------------------------------------- the image


def test_image_layers_and_layers_json(cli, tmp_path):
    entry, image = built(cli, project(tmp_path / "p", 100))
    layout = Store().layout
    count = int(image.labels[dl.LAYERS_LABEL])
    meta = layer_files(layout, image.layers[-1].digest)
    doc = dl.read_layers_json(meta[f"dataset/{dl.LAYERS_NAME}"])
    assert sorted(meta) == ["dataset", "dataset/index.swidx", "dataset/layers.json", "dataset/manifest.json"]
    assert json.loads(meta["dataset/manifest.json"])["version"] == entry.version
    assert meta["dataset/index.swidx"] == (entry.path / "index.swidx").read_bytes()
    assert doc["layer_size"] == 12 * KIB and len(doc["layers"]) == count >= 3
    # the volume layers are the N entries before the meta layer, in layers.json's order
    volume_blobs = image.layers[-1 - count:-1]
    assert [layer["diff_id"] for layer in doc["layers"]] == [b.digest for b in volume_blobs]
    assert image.diff_ids[-1 - count:-1] == [b.digest for b in volume_blobs]
    shards = {s["file"]: s for s in entry.manifest["shards"]}
    listed = []
    for layer, blob in zip(doc["layers"], volume_blobs):
        assert layer["size"] == blob.size
        files = layer_files(layout, blob.digest)
        assert sorted(files) == ["dataset", *(f"dataset/{v}" for v in layer["volumes"])]
        assert sum(shards[v]["size"] for v in layer["volumes"]) <= 12 * KIB
        for volume in layer["volumes"]:
            assert hashlib.sha256(files[f"dataset/{volume}"]).hexdigest() == shards[volume]["sha256"]
        listed += layer["volumes"]
    assert listed == sorted(shards)  # every volume once, in volume order


def test_the_same_dataset_gives_the_same_image_anywhere(cli, tmp_path, monkeypatch):
    first_entry, first = built(cli, project(tmp_path / "p1", 60))
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "home2"))
    second_entry, second = built(cli, project(tmp_path / "p2", 60))
    assert first_entry.version == second_entry.version
    assert first.image_id == second.image_id and first.manifest.digest == second.manifest.digest


def test_unchanged_volume_layers_are_never_tarred_again(cli, tmp_path, monkeypatch):
    from builder.images import build

    path = project(tmp_path / "p", 60)
    built(cli, path)
    tarred = []
    monkeypatch.setattr(dl, "write_volume_tar", lambda entries, out: tarred.append(entries))
    monkeypatch.setattr(dl, "write_recipe_layer", lambda layout, entries: tarred.append(entries))
    entry = Store().resolve("dataset", "tiny")
    result = build.build_dataset_image(entry, load=False)
    assert tarred == [] and result.layers_written == 0


def test_an_entry_carrying_a_layers_json_builds_the_same_image(cli, tmp_path):
    """A dataset pulled from an image may hold the image's layers.json: it is written anew, not copied twice."""
    from builder.images import build

    entry, image = built(cli, project(tmp_path / "p", 60))
    stale = entry.path / dl.LAYERS_NAME
    stale.parent.chmod(0o755)
    stale.write_text("{}")
    assert build.build_dataset_image(entry, load=False).image_id == image.image_id


def test_ctrl_c_inside_a_volume_layer_leaves_no_temp_blob_and_no_ref(cli, tmp_path, monkeypatch):
    from builder.images import build, recipes

    assert cli("dataset", "build", project(tmp_path / "p", 60), "--no-image").code == 0
    entry = Store().resolve("dataset", "tiny")
    real = recipes.commit

    def ctrl_c_before_the_rename(layout_root, digest, tmp):  # the layer is hashed, its recipe a temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes, "commit", ctrl_c_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        build.build_dataset_image(entry, load=False)
    layout = Store().layout
    assert not [ref for ref in layout.refs() if ref.startswith("swds/tiny:")]
    assert not list(layout.blobs.glob(".tmp-*")) and not list(recipes.folder(layout.root).glob("*"))
    monkeypatch.setattr(recipes, "commit", real)
    # nothing of the interrupted build was kept: every volume layer and the meta layer are written now
    assert build.build_dataset_image(entry, load=False).layers_written == len(dl.volume_layers(entry.manifest, entry.path)) + 1


def test_dockerfile_only_context_holds_the_same_layers_json(cli, tmp_path):
    entry, image = built(cli, project(tmp_path / "p", 60))
    out = tmp_path / "ctx"
    assert cli("dataset", "build", tmp_path / "p", "--dockerfile-only", out).code == 0
    meta = layer_files(Store().layout, image.layers[-1].digest)
    assert (out / "meta" / dl.LAYERS_NAME).read_bytes() == meta[f"dataset/{dl.LAYERS_NAME}"]
    doc = dl.read_layers_json(meta[f"dataset/{dl.LAYERS_NAME}"])
    folders = sorted(p.name for p in (out / "layers").iterdir())
    assert [sorted(p.name for p in (out / "layers" / f).iterdir()) for f in folders] == \
        [layer["volumes"] for layer in doc["layers"]]
    dockerfile = (out / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert copies == [f"COPY --chown=0:0 layers/{f}/ /dataset/" for f in folders] + ["COPY --chown=0:0 meta/ /dataset/"]


def test_dockerfile_only_hashes_without_storing_layers(cli, tmp_path):
    """A context build computes the diff_ids for layers.json, but puts no volume layer into the store."""
    path = project(tmp_path / "p", 60)
    assert cli("dataset", "build", path, "--no-image").code == 0
    assert cli("dataset", "build", path, "--dockerfile-only", tmp_path / "ctx").code == 0
    blobs = Store().layout.blobs
    assert not blobs.is_dir() or not any(p.stat().st_size > 4 * KIB for p in blobs.iterdir())


@pytest.mark.parametrize("doc, words", [
    (b"[", ["not valid JSON"]),
    (b'{"layer_size": 1, "layers": {}}', ["'layers'"]),
    (b'{"layer_size": -1, "layers": []}', ["'layer_size'"]),
    (b'{"layer_size": 1, "layers": [{"diff_id": "sha256:ab", "size": 1, "volumes": ["a"]}]}', ["layers[0].diff_id"]),
    (b'{"layer_size": 1, "layers": [{"diff_id": "sha256:' + b"a" * 64 + b'", "size": 1, "volumes": ["../a"]}]}',
     ["layers[0].volumes", "plain file name"]),
])
def test_bad_layers_json_is_refused_naming_the_field(doc, words):
    with pytest.raises(dl.LayersFileError) as err:
        dl.read_layers_json(doc, "x/layers.json")
    assert all(w in str(err.value) for w in ["x/layers.json", *words]), str(err.value)


# ----------------------------------------------------------------------------------------------- delta versions


@pytest.mark.registry
def test_appending_one_percent_shares_every_layer_but_the_tail_and_pushes_only_those(cli, tmp_path, monkeypatch):
    """v1: 1000 records; v2: the same plus 10. The images share every volume layer but the last one(s); the push
    of v2 after v1 uploads only those, the meta layer and the config (the registry's own access log counts)."""
    v1_entry, v1 = built(cli, project(tmp_path / "v1", 1000))
    v2_entry, v2 = built(cli, project(tmp_path / "v2", 1010))
    assert v1_entry.version != v2_entry.version
    n1, n2 = int(v1.labels[dl.LAYERS_LABEL]), int(v2.labels[dl.LAYERS_LABEL])
    assert n1 >= 10
    old, new = v1.diff_ids[-1 - n1:-1], v2.diff_ids[-1 - n2:-1]
    assert new[:n1 - 1] == old[:n1 - 1]  # every volume layer but the last is shared
    changed = [d for d in new if d not in old]
    assert 1 <= len(changed) <= 2 and changed == new[n1 - 1:]
    assert v2.diff_ids[-1] != v1.diff_ids[-1]  # the meta layer

    reg = Registry(tmp_path / "registry")
    try:
        target = f"{reg.address}/team/tiny"
        res = cli("dataset", "push", f"tiny:{v1_entry.version}", f"{target}:v1")
        assert res.code == 0, res.err
        before = uploaded_blobs(reg.log)
        assert before == len(v1.layers) + 1  # every layer and the config
        res = cli("dataset", "push", f"tiny:{v2_entry.version}", f"{target}:v2")
        assert res.code == 0, res.err
        assert uploaded_blobs(reg.log) - before == len(changed) + 2  # the changed tail, the meta layer, the config
        assert reg.skopeo("inspect", f"docker://{target}:v2").returncode == 0
    finally:
        reg.stop()


# ----------------------------------------------------------------------------------------------- readers


@pytest.mark.registry
@pytest.mark.skopeo
@pytest.mark.umoci
def test_skopeo_and_umoci_read_the_layered_image(cli, tmp_path):
    """The volume layers are recipes over the store's files, which only swcli reads in the layout: skopeo and umoci
    read the image as `swcli dataset push` put it in a registry, every layer checked against its digest."""
    entry, image = built(cli, project(tmp_path / "p", 100))
    reg = Registry(tmp_path / "registry")
    try:
        target = f"{reg.address}/team/tiny:v1"
        res = cli("dataset", "push", f"tiny:{entry.version}", target)
        assert res.code == 0, res.err
        doc = json.loads(reg.skopeo("inspect", f"docker://{target}").stdout)
        assert doc["Labels"][dl.LAYERS_LABEL] == image.labels[dl.LAYERS_LABEL]
        assert len(doc["Layers"]) == len(image.layers)
        copied = tmp_path / "copy"
        run = reg.skopeo("copy", "--quiet", f"docker://{target}", f"oci:{copied}:x")  # every blob's digest checked
        assert run.returncode == 0, run.stderr
    finally:
        reg.stop()
    bundle = tmp_path / "bundle"
    run = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{copied}:x", str(bundle)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    dataset = bundle / "rootfs" / "dataset"
    for s in entry.manifest["shards"]:
        assert hashlib.sha256((dataset / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert (dataset / "index.swidx").read_bytes() == (entry.path / "index.swidx").read_bytes()
    assert dl.read_layers_json((dataset / dl.LAYERS_NAME).read_bytes())["layer_size"] == 12 * KIB
