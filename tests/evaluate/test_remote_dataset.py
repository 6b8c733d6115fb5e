"""`model eval --dataset REGISTRY/REPO:TAG --shard I/N`: only the slice's layers are fetched (counted on the real
registry's side), into a verified cache a second run reuses; the results equal a local eval's; bad input is one line.

No Docker engine: the dataset image is written with `--no-load` and pushed by the daemonless client."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from builder.images import dataset_layers as dl
from tests.helpers.engine import run_removed
from tests.registry_servers import Registry, access_log, stored_blob
from tests.helpers.cli import one_line_error
from tests.helpers.layered_datasets import built, project

ENGINE = os.environ.get("DOCKER_HOST")  # the docker test builds its model image through the engine
RECORDS = 300  # ~300..500 bytes each in 4k volumes, 12k layers: about 35 volumes in 12 layers


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """Every test here runs with no reachable engine (the docker test's engine fixture is made before)."""


@pytest.fixture()
def pushed(cli, tmp_path, registry, model_dir):  # noqa: F811
    """The model in the store, the layered dataset image pushed; (ref, entry, image)."""
    entry, image = built(cli, project(tmp_path / "p", RECORDS))
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    ref = f"{registry.address}/team/tiny:v1"
    res = cli("dataset", "push", f"tiny:{entry.version}", ref)
    assert res.code == 0, res.err
    return ref, entry, image


def blob_gets(reg: Registry) -> list[str]:
    """Digests of the blobs the registry served (GET .../blobs/<digest> answered 200), in order."""
    return [line.split("/blobs/")[1].split()[0] for line in access_log(reg.log, r"/blobs/sha256:")
            if line.startswith("GET") and line.endswith(" 200")]


def remote_layers(reg: Registry, ref: str) -> list[dict]:
    """The pushed manifest's layer descriptors (as the registry stores them: compressed)."""
    res = reg.skopeo("inspect", "--raw", f"docker://{ref}")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)["layers"]


def test_a_shard_fetches_only_its_layers_and_evaluates_like_a_local_run(cli, tmp_path, registry, pushed):
    ref, entry, image = pushed
    count = int(image.labels[dl.LAYERS_LABEL])
    layers = remote_layers(registry, ref)
    meta = json.loads(json.dumps(layers[-1]))
    for index in range(4):
        before = len(blob_gets(registry))
        out = tmp_path / f"remote{index}"
        res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", f"{index}/4", "-o", out)
        assert res.code == 0, res.err
        local = tmp_path / f"local{index}"
        assert cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", f"{index}/4", "-o", local).code == 0
        assert (out / "results.jsonl").read_bytes() == (local / "results.jsonl").read_bytes()
        run = json.loads((out / "run.json").read_text())
        assert run["dataset"]["version"] == entry.version and run["shard"]["index"] == index
        fetched = set(blob_gets(registry)[before:])
        volume_blobs = {layer["digest"] for layer in layers[-1 - count:-1]} & fetched
        if index == 0:
            assert meta["digest"] in fetched
        # about a quarter of the volume layers, plus at most one shared at each edge
        assert 1 <= len(volume_blobs) <= count // 4 + 2, (index, len(volume_blobs), count)
        # nothing of the base image, and nothing fetched twice within a run
        assert fetched <= {layer["digest"] for layer in layers[-1 - count:]} | {json.loads(
            registry.skopeo("inspect", "--raw", f"docker://{ref}").stdout)["config"]["digest"]}
    # every volume layer was needed by some shard, and each was fetched once over the four runs
    gets = [d for d in blob_gets(registry) if d in {layer["digest"] for layer in layers[-1 - count:-1]}]
    assert sorted(set(gets)) == sorted(layer["digest"] for layer in layers[-1 - count:-1])
    assert len(gets) <= count + 3  # a layer straddling two shards is fetched by the first only (shared cache)


