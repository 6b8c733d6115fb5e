"""A console job in containers against the real engine (the `docker` marker): `POST /api/jobs {"where":
"containers", "shards": 2}` runs `swcli job run ... --shards 2`, its progress counts every record once (the parts'
results under ``parts/<i>/`` and not the merged ones again), and its run in the history has the metrics of the
same evaluation run in-process (where=local)."""

from __future__ import annotations

import pytest

from tests.helpers.console_server import running_console
from tests.helpers.models import HANDLER, write_model

pytestmark = pytest.mark.docker


def test_a_sharded_container_job_is_the_cli_command_and_scores_as_a_local_one(engine, cli, tiny_dataset,
                                                                             tiny_runtime, tmp_path):
    assert cli("dataset", "build", tiny_dataset).code == 0  # 50 records, its image loaded into the engine
    res = cli("model", "build", write_model(tmp_path / "model", HANDLER), "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    with running_console() as console:
        status, answer = console.json("POST", "/api/jobs", {"model": "modthree", "dataset": "tiny",
                                                            "where": "containers", "shards": 2})
        assert status == 200, answer
        assert answer["command"].startswith("swcli job run --model modthree --dataset tiny --output ")
        assert answer["command"].endswith(" --shards 2")
        job = console.wait_job(answer["id"], timeout=300)
        assert job["status"] == "succeeded", job["log"]
        progress = job["progress"]
        status, local = console.json("POST", "/api/jobs", {"model": "modthree", "dataset": "tiny", "where": "local"})
        assert status == 200, local
        local = console.wait_job(local["id"])
        assert local["status"] == "succeeded", local["log"]
        status, runs = console.json("GET", "/api/runs")
        assert {r["id"] for r in runs["runs"]} == {job["run"], local["run"]}
        status, run = console.json("GET", f"/api/runs/{job['run']}")
        assert status == 200 and run["status"] == "succeeded"
        status, other = console.json("GET", f"/api/runs/{local['run']}")
        assert run["summary"] == other["summary"] and run["labels"] == other["labels"]
        assert run["metrics"] == other["metrics"] and run["metrics"]["accuracy"] == pytest.approx(1.0)
        status, page = console.json("GET", f"/api/runs/{job['run']}/records?limit=500")
        assert status == 200 and page["total"] == 50
    assert progress["total"] == 50, progress
    assert progress["done"] == progress["total"], progress
