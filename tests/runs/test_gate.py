"""`swcli eval gate`: the engine (rules, rows, flips, the failure line, the Markdown summary) on run folders written
without evaluating, and the command through the ``cli`` fixture."""

from __future__ import annotations

import copy
import json

import pytest

from builder.errors import UsageError
from builder.runs.gate_report import GateRule, gate, is_image_ref, md_text, parse_rules, resolve_baseline
from builder.runs.history import load_run
from builder.runs.schema import RunError
from builder.store import Store
from tests.helpers.cli import one_line_error
from tests.helpers.run_folders import METRICS, RESULTS, write_run


def _metrics(accuracy: float, macro_f1: float = 0.78) -> dict:
    m = copy.deepcopy(METRICS)
    m["summary"]["accuracy"] = accuracy
    m["summary"]["macro avg"]["f1-score"] = macro_f1
    return m


def _results(predictions: list[int]) -> list[dict]:
    return [{**r, "result": p} for r, p in zip(copy.deepcopy(RESULTS), predictions)]


@pytest.fixture()
def pair(swcli_home):
    """Baseline: 3 of 4 right (records 0, 1, 3); candidate: records 0 and 2 right (2 fixed, 1 and 3 broken)."""
    runs = Store().runs_dir
    base = write_run(runs / "base-1", metrics=_metrics(0.75, 0.80), results=_results([0, 1, 2, 2]),
                     started="2026-01-01T00:00:00.000000+00:00")
    cand = write_run(runs / "cand-1", metrics=_metrics(0.50, 0.79), results=_results([0, 2, 1, 0]),
                     started="2026-01-02T00:00:00.000000+00:00")
    return load_run(cand), load_run(base)


def test_parse_rules_mins_then_drops_and_refusals():
    assert parse_rules(["accuracy=0.6", "macro-f1 = 0.5"], ["accuracy=0.01"]) == [
        GateRule("accuracy", "min", 0.6), GateRule("macro-f1", "min", 0.5), GateRule("accuracy", "max-drop", 0.01)]
    for mins, drops, words in ((["accuracy"], [], "--min takes METRIC=NUMBER"), (["accuracy=x"], [], "'accuracy=x'"),
                               ([], ["accuracy=nan"], "--max-drop takes METRIC=NUMBER"),
                               ([], ["accuracy=-0.1"], "a number >= 0"),
                               (["precision=0.5"], [], "unknown metric 'precision'; known: accuracy, hamming_loss")):
        with pytest.raises(UsageError) as err:
            parse_rules(mins, drops)
        assert words in str(err.value) and err.value.exit_code == 2


def test_min_and_max_drop_rows_and_flips(pair):
    cand, base = pair
    result = gate(cand, base, parse_rules(["accuracy=0.5"], ["macro-f1=0.01", "accuracy=0.2"]))
    rows = {(r.metric, r.rule): r for r in result.rows}
    assert [r.rule for r in result.rows][:3] == ["min 0.5", "max-drop 0.01", "max-drop 0.2"]  # rules first
    assert rows[("accuracy", "min 0.5")].ok  # equal to the bound passes
    assert rows[("macro-f1", "max-drop 0.01")].ok  # a drop of exactly 0.01 passes (0.80 - 0.79 rounds above it)
    assert rows[("macro-f1", "max-drop 0.01")].delta == pytest.approx(-0.01)
    drop = rows[("accuracy", "max-drop 0.2")]
    assert not drop.ok and drop.delta == pytest.approx(-0.25) and drop.floor == pytest.approx(0.55)
    assert not result.passed and [r.metric for r in result.failures()] == ["accuracy"]
    assert result.flipped["wrong_to_right"] == 1 and result.flipped["right_to_wrong"] == 2
    assert result.flipped["wrong_to_right_indices"] == [2] and result.flipped["right_to_wrong_indices"] == [1, 3]
    line = result.failure_line()
    assert "\n" not in line and "cand-1" in line and "base-1" in line
    assert "accuracy: candidate 0.5000, baseline 0.7500, max-drop 0.2 (floor 0.5500)" in line
    assert "macro-f1" not in line


def test_context_rows_have_no_rule(pair):
    cand, base = pair
    result = gate(cand, base, parse_rules([], ["accuracy=0.3"]))
    assert result.passed
    assert [(r.metric, r.rule, r.ok) for r in result.rows] == [("accuracy", "max-drop 0.3", True), ("macro-f1", "", True)]


def test_a_missing_metric_fails(pair):
    cand, base = pair
    result = gate(cand, base, parse_rules(["roc_auc=0.1"], ["cohen_kappa=0.5"]))
    assert [(r.metric, r.candidate, r.ok) for r in result.rows[:2]] == [("roc_auc", None, False), ("cohen_kappa", None, False)]
    assert "roc_auc: candidate missing, baseline missing, min 0.1" in result.failure_line()
    # a baseline without the metric fails the drop the candidate's own value cannot be measured against
    m = _metrics(0.5)
    m["summary"]["roc_auc"] = 0.9
    write_run(cand.path, metrics=m, results=_results([0, 2, 1, 0]))
    row = gate(load_run(cand.path), base, parse_rules([], ["roc_auc=0.5"])).rows[0]
    assert (row.candidate, row.baseline, row.delta, row.ok) == (0.9, None, None, False)


