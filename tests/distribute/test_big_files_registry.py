"""Big files through a real registry: weights go up as plain tar layers (gzip does not pay on them), a code-only
change of the seed's layout (data/ beside code/) pushes at most 3 blobs and 1 MB, counted on the registry's side,
a pull keeps each big file once (the store entry links the layout's copy), and Docker pulls what was pushed."""

from __future__ import annotations

import json
import os
import time

import pytest

from builder.images import recipes
from builder.images.image import read_image
from builder.store import Store
from tests.helpers.disk import disk_bytes
from tests.helpers.models import HANDLER, write_model
from tests.registry_servers import uploads

PLAIN = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """No engine answers swcli here: push and pull talk to the registry alone."""




@pytest.fixture()
def seed(tmp_path):
    root = write_model(tmp_path / "seed", HANDLER)
    (root / "models" / "cifar_net.pth").write_bytes(os.urandom(3 << 20))
    (root / "data").mkdir()
    (root / "data" / "test_batch").write_bytes(os.urandom(30 << 20))  # the seed keeps its test batch here
    return root


def build(cli, project, runtime) -> None:
    res = cli("model", "build", project, "--skip-gen-env", "--runtime", runtime, "--no-load")
    assert res.code == 0, res.err


def uploaded(registry, since: int) -> tuple[int, int]:
    time.sleep(0.3)  # the access log line is written as the request completes
    return uploads(registry.root, registry.log, since)


def raw_manifest(registry, ref: str) -> dict:
    return json.loads(registry.skopeo("inspect", "--raw", f"docker://{registry.address}/{ref}").stdout)




def test_a_code_only_change_of_the_seed_layout_pushes_3_blobs_and_under_1_mb(cli, seed, runtime, registry):
    build(cli, seed, runtime)
    assert cli("model", "push", "modthree", f"{registry.address}/team/seed:v1").code == 0
    layers = raw_manifest(registry, "team/seed:v1")["layers"]
    own = layers[-4:]  # data/test_batch, the weights file, the small weights layer, the code
    assert [layer["mediaType"] for layer in own[:2]] == [PLAIN, PLAIN]  # random bytes: gzip does not pay
    assert own[-1]["mediaType"] == GZIP and own[-1]["size"] < 1 << 20
    with open(seed / "code" / "ppl.py", "a") as fh:
        fh.write("\n# a one-line change\n")
    build(cli, seed, runtime)
    since = len(registry.log.read_text())
    res = cli("model", "push", "modthree", f"{registry.address}/team/seed:v2")
    assert res.code == 0, res.err
    blobs, size = uploaded(registry, since)
    assert blobs <= 3 and size <= 1 << 20, (blobs, size)  # the code layer and the config (the manifest is a PUT)
    since = len(registry.log.read_text())
    assert cli("model", "push", "modthree", f"{registry.address}/team/seed:v2").code == 0
    assert uploaded(registry, since) == (0, 0)  # unchanged: nothing goes up


def test_a_pulled_big_model_is_on_disk_once_and_evaluates(cli, seed, runtime, registry, tmp_path, monkeypatch,
                                                         tiny_dataset):
    build(cli, seed, runtime)
    assert cli("dataset", "build", tiny_dataset, "--no-load").code == 0
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "before").code == 0
    image_id = read_image(Store().layout, "swmp/modthree:latest").image_id
    assert cli("model", "push", "modthree", f"{registry.address}/team/seed:v1").code == 0
    assert cli("dataset", "push", "tiny", f"{registry.address}/team/tiny:v1").code == 0

    home = tmp_path / "fresh-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    for ref in ("team/seed:v1", "team/tiny:v1"):
        res = cli("pull", f"{registry.address}/{ref}")
        assert res.code == 0, res.err
    assert read_image(Store().layout, "swmp/modthree:latest").image_id == image_id
    entry = Store().resolve("model", "modthree")
    files = recipes.files_dir(Store().layout)
    for rel in ("models/cifar_net.pth", "data/test_batch"):
        st = (entry.path / "src" / rel).stat()
        sha = next(f["sha256"] for f in entry.manifest["files"] if f["path"] == rel)
        assert (files / sha).stat().st_ino == st.st_ino  # the entry links the layout's copy
    big = (3 << 20) + (30 << 20)
    assert disk_bytes(home / "models", home / "oci" / "files", home / "oci" / "recipes") <= 1.1 * big
    plain = [layer["digest"] for layer in raw_manifest(registry, "team/seed:v1")["layers"] if layer["mediaType"] == PLAIN]
    assert len(plain) == 2 and all(not Store().layout.blob_path(d).exists() and Store().layout.has(d) for d in plain)
    assert cli("model", "info", "modthree", "--verify").code == 0
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "after")
    assert res.code == 0, res.err
    assert (tmp_path / "after" / "metrics.json").read_bytes() == (tmp_path / "before" / "metrics.json").read_bytes()
    assert cli("model", "push", "modthree", f"{registry.address}/team/again:v1").code == 0  # from the recipes
    assert raw_manifest(registry, "team/again:v1") == raw_manifest(registry, "team/seed:v1")


@pytest.mark.docker
def test_docker_pulls_plain_layers_and_gets_the_same_image(engine, cli, seed, runtime, registry):
    build(cli, seed, runtime)
    target = f"{registry.address}/team/plain:v1"
    assert cli("model", "push", "modthree", target).code == 0
    assert PLAIN in {layer["mediaType"] for layer in raw_manifest(registry, "team/plain:v1")["layers"]}
    engine.images.pull(target)
    try:
        assert engine.images.get(target).id == read_image(Store().layout, "swmp/modthree:latest").image_id
        out = engine.containers.run(target, ["-c", "import hashlib;print(hashlib.sha256(open("
                                             "'/opt/swcli/model/src/data/test_batch','rb').read()).hexdigest())"],
                                    entrypoint="python3", remove=True)
        assert out.decode().strip() == next(f["sha256"] for f in Store().resolve("model", "modthree").manifest["files"]
                                            if f["path"] == "data/test_batch")
    finally:
        engine.images.remove(target, force=True)