def test_a_second_run_of_the_same_slice_downloads_nothing(cli, tmp_path, registry, pushed):
    ref, _, _ = pushed
    assert cli("model", "eval", "modthree", "--dataset", ref, "--shard", "1/3", "-o", tmp_path / "a").code == 0
    before = access_log(registry.log)
    res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", "1/3", "-o", tmp_path / "b")
    assert res.code == 0, res.err
    after = access_log(registry.log)[len(before):]
    assert [line for line in after if line.startswith("GET")] == []  # a HEAD resolves the tag; no byte is fetched
    assert (tmp_path / "a" / "results.jsonl").read_bytes() == (tmp_path / "b" / "results.jsonl").read_bytes()
    # --resume works on a registry dataset as on a local one: the finished part is left as it is
    res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", "1/3", "-o", tmp_path / "a", "--resume")
    assert res.code == 0 and "finished" in res.out, res.out + res.err


def test_a_whole_run_from_the_registry_equals_a_local_one(cli, tmp_path, registry, pushed):
    ref, _, _ = pushed
    digest = json.loads(registry.skopeo("inspect", f"docker://{ref}").stdout)["Digest"]
    by_digest = f"{ref.rsplit(':', 1)[0]}@{digest}"
    assert cli("model", "eval", "modthree", "--dataset", by_digest, "-o", tmp_path / "r").code == 0
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "l").code == 0
    for name in ("results.jsonl", "metrics.json"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "l" / name).read_bytes()


