"""Against the real Docker engine: dataset, runtime and model images, `eval` in a container, layer reuse.

The `docker` marker: an engine that answers a ping and holds the base image (`make base-image`).
Every image and container made here is removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from builder.store import Store
from tests.helpers.engine import run_removed

pytestmark = pytest.mark.docker


def test_dataset_and_model_images_eval_in_a_container_like_in_process(engine, cli, project, tiny_runtime, tmp_path):
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir).code == 0
    res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    local = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "local")
    assert local.code == 0
    ds = Store().resolve("dataset", "tiny")
    labels = engine.images.get(f"swds/tiny:{ds.version}").labels
    assert labels["io.swcli.kind"] == "dataset" and labels["io.swcli.version"] == ds.version
    res = cli("job", "run", "--model", "modthree", "--dataset", "tiny", "-o", tmp_path / "container")
    assert res.code == 0, res.err
    for name in ("metrics.json", "results.jsonl"):
        assert (tmp_path / "container" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    run = json.loads((tmp_path / "container" / "run.json").read_text())
    assert run["status"] == "succeeded" and run["records"]["ok"] == 50 and run["runtime"] == tiny_runtime
    assert [r["path"] for r in json.loads(cli("eval", "list", "-o", "json").out)].count(str((tmp_path / "container").resolve())) == 1


def test_model_image_entrypoint_help_info_and_errors(engine, cli, project, tiny_runtime, tmp_path):
    model_dir, _ = project
    cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime)
    image = "swmp/modthree:latest"
    help_text = run_removed(engine, image, ["--help"])
    assert b"Usage: docker run IMAGE" in help_text and b"eval" in help_text and b"merge" in help_text
    bad = engine.containers.run(image, ["eval", "--batch-size", "x"], detach=True)  # the same one-line usage errors
    try:
        assert bad.wait()["StatusCode"] == 2
        err = bad.logs(stdout=False, stderr=True).decode()
        assert err.startswith("swcli: error: ") and "--batch-size" in err and len(err.strip().splitlines()) == 1, err
    finally:
        bad.remove(v=True, force=True)
    info = json.loads(run_removed(engine, image, ["info"]))
    assert info["name"] == "modthree"
    container = engine.containers.run(image, detach=True)  # default command eval, nothing mounted
    try:
        assert container.wait()["StatusCode"] == 1
        assert b"no dataset mounted at /dataset" in container.logs()
    finally:
        container.remove(v=True, force=True)
    user = engine.images.get(image).attrs["Config"]["User"]
    assert user == "1000:1000"
    # cmp's scoring helper works inside the image (a broken one would only show as a silent in-process fallback)
    probe = ("from builder.evaluate.runner.metric_worker import MetricWorker; w = MetricWorker(['sklearn.metrics']); "
             "doc = w.compute([0, 1, 1], [0, 1, 0], None, {'show_roc_auc': False, 'all_labels': [0, 1]}); w.close(); "
             "print(doc['summary']['accuracy'])")
    assert run_removed(engine, image, ["-c", probe], entrypoint=["python3"]).strip() == b"0.6666666666666666"


def test_code_only_change_reuses_runtime_and_weights_layers(engine, cli, project, tiny_runtime):
    model_dir, _ = project
    cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime)
    first = engine.images.get("swmp/modthree:latest").attrs["RootFS"]["Layers"]
    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# a code-only change\n")
    started = time.perf_counter()
    res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime)
    rebuild = time.perf_counter() - started
    assert res.code == 0, res.err
    second = engine.images.get("swmp/modthree:latest").attrs["RootFS"]["Layers"]
    runtime_layers = engine.images.get(tiny_runtime).attrs["RootFS"]["Layers"]
    n = len(runtime_layers)
    assert first[:n] == second[:n] == runtime_layers  # base, env and swcli layers: the same digests
    assert first[n] == second[n]  # the weights layer
    assert first[n + 1] != second[n + 1]  # the code layer changed
    print(f"code-only model rebuild: {rebuild:.2f} s")
    assert rebuild < 10  # the target is < 3 s (benchmarks/image_build.py measures it); this only guards regressions


@pytest.mark.skopeo
def test_saved_image_passes_skopeo(engine, cli, project, tmp_path):
    _, data_dir = project
    cli("dataset", "build", data_dir)
    from builder.images.engine import save_image

    archive = save_image(engine, "swds/tiny:latest", tmp_path / "tiny.tar")
    out = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["Labels"]["io.swcli.kind"] == "dataset" and len(doc["Layers"]) >= 2


def test_missing_base_image_and_no_daemon_are_one_line_errors(engine, cli, project, monkeypatch):
    _, data_dir = project
    res = cli("dataset", "build", data_dir, "--base-image", "nope/base:missing")
    assert res.code == 4 and "--base-image nope/base:missing is neither in the store nor in the local engine" in res.err
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    res = cli("dataset", "build", data_dir)
    assert res.code == 4 and "no Docker engine answers" in res.err and "--no-image" in res.err
    assert len(res.err.strip().splitlines()) == 1
    assert Store().resolve("dataset", "tiny")  # the package was built and kept
    # once the base is in the store's layout, --no-load needs no engine at all
    monkeypatch.delenv("DOCKER_HOST")
    assert cli("dataset", "build", data_dir, "--no-load").code == 0
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    (data_dir / "dataset.yaml").write_text((data_dir / "dataset.yaml").read_text().replace("tiny test dataset", "changed"))
    res = cli("dataset", "build", data_dir, "--no-load")
    assert res.code == 0 and "not loaded (--no-load)" in res.out, res.err
    res = cli("dataset", "build", data_dir)
    assert res.code == 4 and "no Docker engine answers" in res.err and len(res.err.strip().splitlines()) == 1


def test_dataset_export_round_trips_through_the_image(engine, cli, project, tmp_path):
    from builder.volumes import DatasetReader

    _, data_dir = project
    assert cli("dataset", "build", data_dir).code == 0
    target = tmp_path / "exported"
    res = cli("dataset", "export", "tiny", target)
    assert res.code == 0, res.err
    original = Store().resolve("dataset", "tiny")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in original.path.iterdir())
    with DatasetReader(target) as a, DatasetReader(original.path) as b:
        assert list(a) == list(b)
    assert cli("dataset", "info", str(target), "--verify").code == 0
    res = cli("dataset", "export", "tiny", target)
    assert res.code == 1 and "is not empty" in res.err


@pytest.mark.slow
def test_model_without_runtime_gets_one_from_pip_req(engine, cli, project, tmp_path):
    model_dir, data_dir = project
    (model_dir / "requirements.txt").write_text("six\n")
    (model_dir / "model.yaml").write_text((model_dir / "model.yaml").read_text() + "pip_req: requirements.txt\n")
    res = cli("model", "build", model_dir, "--skip-gen-env")
    assert res.code == 0, res.err
    assert "on swrt/modthree-env:" in res.out
    assert "building runtime modthree-env for model modthree (from its pip_req)...\n" in res.err  # the implicit build, named
    runtime = Store().resolve("runtime", "modthree-env")
    assert runtime.manifest["mode"] == "venv" and "six==" in (runtime.path / "env.lock").read_text()
    out = run_removed(engine, "swmp/modthree:latest", ["-c", "import six, builder; print(six.__name__)"],
                      entrypoint=["python3"])
    assert out.strip() == b"six"
    assert cli("dataset", "build", data_dir).code == 0
    assert cli("job", "run", "--model", "modthree", "--dataset", "tiny", "-o", tmp_path / "out").code == 0


def test_unknown_runtime_ref_is_one_line(engine, cli, project):
    model_dir, _ = project
    res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", "nosuchruntime")
    assert res.code == 1 and "no runtime matches 'nosuchruntime'" in res.err and res.err.count("\n") == 1
    assert Store().list("model") == []  # refused before the snapshot: a typo costs no build and leaves no entry


def test_interrupted_build_leaves_no_tag_and_no_temp_files(engine, cli, project, tmp_path, monkeypatch):
    """Ctrl-C while a layer is being written: no tag in the engine or the store's layout, no temp blob left."""
    import builder.images.layers as layers_module
    from builder.images.build import build_dataset_image

    _, data_dir = project
    assert cli("dataset", "build", "--no-image", data_dir).code == 0
    entry = Store().resolve("dataset", "tiny")
    for tag in [t for image in engine.images.list() for t in image.tags if t.startswith("swds/tiny:")]:
        engine.images.remove(tag, force=True)  # earlier tests built the same content version
    real_write = layers_module.write_tar

    def ctrl_c_halfway(entries, fileobj):
        fileobj.write(b"\0" * 1024)  # some bytes are in the temp blob already
        raise KeyboardInterrupt

    monkeypatch.setattr(layers_module, "write_tar", ctrl_c_halfway)
    with pytest.raises(KeyboardInterrupt):
        build_dataset_image(entry, client=engine)
    layout = Store().layout
    assert not [t for image in engine.images.list() for t in image.tags if t.startswith("swds/tiny:")]
    assert not [ref for ref in layout.refs() if ref.startswith("swds/tiny:")]
    assert not list(layout.blobs.glob(".tmp-*"))
    monkeypatch.setattr(layers_module, "write_tar", real_write)
    assert build_dataset_image(entry, client=engine).image_id == engine.images.get("swds/tiny:latest").id


@pytest.mark.parametrize("count", [3])
def test_indexed_job_simulation_equals_a_single_run(engine, cli, project, tiny_runtime, tmp_path, count):
    """`job run --shards N`: the merge container starts first and waits, N model-image containers run at once,
    each with its JOB_COMPLETION_INDEX, and the merged metrics are a single run's, byte for byte."""
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir).code == 0
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "single").code == 0
    out = tmp_path / "out"
    res = cli("job", "run", "--model", "modthree", "--dataset", "tiny", "--shards", count, "-o", out)
    assert res.code == 0, res.err
    for index in range(count):
        part = json.loads((out / "parts" / str(index) / "run.json").read_text())
        assert part["status"] == "partial" and part["shard"]["index"] == index and part["shard"]["count"] == count
    # (whether the merge finds the parts already written depends on timing; its waiting is tested in test_sharding)
    assert (out / "metrics.json").read_bytes() == (tmp_path / "single" / "metrics.json").read_bytes()
    assert (out / "results.jsonl").read_bytes() == (tmp_path / "single" / "results.jsonl").read_bytes()
    assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
    assert engine.containers.list(all=True, filters={"ancestor": "swmp/modthree:latest"}) == []  # all removed