def test_different_datasets_are_refused(pair, tmp_path):
    cand, base = pair
    run = json.loads((base.path / "run.json").read_text())
    run["dataset"]["version"] = "zzzzzzzzzzzz"
    other = write_run(tmp_path / "other", run=run)
    with pytest.raises(RunError, match="evaluated different datasets"):
        gate(cand, load_run(other), parse_rules(["accuracy=0.1"], []))


def test_markdown_escapes_a_hostile_run_id(pair, tmp_path):
    cand, base = pair
    run = json.loads((cand.path / "run.json").read_text())
    run["model"]["name"] = "net`<img src=x onerror=alert(1)>\n| x |"
    hostile = write_run(tmp_path / "a|b<script>", run=run, metrics=_metrics(0.5, 0.79), results=_results([0, 2, 1, 0]))
    result = gate(load_run(hostile), base, parse_rules(["accuracy=0.6"], ["macro-f1=0.01"]))
    text = result.markdown()
    assert text.startswith("## ❌ Gate failed: a\\|b&lt;script&gt; vs baseline base-1")
    assert "<script" not in text and "<img" not in text and "`" not in text.replace("\\`", "")
    assert "net\\`&lt;img src=x onerror=alert(1)&gt; \\| x \\|" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(result.rows)
    # every table line has exactly the 7 unescaped pipes of 6 cells
    assert all(len([i for i, ch in enumerate(line) if ch == "|" and line[i - 1:i] != "\\"]) == 7 for line in table)
    assert "| accuracy | 0.5000 | 0.7500 | -0.2500 | min 0.6 | ❌ |" in table
    assert "| macro-f1 | 0.7900 | 0.8000 | -0.0100 | max-drop 0.01 | ✅ |" in table
    assert "Records flipped: right → wrong 2, wrong → right 1." in text
    assert md_text("a\r\nb\x1b[31m") == "a  b \\[31m"  # line breaks and control characters: spaces


def test_baseline_refs_tell_runs_from_images(pair, tmp_path, monkeypatch):
    cand, base = pair
    assert is_image_ref("registry.example:5000/team/m:1") and is_image_ref("localhost:5000/m@sha256:" + "a" * 64)
    assert is_image_ref("ghcr.io/team/m:v1")
    assert not any(is_image_ref(r) for r in ("base-1", "latest", "./out", "out/run", "team/m:1", "ghcr.io/team/m"))
    assert is_image_ref("ghcr.io/x:1")
    write_run(tmp_path / "ghcr.io" / "x:1")
    monkeypatch.chdir(tmp_path)
    assert not is_image_ref("ghcr.io/x:1")  # a folder on disk is a run, whatever it looks like
    assert resolve_baseline("ghcr.io/x:1", cand).path.resolve() == (tmp_path / "ghcr.io" / "x:1").resolve()
    assert resolve_baseline("base", cand).id == "base-1"  # a prefix
    assert resolve_baseline(str(base.path), cand).id == "base-1"


# -------------------------------------------------------------------------------------------------- the command


def test_gate_command_fails_with_one_line_and_writes_markdown(cli, pair, tmp_path):
    md = tmp_path / "ci" / "summary.md"
    res = cli("eval", "gate", "cand", "--baseline", "base-1", "--min", "accuracy=0.6", "--max-drop", "macro-f1=0.001",
              "--md", md)
    one_line_error(res, "run cand-1 fails the gate against baseline base-1",
                   "accuracy: candidate 0.5000, baseline 0.7500, min 0.6",
                   "macro-f1: candidate 0.7900, baseline 0.8000, max-drop 0.001 (floor 0.7990)")
    assert res.code == 2
    assert "FAIL" in res.out and "records right -> wrong: 2; wrong -> right: 1" in res.out
    text = md.read_text()
    assert text.startswith("## ❌ Gate failed: cand-1 vs baseline base-1") and "Failing: accuracy, macro-f1" in text
    assert "| accuracy | 0.5000 | 0.7500 | -0.2500 | min 0.6 | ❌ |" in text
    assert not [p for p in md.parent.iterdir() if p.name != "summary.md"]  # no temp file left


def test_gate_command_passes(cli, pair, tmp_path):
    res = cli("eval", "gate", "latest", "--baseline", "base-1", "--min", "accuracy=0.5", "--max-drop", "accuracy=0.25",
              "--md", tmp_path / "ok.md")
    assert res.code == 0, res.err
    assert "gate passed" in res.out and "max-drop 0.25" in res.out and "macro-f1" in res.out
    assert (tmp_path / "ok.md").read_text().startswith("## ✅ Gate passed: cand-1 vs baseline base-1")


def test_gate_command_usage_errors(cli, pair, tmp_path):
    res = cli("eval", "gate", "cand-1", "--baseline", "base-1", "--min", "precision=0.5")
    one_line_error(res, "--min: unknown metric 'precision'", "macro-f1")
    assert res.code == 2
    one_line_error(cli("eval", "gate", "cand-1", "--baseline", "base-1", "--max-drop", "accuracy"),
                   "--max-drop takes METRIC=NUMBER")
    one_line_error(cli("eval", "gate", "cand-1", "--baseline", "nope"), "no run matches 'nope'")
    assert not list(tmp_path.glob("*.md"))
