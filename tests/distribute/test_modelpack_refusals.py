"""ModelPack artifacts swcli refuses, each put on a real registry (docker-registry) with the exact flaw: every one is
one line with exit 5 (RegistryError), before anything is cached or recorded: no store model, no cache record, no
staging folder left."""

from __future__ import annotations

import json

import pytest

from builder.store import Store
from tests.helpers.cli import one_line_error
from tests.helpers.models import HANDLER, MODEL_YAML
from tests.helpers.modelpack import layer_type, put_artifact, tar_bytes

WEIGHTS = json.dumps({"offset": 0}).encode()
CODE = tar_bytes([("./code/__init__.py", b"", None), ("./code/ppl.py", HANDLER.encode(), None)])  # as `tar -C d .`
GOOD = [(layer_type("weight"), WEIGHTS, "models/weights.json"), (layer_type("code", "tar"), CODE, "code"),
        (layer_type("code"), MODEL_YAML.encode(), "model.yaml")]


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """Every swcli call here runs with no reachable engine."""


def left_nothing(home) -> None:
    assert Store().list("model") == []
    assert not list((home / "cache" / "modelpack").glob("*")) if (home / "cache" / "modelpack").exists() else True
    assert not [p for p in (home / "tmp").glob("*")] if (home / "tmp").exists() else True


