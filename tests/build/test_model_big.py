"""Models with big files: each big file in a layer of its own kept once on disk, an unchanged tree not read again
(and read again with --verify), and the same image from another folder and another store."""

from __future__ import annotations

import os
import shutil

from builder.images.image import read_image
from builder.store import Store
from tests.helpers.disk import disk_bytes
from tests.helpers.models import HANDLER, write_model

WEIGHTS = (3 << 20) + 5




def big_project(root):
    write_model(root, HANDLER)
    (root / "models" / "big.safetensors").write_bytes(os.urandom(WEIGHTS))
    (root / "data").mkdir()
    (root / "data" / "test_batch").write_bytes(os.urandom(2 << 20))  # the seed's data/ beside its code
    return root




def build(cli, project, runtime, *extra):
    res = cli("model", "build", project, "--skip-gen-env", "--runtime", runtime, "--no-load", *extra)
    assert res.code == 0, res.err
    return Store().resolve("model", "modthree")


def test_big_files_get_layers_of_their_own_and_live_once_in_the_store(cli, runtime, tmp_path, swcli_home):
    project = big_project(tmp_path / "p")
    before = disk_bytes(swcli_home, allocated=True)
    entry = build(cli, project, runtime)
    image = read_image(Store().layout, "swmp/modthree:latest")
    runtime_layers = len(read_image(Store().layout, f"swrt/{runtime}:latest").layers)
    own = image.layers[runtime_layers:]
    assert [layer.size > 2 << 20 for layer in own] == [True, True, False, False]  # data, weights; small weights, code
    for layer in own[:2]:
        assert not Store().layout.blob_path(layer.digest).exists() and Store().layout.verify(layer.digest)
    added = disk_bytes(swcli_home, allocated=True) - before
    big = WEIGHTS + (2 << 20)
    assert big <= added <= 1.1 * big, (added, big)  # the big files once, and a little more
    assert (entry.path / "src" / "models" / "big.safetensors").stat().st_size == WEIGHTS


def test_an_unchanged_tree_is_not_read_again_and_verify_reads_it(cli, runtime, tmp_path):
    project = big_project(tmp_path / "p")
    first = build(cli, project, runtime).version
    weights = project / "models" / "big.safetensors"
    st = weights.stat()
    with open(weights, "r+b") as fh:  # new bytes, same size, mtime and inode: what only a read can see
        fh.write(os.urandom(64))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert build(cli, project, runtime).version == first
    verified = build(cli, project, runtime, "--verify").version
    assert verified != first
    os.utime(weights)  # a touch: the stat differs, so it is read
    assert build(cli, project, runtime).version == verified


def test_the_same_big_model_from_another_folder_and_store_is_the_same_image(cli, runtime, tmp_path, monkeypatch):
    project = big_project(tmp_path / "p")
    build(cli, project, runtime)
    first = read_image(Store().layout, "swmp/modthree:latest").image_id
    copy = tmp_path / "elsewhere" / "p"
    shutil.copytree(project, copy)
    os.utime(copy / "models" / "big.safetensors", ns=(1, 1))
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "other-home"))
    venv = tmp_path / "venv"
    assert cli("runtime", "build", "--name", runtime, "--venv", venv, "--no-load").code == 0
    build(cli, copy, runtime)
    assert read_image(Store().layout, "swmp/modthree:latest").image_id == first


def test_a_removed_store_file_makes_a_push_fail_in_one_line(cli, runtime, tmp_path, registry):
    project = big_project(tmp_path / "p")
    entry = build(cli, project, runtime)
    weights = entry.path / "src" / "models" / "big.safetensors"
    os.chmod(weights.parent, 0o755)
    weights.unlink()
    res = cli("model", "push", "modthree", f"{registry.address}/team/big:v1")
    assert res.code != 0
    assert len(res.err.strip().splitlines()) == 1 and "missing" in res.err, res.err


def test_removing_the_model_keeps_its_image_whole_and_its_files_once(cli, runtime, tmp_path, swcli_home):
    project = big_project(tmp_path / "p")
    build(cli, project, runtime)
    layout = Store().layout
    image = read_image(layout, "swmp/modthree:latest")
    res = cli("model", "remove", "modthree")
    assert res.code == 0, res.err
    assert all(layout.verify(layer.digest) for layer in image.layers)  # the recipes now name the kept files
    big = WEIGHTS + (2 << 20)
    assert disk_bytes(swcli_home / "models", swcli_home / "oci" / "files", allocated=True) <= 1.1 * big
    assert not Store().scan("model")[0]