def test_a_registry_dataset_evaluates_with_workers_in_a_new_process(cli, tmp_path, registry, pushed, swcli_home):
    """The registry client's deadline thread ends with its last exchange, so `--workers 2` forks after reading a
    registry dataset (the fork refuses to run beside other threads); the results equal one process's."""
    import subprocess
    import sys

    ref, _, _ = pushed
    outs = {}
    for workers in ("1", "2"):
        outs[workers] = tmp_path / f"w{workers}"
        done = subprocess.run([sys.executable, "-m", "builder", "model", "eval", "modthree", "--dataset", ref,
                               "--workers", workers, "-o", str(outs[workers])], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "SWCLI_HOME": str(swcli_home),
                                                "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert done.returncode == 0, done.stderr
    assert json.loads((outs["2"] / "run.json").read_text())["workers"] == 2
    for name in ("results.jsonl", "metrics.json"):
        assert (outs["1"] / name).read_bytes() == (outs["2"] / name).read_bytes()


def test_a_shard_spec_beyond_the_dataset_is_one_line(cli, registry, pushed):
    ref, _, _ = pushed
    one_line_error(cli("model", "eval", "modthree", "--dataset", ref, "--shard", f"3/{RECORDS + 1}"),
                   f"has {RECORDS} records")
    one_line_error(cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", f"3/{RECORDS + 1}"),
                   f"has {RECORDS} records")


def test_a_missing_layer_is_one_line_and_nothing_is_cached(cli, tmp_path, registry, pushed, swcli_home):
    ref, _, image = pushed
    layers = remote_layers(registry, ref)
    lost = layers[-2]["digest"]  # the last volume layer: the last shard needs it
    stored_blob(registry.root, lost).unlink()
    res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", "2/3", "-o", tmp_path / "x")
    assert res.code == 5
    one_line_error(res, lost)
    cached = swcli_home / "cache" / "registry" / "layers"
    assert all(not p.name.startswith(".") for p in cached.iterdir())  # no temp left behind
    assert image.diff_ids[-2].split(":")[1] not in {p.name for p in cached.iterdir()}


def test_a_layer_whose_bytes_do_not_match_is_refused_and_not_cached(cli, tmp_path, registry, pushed, swcli_home):
    ref, _, image = pushed
    layers = remote_layers(registry, ref)
    path = stored_blob(registry.root, layers[-2]["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", "2/3", "-o", tmp_path / "x")
    assert res.code == 5 and re.search("does not match its digest|not a readable layer", res.err), res.err
    one_line_error(res, layers[-2]["digest"])
    cached = swcli_home / "cache" / "registry" / "layers"
    assert image.diff_ids[-2].split(":")[1] not in {p.name for p in cached.iterdir()}


def test_more_shards_than_records_is_one_line_before_any_layer_is_fetched(cli, registry, pushed):
    ref, _, _ = pushed
    before = len(blob_gets(registry))
    res = cli("model", "eval", "modthree", "--dataset", ref, "--shard", f"0/{RECORDS + 1}")
    assert res.code == 2  # a usage error (issue 18)
    one_line_error(res, f"shard 0/{RECORDS + 1}: dataset {ref} has {RECORDS} records, so at most {RECORDS} shards")
    layers = remote_layers(registry, ref)
    assert not {layer["digest"] for layer in layers[:-1]} & set(blob_gets(registry)[before:])  # no volume layer


def test_an_unknown_image_is_one_line(cli, registry, pushed):
    one_line_error(cli("model", "eval", "modthree", "--dataset", f"{registry.address}/team/nothing:v1"), "nothing")


# ----------------------------------------------------------------------------------------- parts in the registry


def container(monkeypatch, entry_dir, *args) -> int:
    """The model image's entrypoint, run in-process on the store's model entry (what the image has baked in)."""
    import builder.cli.container as image

    monkeypatch.setattr(image, "MODEL_DIR", entry_dir)
    return image.main([str(a) for a in args])


@pytest.mark.slow  # builds the model image (no engine)
@pytest.mark.base_rootfs
def test_parts_go_to_the_registry_and_the_merge_attaches_the_evaluation(cli, tmp_path, registry, pushed, model_dir,  # noqa: F811
                                                                        monkeypatch, capsys):
    from builder.runs.attach import attached
    from builder.jobs.parts import PART_TYPE
    from builder.store import Store

    ref, _, _ = pushed
    res = cli("model", "build", "--no-load", "--skip-gen-env", model_dir)
    assert res.code == 0, res.err
    model_ref = f"{registry.address}/team/modthree:1"
    assert cli("model", "push", "modthree", model_ref).code == 0
    entry = Store().resolve("model", "modthree").path
    one_line_error(cli("model", "eval", "modthree", "--dataset", model_ref, "--shard", "0/2"),
                   "is a model image, not a dataset")
    # a merge before every part is there waits, then names the missing ones
    assert container(monkeypatch, entry, "eval", "--shard", "1/3", "--output", tmp_path / "pod" / "1",
                     "--dataset", ref, "--push-part", model_ref, "--job", "j1") == 0
    capsys.readouterr()
    assert container(monkeypatch, entry, "merge-registry", model_ref, "--job", "j1", "--dataset", ref, "--shards", "3",
                     "--output", tmp_path / "early", "--wait", "0.5") != 0
    err = capsys.readouterr().err
    assert "missing shard(s) 0, 2 of 3" in err and len(err.strip().splitlines()) == 1, err
    for index in (0, 2):
        code = container(monkeypatch, entry, "eval", "--shard", f"{index}/3", "--output", tmp_path / "pod" / str(index),
                         "--dataset", ref, "--push-part", model_ref, "--job", "j1", "--resume")
        assert code == 0, capsys.readouterr().err
    # a pod replaced after it pushed: one listing, no eval
    (tmp_path / "pod" / "1" / "results.jsonl").unlink()
    assert container(monkeypatch, entry, "eval", "--shard", "1/3", "--output", tmp_path / "pod" / "1", "--dataset", ref,
                     "--push-part", model_ref, "--job", "j1") == 0
    assert "already attached" in capsys.readouterr().out and not (tmp_path / "pod" / "1" / "results.jsonl").exists()
    # another job's part is not mixed in, nor a part of this job cut into another number of shards (not reused
    # either: the 0/2 pod evaluates)
    assert container(monkeypatch, entry, "eval", "--shard", "0/2", "--output", tmp_path / "other", "--dataset", ref,
                     "--push-part", model_ref, "--job", "j2") == 0
    assert container(monkeypatch, entry, "eval", "--shard", "0/2", "--output", tmp_path / "halves", "--dataset", ref,
                     "--push-part", model_ref, "--job", "j1") == 0
    assert (tmp_path / "halves" / "results.jsonl").is_file()
    code = container(monkeypatch, entry, "merge-registry", model_ref, "--job", "j1", "--dataset", ref, "--shards", "3",
                     "--output", tmp_path / "merge")
    assert code == 0, capsys.readouterr().err
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "single").code == 0
    for name in ("results.jsonl", "metrics.json"):
        assert (tmp_path / "merge" / "merged" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    rows = attached(model_ref)
    assert len(rows) == 1 and rows[0]["records"] == str(RECORDS)
    # the attached evaluation comes back with `eval pull`
    res = cli("eval", "pull", f"{model_ref.rsplit(':', 1)[0]}@{rows[0]['digest']}")
    assert res.code == 0, res.err
    listed = json.loads(registry.skopeo("inspect", "--raw", f"docker://{model_ref.rsplit(':', 1)[0]}:sha256-"
                                        + json.loads(registry.skopeo("inspect", f"docker://{model_ref}").stdout)
                                        ["Digest"].split(":")[1]).stdout)
    assert sum(m.get("artifactType") == PART_TYPE for m in listed["manifests"]) == 5  # 3 + 1 of j1, 1 of j2
    # the pod that pushed shard 1 first was replaced after its push: still one part per index, merged once

    # the next run of job j1, on a new dataset version re-pushed under the same tag: the old parts are not its own
    newer, _ = built(cli, project(tmp_path / "p2", RECORDS + 30))
    assert cli("dataset", "push", f"tiny:{newer.version}", ref).code == 0
    capsys.readouterr()
    assert container(monkeypatch, entry, "eval", "--shard", "1/3", "--output", tmp_path / "next" / "1", "--dataset",
                     ref, "--push-part", model_ref, "--job", "j1") == 0
    out = capsys.readouterr().out
    assert "already attached" not in out, out
    run = json.loads((tmp_path / "next" / "1" / "run.json").read_text())
    assert run["dataset"]["version"] == newer.version
    code = container(monkeypatch, entry, "merge-registry", model_ref, "--job", "j1", "--dataset", ref, "--shards", "3",
                     "--output", tmp_path / "next-merge", "--wait", "0.5")
    err = capsys.readouterr().err
    assert code != 0 and "missing shard(s) 0, 2 of 3" in err and f"tiny:{newer.version}" in err, err


def test_layers_unpack_with_the_standard_librarys_zlib_too(monkeypatch):
    """The model image may carry no ISA-L: the gunzip stream then runs on zlib, multi-member gzip included."""
    import gzip
    import importlib
    import io
    import sys

    import builder.evaluate.layer_unpack as rd

    monkeypatch.setitem(sys.modules, "isal", None)
    plain = importlib.reload(rd)
    try:
        assert plain._zlib.__name__ == "zlib"
        data = bytes(range(256)) * 5000
        stream = plain._Gunzipped(io.BytesIO(gzip.compress(data[:700_000]) + gzip.compress(data[700_000:])))
        out = b"".join(iter(lambda: stream.read(65536), b""))
        assert out == data
    finally:
        monkeypatch.undo()
        importlib.reload(rd)


@pytest.mark.docker
def test_the_model_image_reads_its_shard_from_the_registry(engine, cli, tmp_path, registry, tiny_runtime,  # noqa: F811
                                                            model_dir, monkeypatch):  # noqa: F811
    """`docker run MODEL eval --dataset REGISTRY/REPO:TAG --shard 1/3`: no mount, the same results as in-process."""
    monkeypatch.delenv("DOCKER_HOST") if ENGINE is None else monkeypatch.setenv("DOCKER_HOST", ENGINE)
    entry, _ = built(cli, project(tmp_path / "p", RECORDS))
    ref = f"{registry.address}/team/tiny:v1"
    assert cli("dataset", "push", f"tiny:{entry.version}", ref).code == 0
    res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    from builder.build.entry_image import image_for

    out = tmp_path / "out"
    out.mkdir()
    logs = run_removed(engine, image_for("model", "modthree"),
                       ["eval", "--dataset", ref, "--shard", "1/3", "--output", "/output"],
                       network_mode="host", user=f"{os.getuid()}:{os.getgid()}",
                       environment={"SWCLI_HOME": "/output/.swcli"},
                       volumes={str(out): {"bind": "/output", "mode": "rw"}})
    assert b"outputs: /output" in logs
    local = tmp_path / "local"
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", "1/3", "-o", local).code == 0
    assert (out / "results.jsonl").read_bytes() == (local / "results.jsonl").read_bytes()


def test_a_missing_path_is_reported_as_a_path_not_as_an_image_reference():
    from builder.evaluate.remote_dataset import is_registry_ref

    assert is_registry_ref("127.0.0.1:5000/team/tiny:v1") and is_registry_ref("registry.example/team/tiny")
    for path in ("./data.v2/cifar", "../x.y/z", "/srv/data.v2/cifar", "~/data.v2/cifar"):
        assert not is_registry_ref(path), path



def test_a_malformed_part_listing_is_one_line_not_a_traceback():
    from builder.errors import RegistryError
    from builder.distribute.artifact import TITLE
    from builder.runs.attach_pull import artifact_layers
    from builder.jobs.parts import PART_FILES, PART_TYPE

    good = {"mediaType": "application/json", "digest": "sha256:" + "a" * 64, "size": 3}
    for manifest, says in (
            ({"artifactType": PART_TYPE, "layers": "x"}, "field 'layers': must be an array, not str"),
            ({"artifactType": PART_TYPE, "layers": ["x"]}, r"layers\[0\]: a descriptor must be an object"),
            ({"artifactType": PART_TYPE, "layers": [{**good, "annotations": {TITLE: "run.json"}}] * 2}, "repeated"),
            ({"artifactType": PART_TYPE, "layers": [{"mediaType": "x", "annotations": {TITLE: "run.json"}}]},
             "digest: None is not a sha256 digest"),
            ({"artifactType": PART_TYPE, "layers": [{**good, "annotations": {TITLE: "run.json"}}]},
             "no results.jsonl layer; not a complete shard part"),
            ({"artifactType": "other", "layers": []}, "is not a swcli shard part")):
        with pytest.raises(RegistryError, match=says):
            artifact_layers(manifest, "r/x@sha256:1", artifact_type=PART_TYPE, files=PART_FILES,
                            required=tuple(PART_FILES), kind="shard part", error=RegistryError)


def _layer_blob(path, files: dict[str, bytes], trailing: int = 0):
    """A gzip layer like the dataset writer's (``dataset/<name>`` entries), with ``trailing`` zero bytes after the
    tar's end inside the gzip stream."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"dataset/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue() + bytes(trailing)))
    return path


def test_a_layer_with_megabytes_of_zeros_after_its_tar_is_refused(tmp_path):
    """A few KiB of gzip can unpack to gigabytes of zeros after the tar's end: hashed, never written, but bounded."""
    from builder.errors import RegistryError
    from builder.evaluate import layer_unpack as rd

    ok = _layer_blob(tmp_path / "ok.gz", {"a.swds": b"x" * 100}, trailing=4096)
    (tmp_path / "ok").mkdir()
    assert rd._unpack(ok, True, tmp_path / "ok", {"a.swds": 100}, "layer ok", False).startswith("sha256:")
    bomb = _layer_blob(tmp_path / "bomb.gz", {"a.swds": b"x" * 100}, trailing=rd.TRAILING_MAX + 1)
    assert bomb.stat().st_size < 16 << 10
    (tmp_path / "bomb").mkdir()
    with pytest.raises(RegistryError, match="bytes after the end of its tar") as err:
        rd._unpack(bomb, True, tmp_path / "bomb", {"a.swds": 100}, "layer sha256:b", False)
    assert "\n" not in str(err.value)


def test_an_entry_bigger_than_the_free_disk_is_refused_before_it_is_written(tmp_path, monkeypatch):
    import shutil as sh

    from builder.errors import RegistryError
    from builder.evaluate import layer_unpack as rd

    blob = _layer_blob(tmp_path / "l.gz", {"a.swds": b"x" * 5000})
    (tmp_path / "out").mkdir()
    real = sh.disk_usage
    monkeypatch.setattr(rd.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=rd.DISK_SPARE + 4999))  # one byte short
    with pytest.raises(RegistryError, match=r"a.swds is 5000 bytes; .* has 4999 free") as err:
        rd._unpack(blob, True, tmp_path / "out", {"a.swds": 5000}, "layer sha256:c", False)
    assert "\n" not in str(err.value) and not (tmp_path / "out" / "a.swds").exists()