CASES = {
    "no model.yaml": (dict(layers=GOOD[:2]), "holds no model.yaml"),
    "config without modelfs": (dict(layers=GOOD, config={"descriptor": {}, "config": {}}), "'modelfs' is missing"),
    "config with a wrong-typed name": (dict(layers=GOOD, config={"descriptor": {"name": 5}, "config": {},
                                                                 "modelfs": {"type": "layers", "diffIds": []}}),
                                       "descriptor.name: must be a string"),
    "config with a field the schema lacks": (dict(layers=GOOD, config={"descriptor": {}, "config": {}, "x": 1,
                                                                       "modelfs": {"type": "layers"}}),
                                             "field 'x' is not in the ModelPack config schema"),
    "filepath ../x": (dict(layers=[*GOOD, (layer_type("weight"), b"w", "../x")]), "org.cncf.model.filepath"),
    "filepath absolute": (dict(layers=[*GOOD, (layer_type("weight"), b"w", "/etc/x")]), "is absolute"),
    "filepath a/../../x": (dict(layers=[*GOOD, (layer_type("weight"), b"w", "a/../../x")]), "not a plain relative"),
    "a tar member ../x": (dict(layers=[*GOOD, (layer_type("code", "tar"), tar_bytes([("../x", b"x", None)]), "d")]),
                          "member"),
    "a symlink out, then a file through it": (
        dict(layers=[(layer_type("code", "tar"), tar_bytes([("models", None, "/tmp")]), "models"), *GOOD]),
        "not a regular file"),
    "a file, then a file under it": (
        dict(layers=[*GOOD, (layer_type("weight"), b"w", "model.yaml/x")]), "passes through a file"),
    "the same path twice": (dict(layers=[*GOOD, (layer_type("weight"), b"w", "model.yaml")]), "given by two layers"),
    "a zstd layer": (dict(layers=[*GOOD, (layer_type("weight", "tar+zstd"), b"w", "w")]), ".raw, .tar and .tar+gzip"),
    "a gzip layer that is not gzip": (dict(layers=[*GOOD, (layer_type("code", "tar+gzip"), b"w" * 64, "g")]),
                                      "not a gzip stream"),
    "another artifact type": (dict(layers=GOOD, artifact_type="application/vnd.example.other+json",
                                   config_type="application/vnd.example.config+json"), "not a ModelPack artifact"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_flawed_artifact_is_one_line_exit_5_and_leaves_nothing(cli, registry, swcli_home, case):
    kwargs, words = CASES[case]
    put_artifact(registry.address, "team/bad", "1", **kwargs)
    res = cli("model", "eval", f"{registry.address}/team/bad:1", "--dataset", "tiny")
    assert res.code == 5, res.err
    one_line_error(res, words)
    left_nothing(swcli_home)


def test_pull_refuses_an_artifact_without_model_yaml(cli, registry, swcli_home):
    put_artifact(registry.address, "team/bad", "1", layers=GOOD[:2])
    res = cli("pull", f"{registry.address}/team/bad:1")
    assert res.code == 5
    lines = res.err.splitlines()  # the progress lines of the layers fetched, then the one error line
    assert all(line.endswith(": Pull complete") for line in lines[:-1]), res.err
    one_line_error(type(res)(res.code, res.out, lines[-1]), "holds no model.yaml")
    left_nothing(swcli_home)


def test_a_good_artifact_put_by_hand_is_evaluable_and_its_dataset_layer_never_fetched(cli, registry, project):
    """The control: the same layers without a flaw are a model swcli evaluates; a dataset layer is left out."""
    from tests.helpers.modelpack import digest
    from tests.registry_servers import access_log

    _, data_dir = project
    assert cli("dataset", "build", data_dir, "--no-image").code == 0
    train = b"training data " * 1000
    put_artifact(registry.address, "team/good", "1", layers=[*GOOD, (layer_type("dataset"), train, "data/train")])
    res = cli("model", "eval", f"{registry.address}/team/good:1", "--dataset", "tiny")
    assert res.code == 0, res.err
    assert not [line for line in access_log(registry.log, digest(train)) if line.startswith("GET")]
    assert sorted(f["path"] for f in Store().resolve("model", "modthree").manifest["files"]) == [
        "code/__init__.py", "code/ppl.py", "model.yaml", "models/weights.json"]


def hostile(manifest: dict, blobs: dict[str, bytes]):
    """A fake registry serving ``manifest`` as team/bad:1 and ``blobs`` by digest (whatever bytes they are)."""
    from tests.registry_servers import Answer, HostileServer

    data = json.dumps(manifest).encode()

    def answer(seen):
        if seen.path == "/v2/":
            return Answer(200, {"Content-Type": "application/json"}, b"{}")
        if "/manifests/" in seen.path:
            return Answer(200, {"Content-Type": manifest["mediaType"]}, data)
        for digest_, body in blobs.items():
            if seen.path.endswith(f"/blobs/{digest_}"):
                return Answer(200, {"Content-Type": "application/octet-stream"}, body)
        return Answer(404, {"Content-Type": "application/json"}, b'{"errors":[]}')

    return HostileServer(answer)


def modelpack_manifest(config: tuple[str, int], layers: list[tuple[str, int, str]]) -> dict:
    from tests.helpers.modelpack import ARTIFACT, CONFIG, FILEPATH, OCI_MANIFEST

    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT,
            "config": {"mediaType": CONFIG, "digest": config[0], "size": config[1]},
            "layers": [{"mediaType": layer_type("weight"), "digest": d, "size": n, "annotations": {FILEPATH: p}}
                       for d, n, p in layers]}


def test_declared_sizes_are_refused_before_any_blob_is_fetched(cli, swcli_home):
    from tests.helpers.modelpack import digest

    huge = modelpack_manifest((digest(b"{}"), 5 << 20), [(digest(b"w"), 1, "w")])
    with hostile(huge, {}) as server:
        res = cli("model", "eval", f"{server.address}/team/bad:1", "--dataset", "tiny")
        blob_requests = [s for s in server.seen if "/blobs/" in s.path]
    assert res.code == 5
    one_line_error(res, "config", "declares 5242880 bytes")
    assert blob_requests == []
    disk = modelpack_manifest((digest(b"{}"), 2), [(digest(b"%d" % n), 60 << 30, f"w{n}") for n in range(40)])  # 2.4 TiB
    with hostile(disk, {}) as server:
        res = cli("model", "eval", f"{server.address}/team/bad:1", "--dataset", "tiny")
        blob_requests = [s for s in server.seen if "/blobs/" in s.path]
    assert res.code == 5 and blob_requests == [], res.err
    one_line_error(res, "free on the store's disk")
    left_nothing(swcli_home)


def test_a_layer_whose_bytes_are_not_its_digest_is_not_kept(cli, swcli_home):
    from tests.helpers.modelpack import digest

    config = json.dumps({"descriptor": {}, "config": {},
                         "modelfs": {"type": "layers", "diffIds": [digest(WEIGHTS)]}}).encode()
    manifest = modelpack_manifest((digest(config), len(config)), [(digest(WEIGHTS), len(WEIGHTS), "w.json")])
    forged = b"x" * len(WEIGHTS)
    with hostile(manifest, {digest(config): config, digest(WEIGHTS): forged}) as server:
        res = cli("model", "eval", f"{server.address}/team/bad:1", "--dataset", "tiny")
    assert res.code == 5
    one_line_error(res, "does not match its digest")
    left_nothing(swcli_home)
