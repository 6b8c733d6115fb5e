"""Jobs from the console against a real server process: the run they make is the CLI's, progress streams, cancel
stops the process, and the records, thumbnails, compare and gate APIs read what the job wrote."""

from __future__ import annotations

import http.client
import io
import json
import time

import pytest

from tests.helpers.console_server import LABEL_NAMES, console_world, running_console


@pytest.fixture()
def world(cli, tmp_path):
    return console_world(cli, tmp_path)


def _run_job(console, model: str, dataset: str = "tiny", **extra) -> dict:
    status, answer = console.json("POST", "/api/jobs", {"model": model, "dataset": dataset, **extra})
    assert status == 200, answer
    return console.wait_job(answer["id"])


def test_a_job_is_the_cli_command_and_its_run_is_in_the_history(cli, world, tmp_path):
    with running_console() as console:
        job = _run_job(console, world["model0"])
        assert job["status"] == "succeeded", job["log"]
        assert job["command"].startswith(f"swcli model eval {world['model0']} --dataset tiny --output ")
        assert job["progress"]["done"] == job["progress"]["total"] == 300
        status, runs = console.json("GET", "/api/runs")
        assert [r["id"] for r in runs["runs"]] == [job["run"]]
        status, run = console.json("GET", f"/api/runs/{job['run']}")
        assert status == 200 and run["status"] == "succeeded"
    # the same command in a terminal gives the same metrics
    res = cli("model", "eval", world["model0"], "--dataset", "tiny", "-o", tmp_path / "cli-out")
    assert res.code == 0, res.err
    cli_metrics = json.loads((tmp_path / "cli-out" / "metrics.json").read_text())
    assert run["metrics"]["accuracy"] == pytest.approx(cli_metrics["summary"]["accuracy"])
    assert run["metrics"]["accuracy"] == pytest.approx(len([i for i in range(300) if i % 5 and i % 7]) / 300)
    res = cli("eval", "list", "-o", "json")
    assert job["run"] in res.out


def test_progress_streams_at_least_twice_a_second_and_cancel_stops_the_job(world, monkeypatch, swcli_home):
    monkeypatch.setenv("PPL_SLEEP", "0.02")  # 300 records: ~6 s
    with running_console() as console:
        status, answer = console.json("POST", "/api/jobs", {"model": world["model0"], "dataset": "tiny"})
        job_id = answer["id"]
        # read events for ~2 s of a running job: at least 2 per second, done counts rising
        hostname, port = console.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(hostname, int(port), timeout=30)
        conn.request("GET", f"/api/jobs/{job_id}/events", headers={"Authorization": f"Bearer {console.token}"})
        res = conn.getresponse()
        assert res.getheader("content-type").startswith("text/event-stream")
        events, counting = [], None  # (arrival, event); counting: when done first moved
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (counting is None or time.monotonic() - counting < 2.0):
            line = res.fp.readline()
            if line.startswith(b"data: "):
                events.append((time.monotonic(), json.loads(line[6:])))
                if counting is None and events[-1][1]["progress"]["done"] > 0:
                    counting = events[-1][0]
        conn.close()
        moving = [(t, e) for t, e in events if t >= counting and e["status"] == "running"]
        assert len(moving) >= 2 * (moving[-1][0] - moving[0][0]) >= 3, [(round(t, 2), e["status"], e["progress"]["done"]) for t, e in events]
        dones = [e["progress"]["done"] for _, e in moving]
        assert dones == sorted(dones) and dones[-1] > dones[0]
        last = moving[-1][1]["progress"]
        assert last["total"] == 300 and last["rate"] and last["eta"] is not None
        status, answer = console.json("POST", f"/api/jobs/{job_id}/cancel")
        assert status == 200
        job = console.wait_job(job_id, timeout=30)
        assert job["status"] == "cancelled" and job["exit_code"] == 130  # the CLI's Ctrl-C
        assert 0 < job["progress"]["done"] < 300
    folder = swcli_home / "runs" / job["command"].split("/runs/", 1)[1].split()[0]
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "interrupted", run
    assert (folder / "results.jsonl.partial").read_bytes().count(b"\n") >= job["progress"]["done"]


def test_a_failing_job_says_why_in_one_line(world):
    with running_console() as console:
        job = _run_job(console, "nosuchmodel")
        assert job["status"] == "failed" and job["exit_code"] != 0
        assert job["error"].startswith("swcli: error:") and "nosuchmodel" in job["error"]


def test_records_thumbnails_compare_and_gate_read_the_jobs_runs(world):
    from PIL import Image

    with running_console() as console:
        a, b = (_run_job(console, world[m]) for m in ("model0", "model2"))
        status, page = console.json("GET", f"/api/runs/{a['run']}/records?correct=wrong&limit=500")
        wrong = [i for i in range(300) if i % 5 == 0 or i % 7 == 0]
        assert status == 200 and page["total"] == len(wrong)
        assert page["label_names"]["2"] == LABEL_NAMES[2]
        status, cell = console.json("GET", f"/api/runs/{a['run']}/records?true=0&pred=1")
        assert cell["total"] == len([i for i in range(0, 300, 3) if i % 5 == 0]) and all(r["label"] == "0" and r["pred"] == "1" for r in cell["rows"])
        status, headers, png = console.request("GET", page["rows"][0]["thumb"])
        assert status == 200 and headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.size[0] >= 32
        status, cmp = console.json("GET", f"/api/compare?runs={a['run']}&runs={b['run']}")
        assert status == 200
        flips = cmp["flipped"][b["run"]]
        assert flips["right_to_wrong"] > 0 and flips["wrong_to_right"] > 0
        status, page = console.json("GET", f"/api/compare/flipped?a={a['run']}&b={b['run']}&kind=right_to_wrong")
        assert page["total"] == flips["right_to_wrong"] and page["rows"][0]["thumb"]
        status, gate = console.json("POST", "/api/gate", {"candidate": b["run"], "baseline": a["run"],
                                                          "min": {"accuracy": 0.1}, "max_drop": {"accuracy": 0.0}})
        assert status == 200, gate
        expected = b_acc = None
        status, runs = console.json("GET", "/api/runs")
        accs = {r["id"]: r["metrics"]["accuracy"] for r in runs["runs"]}
        b_acc, expected = accs[b["run"]], accs[b["run"]] >= accs[a["run"]]
        assert gate["passed"] is expected and b_acc is not None
        assert "| accuracy |" in gate["markdown"]


def test_progress_counts_shard_parts_and_the_merged_run_once(tmp_path):
    from builder.console.jobs import ResultsCounter

    root = tmp_path / "run"
    for i, lines in enumerate((3, 4)):
        (root / "parts" / str(i)).mkdir(parents=True)
        (root / "parts" / str(i) / "results.jsonl").write_text("{}\n" * lines)
    (root / "parts" / "1" / ".results.jsonl.tmp").write_bytes(b"{}\n{}\n" + b"\0" * 4096)  # runs ahead as zeros
    counter = ResultsCounter(root)
    assert counter.count() == 7
    (root / "results.jsonl").write_text("{}\n" * 7)  # the merge
    assert counter.count() == 7
