"""`POST /api/k8s` of a real console: the manifests `swcli job k8s` writes for the same store refs (a PVC, an
Indexed Job, the merge Job), the `kubectl apply` line, the images they name, and one-line refusals of what
Kubernetes or the console would refuse."""

from __future__ import annotations

import pytest
import yaml

from builder.store import Store
from tests.helpers.attach_world import build_model, model_image, stand_in_runtime
from tests.helpers.console_server import running_console
from tests.helpers.datasets import write_tiny_dataset


@pytest.fixture()
def refs(cli, no_engine, tmp_path):
    """Dataset tiny and model modthree, both with images in the store's layout (no engine: `--no-load`)."""
    stand_in_runtime()
    data = write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3) for i in range(20)], files=2)
    res = cli("dataset", "build", data, "--no-load")
    assert res.code == 0, res.err
    version = build_model(cli, tmp_path / "m", 0)
    return {"model": f"modthree:{version}", "dataset": "tiny", "version": version}


def _one_line_400(console, body: object) -> str:
    status, answer = console.json("POST", "/api/k8s", body)
    assert status == 400, answer
    assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    return answer["error"]


def test_the_manifests_are_those_of_job_k8s(cli, refs, tmp_path):
    with running_console() as console:
        status, got = console.json("POST", "/api/k8s", {"model": refs["model"], "dataset": refs["dataset"],
                                                        "shards": 3})
        assert status == 200, got
        named = console.json("POST", "/api/k8s", {"model": "modthree", "dataset": "tiny", "shards": 3,
                                                   "namespace": "ml-team"})[1]
    docs = list(yaml.safe_load_all(got["yaml"]))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Job", "Job"]
    pvc, job, merge = docs
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    assert merge["spec"]["template"]["spec"]["containers"][0]["args"][0] == "merge"
    assert got["images"] == {"model": model_image(refs["version"]),
                             "dataset": f"swds/tiny:{Store().resolve('dataset', 'tiny').version}"}
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == got["images"]["model"]
    assert got["apply"] == f"kubectl apply -f {got['file']}"

    out = tmp_path / "job.yaml"
    res = cli("job", "k8s", "--model", refs["model"], "--dataset", refs["dataset"], "--shards", "3", "-o", out)
    assert res.code == 0, res.err
    assert got["yaml"] == out.read_text()
    assert list(yaml.safe_load_all(out.read_text())) == docs
    res = cli("job", "k8s", "--model", "modthree", "--dataset", "tiny", "--shards", "3", "--namespace", "ml-team")
    assert res.code == 0 and named["yaml"] == res.out
    assert {d["metadata"]["namespace"] for d in yaml.safe_load_all(named["yaml"])} == {"ml-team"}

    # images only in this machine's store: a cluster cannot pull them
    assert got["warnings"] and any(got["images"]["model"] in w for w in got["warnings"]), got["warnings"]


def test_images_already_in_a_registry_are_taken_as_they_are(refs):
    model, dataset = "registry.example:5000/team/modthree:v1", "registry.example:5000/team/tiny:v1"
    with running_console() as console:
        status, got = console.json("POST", "/api/k8s", {"model": model, "dataset": dataset, "shards": 2})
    assert status == 200, got
    assert got["images"] == {"model": model, "dataset": dataset}
    assert not any("registry.example" in w for w in got["warnings"]), got["warnings"]


def test_hostile_or_wrong_requests_are_one_line_400s(refs):
    base = {"model": refs["model"], "dataset": "tiny"}
    with running_console() as console:
        # the request's own field names, not the CLI's flags; a value is quoted (the string "3" is not 3), bounded
        assert _one_line_400(console, {**base, "namespace": "Bad_NS"}).startswith('namespace: "Bad_NS" is not')
        for bad in (0, 1000, "3", 2.5, True, -1, [3]):
            assert _one_line_400(console, {**base, "shards": bad}).startswith("shards: "), bad
        assert _one_line_400(console, {**base, "shards": "3"}).endswith('got "3"')
        assert "unknown field 'cpu'" in _one_line_400(console, {**base, "cpu": "2"})
        for bad in (5, ["ml"], {"a": 1}, "x" * 64, "x" * 60_000, "ml\nteam", "-ml", "kube_system"):
            error = _one_line_400(console, {**base, "namespace": bad})
            assert error.startswith("namespace: ") and len(error) < 300, (bad, error)
        for field, bad in (("model", "../m"), ("model", "--help"), ("dataset", "/etc/passwd"), ("dataset", ""),
                           ("model", 7)):
            assert field in _one_line_400(console, {**base, field: bad}), (field, bad)
        _one_line_400(console, ["model"])
        status, answer = console.json("POST", "/api/k8s", {**base, "model": "nosuchmodel"})
        assert status == 404 and "nosuchmodel" in answer["error"] and "\n" not in answer["error"]
