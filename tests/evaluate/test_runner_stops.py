"""How a run stops, for real: Ctrl-C in a `python -m builder model eval` process, and a disk that fills up.

Each must end in one line naming the file and what happened, keep what was predicted, and leave a run.json
saying how the run ended.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.capabilities import needs
from tests.helpers.models import HANDLER, write_model

REPO = Path(__file__).resolve().parents[2]

SLOW = HANDLER.replace("    def ppl(self, data, **kw):\n", "    def ppl(self, data, **kw):\n        import time; time.sleep(0.05)\n")
# 50 records x ~60 KB of scores: more than the 1 MB write buffer and the 256 KB disk below
BIG = HANDLER.replace("return [pred], [scores.tolist()]", "return [pred], [scores.tolist() + [0.123456789] * 6000]")
# cmp fills the disk (a big file beside the outputs) before it returns, so metrics.json finds no room
FILLS = HANDLER.replace("    @multi_classification", '''    def fill(self):
        import os
        try:
            with open(os.environ["FILL_DIR"] + "/filler", "wb") as fh:
                while True:
                    fh.write(b"x" * 4096)
                    fh.flush()
        except OSError:
            pass

    @multi_classification''').replace("        return _label, _result, _pr", "        self.fill()\n        return _label, _result, _pr")


@pytest.fixture()
def build(cli, tiny_dataset, tmp_path):
    """Build the tiny dataset and a modthree model with the given handler source into the test's store."""

    def run(handler: str) -> None:
        assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
        res = cli("model", "build", "--no-image", "--skip-gen-env", write_model(tmp_path / "model", handler))
        assert res.code == 0, res.err

    return run


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ctrl_c_during_eval_says_after_how_many_records_and_where_the_partial_results_are(build, tmp_path):
    build(SLOW)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "model", "eval", "modthree", "--dataset", "tiny", "-o", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal, even if we ignore it
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / ".results.jsonl.tmp").exists():  # run.json is reserved and the ppl phase begins
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.6)  # ~10 records of 50
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    partial = read_lines(out / "results.jsonl.partial")
    done = len(partial)
    assert 0 < done < 50 and [line["index"] for line in partial] == list(range(done))
    assert err.strip().splitlines()[-1] == (
        f"swcli: error: interrupted after {done} records; partial results in {out / 'results.jsonl.partial'}, "
        f"run.json (status interrupted) in {out / 'run.json'}")
    assert "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and run["records"]["ok"] == done and "interrupted after" in run["error"]
    assert not (out / "results.jsonl").exists() and not (out / "metrics.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl.partial", "run.json"]


@pytest.fixture()
@needs("tmpfs")
def small_disk(tmp_path):
    """A real 256 KB tmpfs (the `tmpfs` marker: root and mount); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    assert res.returncode == 0, f"cannot mount a tmpfs: {res.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_writing_results_names_the_file_and_still_writes_run_json(cli, build, small_disk):
    build(BIG)
    out = small_disk / "out"
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out)
    assert res.code != 0
    assert res.err.strip() == (f"swcli: error: {out / 'results.jsonl'}: cannot write: No space left on device "
                               f"(what was written is kept as {out / 'results.jsonl.partial'})")
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == res.err.strip().removeprefix("swcli: error: ")
    assert not (out / "results.jsonl").exists() and (out / "results.jsonl.partial").stat().st_size > 100_000
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl.partial", "run.json"]  # no temp files


def test_a_full_disk_while_writing_metrics_names_metrics_json_and_still_writes_run_json(cli, build, small_disk,
                                                                                          monkeypatch):
    build(FILLS)
    out = small_disk / "out"
    monkeypatch.setenv("FILL_DIR", str(small_disk))
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out)
    assert res.code != 0
    assert res.err.strip() == f"swcli: error: {out / 'metrics.json'}: cannot write: No space left on device"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == res.err.strip().removeprefix("swcli: error: ")
    assert run["records"]["ok"] == 50 and len(read_lines(out / "results.jsonl")) == 50
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl", "run.json"]


def test_an_output_json_cannot_hold_is_one_line_from_the_cli(cli, build, tmp_path):
    build(HANDLER.replace("return [pred], [scores.tolist()]", "return [pred], [object()] if kw['index'] == 7 else [scores.tolist()]"))
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "out")
    assert res.code == 1 and res.err.strip() == (
        "swcli: error: record 7: what ppl returned cannot be stored as JSON: TypeError: object is not JSON-serialisable")
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"
