"""ModelPack artifacts against a real registry (Debian's docker-registry), checked by another implementation
(modelpack-client, a dev dependency): what `model push --modelpack` publishes it pulls, validates and unpacks into
the model's own files; what it pushes `swcli model eval` evaluates, verified and cached; `swcli pull` records it as
a store model. No Docker engine."""

from __future__ import annotations

import json
import sys
import time

import pytest

from builder.registry.client import RegistryClient
from builder.store import Store
from tests.helpers.modelpack import ARTIFACT, files_under, layer_type, modelpack_client, validate_config
from tests.registry_servers import uploads


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """Every swcli call here runs with no reachable engine."""




def blob_gets(reg, since: int) -> list[str]:
    log = reg.log.read_text()[since:]
    return [line for line in access_log_text(log) if "/blobs/sha256:" in line and line.startswith("GET")]


def access_log_text(text: str) -> list[str]:
    import re

    return [f"{m} {p}" for m, p in re.findall(r'"([A-Z]+) (/v2/[^ ]*) HTTP', text)]


def test_push_modelpack_is_pulled_validated_and_unpacked_by_modelpack_client(cli, project, runtime, registry,
                                                                              tmp_path, monkeypatch):
    model_dir, data_dir = project
    (model_dir / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB of weights (a .bin suffix)
    res = cli("model", "build", model_dir, "--runtime", runtime, "--no-load")  # with its env lock
    assert res.code == 0, res.err
    entry = Store().resolve("model", "modthree")
    image_ref = f"{registry.address}/team/modthree:v1"

    res = cli("model", "push", "modthree", image_ref)
    assert res.code == 0, res.err
    time.sleep(0.3)
    plain = uploads(registry.root, registry.log)
    since = len(registry.log.read_text())
    res = cli("model", "push", "modthree", image_ref, "--modelpack")
    assert res.code == 0, res.err
    assert f"pushed ModelPack {registry.address}/team/modthree:v1-modelpack@sha256:" in res.out
    time.sleep(0.3)
    extra = uploads(registry.root, registry.log, since)
    weights = sum(f["size"] for f in entry.manifest["files"] if f["role"] == "weights")
    # the image is there already: only the ModelPack blobs go up, each weight byte once more (raw, not in a tar)
    assert weights <= extra[1] < weights + 64 * 1024, (plain, extra, weights)
    print(f"plain push: {plain[0]} blobs, {plain[1]} bytes; --modelpack after it: {extra[0]} blobs, {extra[1]} bytes")

    client = RegistryClient(registry.address)
    manifest = json.loads(client.get_manifest("team/modthree", "v1-modelpack").data)
    image = client.manifest_descriptor("team/modthree", "v1")
    assert manifest["artifactType"] == ARTIFACT and manifest["subject"]["digest"] == image["digest"]
    listed = client.referrers("team/modthree", image["digest"], ARTIFACT)
    assert [d["digest"] for d in listed] == [client.manifest_descriptor("team/modthree", "v1-modelpack")["digest"]]
    kinds = {layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"] for layer in manifest["layers"]}
    assert kinds["big.bin"] == kinds["models/weights.json"] == layer_type("weight")
    assert kinds["model.yaml"] == layer_type("code") and kinds["code"] == layer_type("code", "tar")
    big = next(f for f in entry.manifest["files"] if f["path"] == "big.bin")
    assert next(la for la in manifest["layers"] if la["annotations"]["org.cncf.model.filepath"]
                == "big.bin")["digest"] == "sha256:" + big["sha256"]  # the store's sha256: no copy, no rehash

    pulled = modelpack_client("pull", f"{registry.address}/team/modthree:v1-modelpack", tmp_path / "mp")
    assert pulled.returncode == 0, pulled.stderr
    got = files_under(tmp_path / "mp")
    env_lock = got.pop(".swcli/env.lock")
    assert env_lock == (entry.path / "env.lock").read_bytes()
    assert got == files_under(entry.path / "src")  # every file of the model, byte for byte, at its place
    config_blob = manifest["config"]
    import io

    buf = io.BytesIO()
    client.fetch_blob("team/modthree", config_blob["digest"], buf, size=config_blob["size"])
    config = json.loads(buf.getvalue())
    validate_config(config)
    assert config["descriptor"]["name"] == "modthree" and config["descriptor"]["description"] == "toy"
    assert manifest["annotations"]["io.swcli.model.tags"] == "multi_classification"

    res = cli("model", "push", "modthree", image_ref, "--modelpack")  # again: the same artifact, nothing uploaded
    assert res.code == 0 and "ModelPack" in res.out and "0 blob(s) uploaded" in res.out.splitlines()[-1], res.out

    res = cli("eval", "list", "--image", f"{registry.address}/team/modthree:v1-modelpack")
    assert res.code == 0, res.err  # the artifact leads to its image's evaluations (none attached yet)

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    res = cli("pull", f"{registry.address}/team/modthree:v1-modelpack")
    assert res.code == 0, res.err
    again = Store().resolve("model", "modthree")
    assert again.version == entry.version  # the same model, recomputed from what was pulled
    assert cli("model", "info", "modthree", "--verify").code == 0
    assert cli("dataset", "build", data_dir, "--no-image").code == 0
    res = cli("model", "eval", f"modthree:{entry.version}", "--dataset", "tiny", "-o", tmp_path / "run")
    assert res.code == 0, res.err

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "swcli-home"))  # back to the store that built it, and its runtime
    assert cli("dataset", "build", data_dir, "--no-image").code == 0
    res = cli("model", "eval", f"{registry.address}/team/modthree:v1-modelpack", "--dataset", "tiny",
              "-o", tmp_path / "run2", "--runtime", runtime)
    assert res.code == 0, res.err
    recorded = json.loads((tmp_path / "run2" / "run.json").read_text())["runtime"]
    assert recorded.startswith(f"{runtime}:") and recorded.endswith(f"(in-process: local:{sys.prefix})"), recorded
    res = cli("eval", "attach", tmp_path / "run2", f"{registry.address}/team/modthree:v1-modelpack")
    assert res.code == 0, res.err
    assert f"(subject {image['digest']})" in res.out  # attached to the image behind the artifact
    res = cli("eval", "list", "--image", f"{registry.address}/team/modthree:v1-modelpack", "-o", "json")
    assert res.code == 0 and len(json.loads(res.out)) == 1, res.out + res.err


