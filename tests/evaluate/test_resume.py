"""`swcli model eval --resume`: a run killed with kill -9 (before any record, mid-way, during cmp) continues from
its partial results, ppl runs only on the records not yet scored, and the outputs equal an uninterrupted run's
byte for byte. A cut or garbled results file is repaired, a run of another model, dataset or shard is refused,
a finished run is left alone; `job run` and the Kubernetes pods carry the flag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import EvalError
from builder.evaluate.runner.run import run_evaluation
from builder.jobs.k8s import K8sOptions, render
from builder.evaluate.runner.resume import ResumeError
from tests.helpers.counted import calls, write_model
from tests.helpers.handlers import SeedStyle, records

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"

@pytest.fixture()
def built(cli, tiny_dataset, tmp_path, monkeypatch):
    """The tiny dataset and the counting model in the test's store, and a reference run with no interruption."""
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", "--skip-gen-env", write_model(tmp_path / "model")).code == 0
    monkeypatch.setenv("CALLS", str(tmp_path / "calls-reference"))
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "reference")
    assert res.code == 0, res.err
    return tmp_path / "reference"


def eval_process(out: Path, calls_file: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "model", "eval", "modthree", "--dataset", "tiny", "-o", str(out), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CALLS": str(calls_file), **env})


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    """kill -9 the process as soon as ``ready()`` holds."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def resume(out: Path, calls_file: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = eval_process(out, calls_file, "--resume", *extra)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def same_outputs(out: Path, reference: Path) -> None:
    for name in ("results.jsonl", "metrics.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.jsonl", "run.json"]


def lines_in(out: Path) -> int:
    tmp = out / ".results.jsonl.tmp"
    return tmp.read_bytes().count(b"\n") if tmp.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before any record", "mid-way", "during cmp"])
def test_kill_9_then_resume_gives_the_uninterrupted_outputs_and_ppl_only_on_the_rest(built, tmp_path, where):
    out, first, second = tmp_path / "out", tmp_path / "calls-1", tmp_path / "calls-2"
    # before any record: the first ppl call sleeps long enough to be killed in it for sure
    proc = eval_process(out, first, SLEEP="0.5" if where == "before any record" else "0.05",
                        CMP_SLEEP="30" if where == "during cmp" else "0")
    ready = {"before any record": lambda: len(calls(first)) >= 1,  # the first ppl call is sleeping
             "mid-way": lambda: len(calls(first)) >= 20,
             "during cmp": lambda: (out / "results.jsonl").exists()}[where]
    kill_when(proc, ready)
    kept = 50 if where == "during cmp" else lines_in(out)
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # kill -9: nothing could say more
    if where == "before any record":
        assert kept == 0
    elif where == "mid-way":
        assert 19 <= kept <= 21, kept  # flushed per record: at most the record in flight is lost
    res = resume(out, second)
    assert res.returncode == 0, res.stderr
    assert f"resumed after {kept} of 50 records" in res.stdout
    assert calls(second) == list(range(kept, 50))  # ppl ran on exactly the records not yet scored
    same_outputs(out, built)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "succeeded" and run["records"] == {"total": 50, "ok": 49, "failed": 1}
    assert [r["after_records"] for r in run["resumed"]] == [kept]
    assert run["started"] < run["resumed"][0]["at"]


def test_a_line_cut_by_the_kill_is_dropped_and_redone(built, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    text = (built / "results.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    (out / "run.json").write_text((built / "run.json").read_text().replace('"succeeded"', '"running"'))
    (out / ".results.jsonl.tmp").write_text("".join(lines[:17]) + lines[17][: len(lines[17]) // 2])
    res = resume(out, tmp_path / "calls")
    assert res.returncode == 0, res.stderr
    assert calls(tmp_path / "calls") == list(range(17, 50))
    same_outputs(out, built)


@pytest.mark.parametrize("garbage", [
    b'{"index": 10, "label": [1], "result": [1], "pr": null, "error": null}\n',  # out of order: 10 after 8
    b'{"index": 8, "label": [2], "result": [2], "pr": null, "error": null}\n',  # 8 twice
    b"not json\n",
    b'{"index": 9, "label": [0], "result"\n',  # ends in a newline but does not parse
    b"[1, 2]\n",  # not a result object
    b'{"index": "9", "label": [0], "result": [0], "pr": null, "error": null}\n',  # index not an integer
    b'{"index": 9, "pr": null, "error": null}\n',  # neither an error nor a result
    b"\xff\xfe\n",  # not UTF-8
])
def test_lines_that_do_not_parse_or_are_out_of_order_are_cut_with_everything_after(built, tmp_path, garbage):
    out = tmp_path / "out"
    out.mkdir()
    lines = (built / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "run.json").write_text((built / "run.json").read_text().replace('"succeeded"', '"interrupted"'))
    # an orderly stop left results.jsonl.partial; the good lines after the bad one are not trusted either
    (out / "results.jsonl.partial").write_bytes(b"".join(lines[:9]) + garbage + b"".join(lines[9:20]))
    res = resume(out, tmp_path / "calls")
    assert res.returncode == 0, res.stderr
    assert "resumed after 9 of 50 records" in res.stdout
    assert calls(tmp_path / "calls") == list(range(9, 50))
    same_outputs(out, built)


def test_a_finished_run_is_left_as_it_is(built, tmp_path):
    before = {p.name: p.read_bytes() for p in built.iterdir()}
    res = resume(built, tmp_path / "calls")
    assert res.returncode == 0, res.stderr
    assert f"{built} holds a finished run (status succeeded); nothing to resume" in res.stdout
    assert calls(tmp_path / "calls") == []
    assert {p.name: p.read_bytes() for p in built.iterdir()} == before


def test_resume_of_an_empty_folder_starts_fresh(built, tmp_path):
    res = resume(tmp_path / "new", tmp_path / "calls")
    assert res.returncode == 0, res.stderr
    assert calls(tmp_path / "calls") == list(range(50))
    same_outputs(tmp_path / "new", built)


def test_resume_needs_an_output_folder(cli, built):
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "--resume")
    # a usage error: exit 2 (issue 18)
    assert res.code == 2 and res.err.strip() == "swcli: error: --resume needs --output DIR: the folder of the run to continue"


def _interrupted_copy(built: Path, out: Path, **changes) -> Path:
    """``out`` as a run of ``built``'s model and dataset interrupted after 9 records, with run.json fields changed."""
    out.mkdir()
    run = json.loads((built / "run.json").read_text())
    run.update(status="interrupted", **changes)
    (out / "run.json").write_text(json.dumps(run))
    lines = (built / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl.partial").write_bytes(b"".join(lines[:9]))
    return out


def test_another_model_version_is_refused_naming_both(cli, built, tmp_path):
    from builder.store import Store

    old = json.loads((built / "run.json").read_text())["model"]
    assert cli("model", "build", "--no-image", "--skip-gen-env", write_model(tmp_path / "model", offset=1)).code == 0
    new = Store().resolve("model", "modthree").manifest
    out = _interrupted_copy(built, tmp_path / "out")
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume")  # :latest is the new build
    assert res.code == 1
    line = res.err.strip()
    assert line.count("\n") == 0 and line.startswith(f"swcli: error: cannot resume {out}: it holds a run of model "
                                                     f"modthree:{old['version']}, this is model modthree:")
    assert new["version"] in line and "--resume continues the same model, dataset, shard and batch size" in line
    assert (out / "results.jsonl.partial").exists() and not (out / ".results.jsonl.tmp").exists()  # untouched


def test_another_dataset_version_is_refused_naming_both(cli, built, tmp_path):
    version = json.loads((built / "run.json").read_text())["dataset"]["version"]
    out = _interrupted_copy(built, tmp_path / "out", dataset={"name": "tiny", "version": "0ther"})
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume")
    assert res.code == 1
    assert f"it holds a run of dataset tiny:0ther, this is dataset tiny:{version};" in res.err


def test_another_shard_is_refused_naming_both(cli, built, tmp_path):
    out = _interrupted_copy(built, tmp_path / "out", shard={"index": 0, "count": 2, "start": 0, "stop": 25})
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume", "--shard", "1/2")
    assert res.code == 1
    assert ("it holds a run of shard 0/2 (records 0..25), this is shard 1/2 (records 25..50);" in res.err), res.err
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume")
    assert "it holds a run of shard 0/2 (records 0..25), this is the whole dataset;" in res.err


@pytest.mark.slow
def test_a_shard_part_resumes_and_merges_like_an_uninterrupted_one(cli, built, tmp_path):
    parts, second = tmp_path / "parts", tmp_path / "calls-2"
    proc = eval_process(parts / "1", tmp_path / "calls-1", "--shard", "1/2", SLEEP="0.05")
    kill_when(proc, lambda: len(calls(tmp_path / "calls-1")) >= 8)
    kept = lines_in(parts / "1")
    res = resume(parts / "1", second, "--shard", "1/2")
    assert res.returncode == 0, res.stderr
    assert calls(second) == list(range(25 + kept, 50))
    res = resume(parts / "1", tmp_path / "calls-3", "--shard", "1/2")  # a retried pod whose part is done
    assert "holds a finished run (status partial); nothing to resume" in res.stdout and calls(tmp_path / "calls-3") == []
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", parts / "0", "--shard", "0/2").code == 0
    assert cli("eval", "merge", parts / "0", parts / "1", "-o", tmp_path / "merged").code == 0
    for name in ("results.jsonl", "metrics.json"):
        assert (tmp_path / "merged" / name).read_bytes() == (built / name).read_bytes()


def test_a_fresh_run_removes_an_earlier_runs_results_so_no_resume_trusts_them(built, tmp_path):
    # a run of model A finished in out/; a fresh run of another handler starts there and dies before its first
    # record: a --resume must not find A's results.jsonl
    out = _interrupted_copy(built, tmp_path / "out")
    (out / "results.jsonl").write_bytes((built / "results.jsonl").read_bytes())
    (out / "metrics.json").write_bytes((built / "metrics.json").read_bytes())

    class Dies(SeedStyle):
        def ppl(self, data, **kw):
            raise KeyboardInterrupt

    with pytest.raises(Exception):
        run_evaluation(Dies(), records(), out)
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl.partial", "run.json"]
    assert (out / "results.jsonl.partial").read_bytes() == b""


def test_in_process_runner_resume_and_records_that_skip_an_index(tmp_path):
    out = tmp_path / "out"
    reference = run_evaluation(SeedStyle(), records(), tmp_path / "reference")
    assert reference.ok

    class Stops(SeedStyle):
        def ppl(self, data, **kw):
            if kw["index"] == 12:
                raise KeyboardInterrupt
            return super().ppl(data, **kw)

    with pytest.raises(Exception):
        run_evaluation(Stops(), records(), out)
    again = run_evaluation(SeedStyle(), records(), out, resume=True)
    assert again.note == "resumed after 12 of 30 records" and again.run["records"]["ok"] == 30
    assert again.metrics == reference.metrics
    for name in ("results.jsonl", "metrics.json"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()
    # records whose numbering has a gap right after the kept ones cannot be continued
    with pytest.raises(Exception):
        run_evaluation(Stops(), records(), tmp_path / "gap")
    gapped = [r for r in records() if r.index != 12]
    with pytest.raises(ResumeError, match="record 13 follows the 12 kept results, expected record 12"):
        run_evaluation(SeedStyle(), gapped, tmp_path / "gap", resume=True)


def test_another_batch_size_is_refused(tmp_path):
    from tests.helpers.handlers import Batched

    with pytest.raises(Exception):
        run_evaluation(Batched(batch_size=4), records(), tmp_path / "out", progress=_interrupt_at(8))
    with pytest.raises(EvalError, match="it holds a run of batch size 4, this is batch size 8;"):
        run_evaluation(Batched(batch_size=8), records(), tmp_path / "out", resume=True)
    again = run_evaluation(Batched(batch_size=4), records(), tmp_path / "out", resume=True)
    assert again.note == "resumed after 8 of 30 records"


def _interrupt_at(done: int):
    def progress(n: int) -> None:
        if n >= done:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("mount", ["init", "image"])
def test_k8s_eval_pods_carry_resume(mount):
    text = render(K8sOptions(model_image="r.example/swmp/m:1", dataset_image="r.example/swds/d:1", shards=3,
                             dataset_mount=mount))
    golden = GOLDEN / f"k8s-{mount}.yaml"
    if os.environ.get("SWCLI_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert text.count("- --resume") == 1  # the eval pods; the merge redoes its merge
    off = render(K8sOptions(model_image="r.example/swmp/m:1", dataset_image="r.example/swds/d:1", resume=False))
    assert "--resume" not in off


@pytest.mark.docker
@pytest.mark.parametrize("shards", [1, 2])
def test_job_run_resume_continues_a_container_that_died(engine, cli, tiny_dataset, tiny_runtime, tmp_path,  # noqa: F811
                                                        monkeypatch, shards):
    from builder.jobs.docker import run_job

    assert cli("dataset", "build", tiny_dataset).code == 0
    res = cli("model", "build", write_model(tmp_path / "model"), "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    monkeypatch.setenv("CALLS", str(tmp_path / "calls-local"))
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "local").code == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "crash-once").write_text("")
    assert run_job("modthree", "tiny", out, client=engine, log=lambda line: None, shards=shards) == 9
    first = calls(out / "calls")
    (out / "calls").unlink()
    assert run_job("modthree", "tiny", out, client=engine, log=lambda line: None, shards=shards, resume=True) == 0
    stop = 50 if shards == 1 else 25
    assert 20 in first and calls(out / "calls") == list(range(20, stop))  # only shard 0's records after the crash
    for name in ("metrics.json", "results.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_second_run_into_a_folder_in_use_stops_and_touches_nothing(built, cli, tmp_path):
    """Two runs in one folder would interleave their results: the second (a fresh run or a --resume) stops with one
    line naming the holder, the first's files stay as they were, and the lock dies with its process."""
    from builder.evaluate.runner.run_lock import LOCK

    out = tmp_path / "out"
    first = eval_process(out, tmp_path / "calls-first", SLEEP="0.05")
    try:
        deadline = time.monotonic() + 60
        while lines_in(out) < 2:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.01)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".results.jsonl.tmp"}
        for extra in ((), ("--resume",)):
            res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, *extra)
            assert res.code == 1 and res.err == (f"swcli: error: {out} is in use by another run (process "
                                                 f"{first.pid}); wait for it to end, or give another --output\n")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".results.jsonl.tmp"} == before
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert (out / LOCK).exists()  # left by the killed run, but not held: the resume goes ahead
    done = resume(out, tmp_path / "calls-resume")
    assert done.returncode == 0, done.stderr
    same_outputs(out, built)
