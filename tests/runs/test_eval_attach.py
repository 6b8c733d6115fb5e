"""`swcli eval attach | list --image | pull` against Debian's docker-registry (2.8: no referrers API, so the
`sha256-<hex>` fallback index), with no Docker engine at all.

The model image is written by `swcli model build --no-load` on a one-layer stand-in runtime image written straight
into the store's layout, and put in the registry by skopeo from that layout (its config, hence its image id, kept).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest

from builder.images.image import read_image
from builder.store import Store
from tests.helpers.attach_world import REPO, RUNTIME, attached_digest, model_image, push_model
from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.models import HANDLER, MODEL_YAML


def test_run_json_names_the_image_it_evaluated(world, tmp_path):
    image_id = read_image(Store().layout, model_image(world['v1'])).image_id
    run = json.loads((Store().runs_dir / world["runs"][0] / "run.json").read_text())
    assert run["model"]["image"] == image_id
    # the model image's python has no jinja2 (the image builder's): finding the image id must not need it
    code = ("import sys; sys.modules['jinja2'] = None; from builder.cli import main; "
            f"sys.exit(main(['model', 'eval', 'modthree:{world['v1']}', '--dataset', 'tiny', '-o', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["model"]["image"] == image_id


def test_attach_list_pull_and_gate_on_a_fresh_machine(cli, world, swcli_home, monkeypatch, tmp_path):
    registry, image = world["registry"], world["image"]
    first = attached_digest(cli("eval", "attach", world["runs"][0], image))
    second = attached_digest(cli("eval", "attach", world["runs"][1], image))
    assert first != second
    assert attached_digest(cli("eval", "attach", world["runs"][0], image)) == first  # the same run: the same artifact

    listed = cli("eval", "list", "--image", image, "-o", "json")
    assert listed.code == 0, listed.err
    rows = json.loads(listed.out)
    assert sorted(r["digest"] for r in rows) == sorted([first, second])
    assert {r["run"] for r in rows} == set(world["runs"])
    assert all(r["dataset"] == "tiny" and r["metrics"]["accuracy"] == 1.0 and r["created"] for r in rows)
    table = cli("eval", "list", "--image", f"{registry.address}/{REPO}@{world['digest']}")
    assert table.code == 0 and first in table.out and world["runs"][1] in table.out

    # the registry has no referrers API: the spec's fallback index, tagged sha256-<hex of the model manifest>
    fallback = registry.skopeo("inspect", "--raw", f"docker://{registry.address}/{REPO}:sha256-{world['digest'][7:]}")
    assert fallback.returncode == 0, fallback.stderr
    index = json.loads(fallback.stdout)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert sorted(m["digest"] for m in index["manifests"]) == sorted([first, second])
    assert {m["artifactType"] for m in index["manifests"]} == {"application/vnd.swcli.evaluation.v1+json"}
    artifact = json.loads(registry.skopeo("inspect", "--raw", f"docker://{registry.address}/{REPO}@{first}").stdout)
    assert artifact["subject"]["digest"] == world["digest"]
    assert artifact["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert sorted(layer["annotations"]["org.opencontainers.image.title"] for layer in artifact["layers"]) == [
        "metrics.json", "report.html", "results.jsonl", "run.json"]

    # another machine: a fresh store, only the registry in common
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "ci-home"))
    got = cli("eval", "pull", f"{registry.address}/{REPO}@{first}")
    assert got.code == 0 and "pulled run" in got.out, got.err
    assert cli("eval", "pull", f"{registry.address}/{REPO}@{first}").out.startswith("already in the history")
    by_run = cli("eval", "pull", image, "--run", world["runs"][1])
    assert by_run.code == 0 and "pulled run" in by_run.out, by_run.err
    history = json.loads(cli("eval", "list", "-o", "json").out)
    assert sorted(r["id"] for r in history) == sorted(world["runs"])
    shown = cli("eval", "show", world["runs"][0], "--fail-under", "accuracy=0.99", "--fail-under", "macro-f1=0.99")
    assert shown.code == 0 and "gates passed" in shown.out, shown.err
    failed = cli("eval", "show", world["runs"][0], "--fail-under", "accuracy=1.01")
    assert failed.code == 2 and "below the bound" in failed.err
    assert cli("eval", "diff", *world["runs"]).code == 0
    assert cli("eval", "report", world["runs"][1], "-o", tmp_path / "r.html").code == 0
    assert not list((tmp_path / "ci-home" / "runs").glob(".*"))  # no staging folder left

    # on the machine that made the runs, pulling finds the run itself
    monkeypatch.setenv("SWCLI_HOME", str(swcli_home))
    again = cli("eval", "pull", f"{registry.address}/{REPO}@{second}")
    assert again.out.startswith(f"already in the history: run {world['runs'][1]}"), again.out + again.err


def test_attach_refuses_a_run_of_another_model(cli, world):
    res = cli("eval", "attach", world["other"], world["image"])
    other_image = read_image(Store().layout, model_image(world['v2'])).image_id
    pushed_image = read_image(Store().layout, model_image(world['v1'])).image_id
    assert res.code == 1 and other_image in res.err and pushed_image in res.err, res.err
    assert len(res.err.strip().splitlines()) == 1

    # a run that recorded no image (made inside the model image) is compared by model version
    run_json = Store().runs_dir / world["other"] / "run.json"
    run = json.loads(run_json.read_text())
    del run["model"]["image"]
    run_json.write_text(json.dumps(run))
    res = cli("eval", "attach", world["other"], world["image"])
    assert res.code == 1 and world["v1"] in res.err and world["v2"] in res.err, res.err
    run["model"]["version"] = world["v1"]
    run_json.write_text(json.dumps(run))
    assert cli("eval", "attach", world["other"], world["image"]).code == 0  # same version: the same model


def test_attach_refuses_incomplete_runs_and_non_models(cli, world):
    run_dir = Store().runs_dir / world["runs"][0]
    run_json = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**run_json, "status": "failed"}))
    res = cli("eval", "attach", world["runs"][0], world["image"])
    assert res.code == 1 and "failed" in res.err
    (run_dir / "run.json").write_text(json.dumps(run_json))
    (run_dir / "metrics.json").unlink()
    res = cli("eval", "attach", world["runs"][0], world["image"])
    assert res.code == 1 and "metrics.json" in res.err
    registry = world["registry"]
    runtime = registry.skopeo("copy", f"oci:{Store().layout.root}:{RUNTIME}", f"docker://{registry.address}/team/rt:1")
    assert runtime.returncode == 0, runtime.stderr
    res = cli("eval", "attach", world["runs"][1], f"{registry.address}/team/rt:1")
    assert res.code == 1 and "not a swcli model image" in res.err
    res = cli("eval", "list", "--image", f"{registry.address}/{REPO}:v1")
    assert res.code == 0 and world["runs"][1] not in res.out  # nothing was attached


def test_registry_failures_exit_5(cli, world):
    registry = world["registry"]
    assert cli("eval", "attach", world["runs"][0], f"{registry.address}/{REPO}:nope").code == 5
    assert cli("eval", "list", "--image", f"{registry.address}/{REPO}:nope").code == 5
    registry.stop()
    for args in (("attach", world["runs"][0], world["image"]), ("list", "--image", world["image"]),
                 ("pull", world["image"], "--run", world["runs"][0])):
        res = cli("eval", *args)
        assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err


def _artifact(client, layers: list[tuple[str, bytes]], subject: dict) -> str:
    """Push a hand-made evaluation artifact (layers as (title, bytes)); returns its digest."""
    from builder.images.oci import canonical_json
    from builder.distribute.artifact import EMPTY, EMPTY_DESCRIPTOR
    from builder.runs.attach import ARTIFACT_TYPE

    client.upload_blob(REPO, EMPTY_DESCRIPTOR["digest"], len(EMPTY), lambda: io.BytesIO(EMPTY))
    descs = []
    for title, data in layers:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.upload_blob(REPO, digest, len(data), lambda data=data: io.BytesIO(data))
        descs.append({"mediaType": "application/json", "digest": digest, "size": len(data),
                      "annotations": {"org.opencontainers.image.title": title}})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": ARTIFACT_TYPE, "config": EMPTY_DESCRIPTOR, "layers": descs, "subject": subject}
    return client.put_referrer(REPO, canonical_json(manifest))


@pytest.mark.parametrize("case", ["path title", "duplicate", "missing results", "bad metrics", "bad results line"])
def test_pull_refuses_hostile_artifacts_and_leaves_nothing(cli, world, monkeypatch, tmp_path, case):
    from builder.registry.client import RegistryClient

    registry = world["registry"]
    run_dir = Store().runs_dir / world["runs"][0]
    files = {name: (run_dir / name).read_bytes() for name in ("metrics.json", "run.json", "results.jsonl")}
    layers = list(files.items())
    if case == "path title":
        layers[2] = ("../results.jsonl", files["results.jsonl"])
    elif case == "duplicate":
        layers.append(("run.json", files["run.json"]))
    elif case == "missing results":
        layers.pop()
    elif case == "bad metrics":
        layers[0] = ("metrics.json", b'{"summary": {"accuracy": "high"}}')
    else:
        layers[2] = ("results.jsonl", b'{"index": "zero"}\n')
    client = RegistryClient(registry.address)
    subject = client.manifest_descriptor(REPO, "v1")
    digest = _artifact(client, layers, subject)
    home = tmp_path / "other-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    res = cli("eval", "pull", f"{registry.address}/{REPO}@{digest}")
    why = {"path title": "'../results.jsonl' is not one of", "duplicate": "'run.json' is not one of",
           "missing results": "no results.jsonl layer", "bad metrics": "field 'summary.accuracy'",
           "bad results line": "results.jsonl:1: field 'index'"}[case]
    assert res.code == 1 and why in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert f"{REPO}@{digest}" in res.err  # the artifact is named, not a staging folder
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_pull_refuses_an_artifact_listed_under_another_image(cli, world, monkeypatch, tmp_path):
    """The fallback index is an ordinary tag anyone with push rights writes: what it lists is checked."""
    from builder.registry.client import RegistryClient

    registry = world["registry"]
    first = attached_digest(cli("eval", "attach", world["runs"][0], world["image"]))
    v2 = push_model(registry, world["v2"], "v2")
    client = RegistryClient(registry.address)
    listed = client.referrers(REPO, world["digest"])
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": listed}
    client.put_manifest(REPO, f"sha256-{v2[7:]}", json.dumps(index).encode(), index["mediaType"])
    assert [r["digest"] for r in json.loads(cli("eval", "list", "--image", f"{registry.address}/{REPO}:v2",
                                                "-o", "json").out)] == [first]
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "other-home"))
    res = cli("eval", "pull", f"{registry.address}/{REPO}:v2", "--run", world["runs"][0])
    assert res.code == 1 and f"but its subject is {world['digest']}" in res.err, res.err


def test_the_merge_pod_attaches_without_a_report_where_there_is_no_jinja2(cli, tmp_path, monkeypatch):
    """The model image has no jinja2: its merge attaches the run without report.html; `eval attach` (where a
    report is owed) still fails loudly."""
    from builder.runs.attach import _run_files
    from builder.runs.history import load_run

    assert cli("dataset", "build", write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * 12, i % 3) for i in range(9)]),
               "--no-image").code == 0
    model = tmp_path / "m"
    (model / "code").mkdir(parents=True)
    (model / "code" / "__init__.py").write_text("")
    (model / "code" / "ppl.py").write_text(HANDLER)
    (model / "models").mkdir()
    (model / "models" / "weights.json").write_text('{"offset": 0}')
    (model / "model.yaml").write_text(MODEL_YAML)
    assert cli("model", "eval", model, "--dataset", "tiny", "-o", tmp_path / "run").code == 0
    run = load_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as in the model image
    files = _run_files(run, tmp_path, report_optional=True)
    assert list(files) == ["metrics.json", "run.json", "results.jsonl"]
    with pytest.raises(ImportError):
        _run_files(run, tmp_path)