def test_swcli_evaluates_what_modelpack_client_pushed_and_caches_it(cli, project, registry, tmp_path):
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir, "--no-image").code == 0
    (tmp_path / "config.json").write_text(json.dumps({"descriptor": {"name": "modthree"}, "config": {}}))
    ref = f"{registry.address}/other/modthree:1"
    pushed = modelpack_client("push", ref, "--config", tmp_path / "config.json",
                              "--layer", f"{model_dir / 'models'}:{layer_type('weight')}",  # a folder: a weight tar
                              "--layer", f"{model_dir / 'code'}:{layer_type('code', 'tar+gzip')}",
                              "--layer", f"{model_dir / 'model.yaml'}:{layer_type('code')}")
    assert pushed.returncode == 0, pushed.stderr

    since = len(registry.log.read_text())
    started = time.perf_counter()
    res = cli("model", "eval", ref, "--dataset", "tiny", "-o", tmp_path / "run1", "--runtime", "local")
    first = time.perf_counter() - started
    assert res.code == 0, res.err
    metrics = json.loads((tmp_path / "run1" / "metrics.json").read_text())
    assert metrics  # the handler ran over the 50 records and cmp scored them
    run = json.loads((tmp_path / "run1" / "run.json").read_text())
    assert run["model"]["source"] == ref and run["runtime"] == f"local:{sys.prefix}"
    time.sleep(0.3)
    assert len(blob_gets(registry, since)) == 4  # the config and the three layers

    entry = Store().resolve("model", "modthree")
    roles = {f["path"]: f["role"] for f in entry.manifest["files"]}
    assert roles["models/weights.json"] == "weights" and roles["code/ppl.py"] == roles["model.yaml"] == "code"
    assert cli("model", "info", "modthree", "--verify").code == 0

    since = len(registry.log.read_text())
    started = time.perf_counter()
    res = cli("model", "eval", ref, "--dataset", "tiny", "-o", tmp_path / "run2")
    second = time.perf_counter() - started
    assert res.code == 0, res.err
    time.sleep(0.3)
    assert blob_gets(registry, since) == []  # cached by the manifest's digest: only the manifest is asked for
    assert (tmp_path / "run2" / "metrics.json").read_bytes() == (tmp_path / "run1" / "metrics.json").read_bytes()
    digest = RegistryClient(registry.address).manifest_descriptor("other/modthree", "1")["digest"]
    since = len(registry.log.read_text())
    assert cli("model", "eval", f"{registry.address}/other/modthree@{digest}", "--dataset", "tiny").code == 0
    time.sleep(0.3)
    assert access_log_text(registry.log.read_text()[since:]) == []  # by digest: not one request
    print(f"eval of a ModelPack artifact: first {first:.2f} s, cached {second:.2f} s")

    res = cli("model", "eval", ref, "--dataset", "tiny", "--runtime", "no-such-runtime")
    assert res.code != 0 and "no-such-runtime" in res.err
