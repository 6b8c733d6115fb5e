"""The run history under hostile refs, broken files and wrong shapes; label names in show/report/diff (issue 9)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from builder.runs.history import record_run, scan_runs
from builder.store import Store
from tests.helpers.cli import one_line_error
from tests.helpers.run_folders import METRICS, RESULTS, RUN, write_run

NAMES = {"0": "airplane", "1": "automobile", "2": "bird"}


# ------------------------------------------------------------------------------------------------- remove


@pytest.mark.parametrize("form", ["id", "prefix", "latest", "outside path", "link path", "relative outside path"])
def test_removing_a_recorded_outside_folder_only_forgets_it(cli, swcli_home, tmp_path, monkeypatch, form):
    out = write_run(tmp_path / "my out")
    run_id = record_run(out, Store())
    link = Store().runs_dir / run_id
    assert link.is_symlink()
    monkeypatch.chdir(tmp_path)
    ref = {"id": run_id, "prefix": run_id[:12], "latest": "latest", "outside path": str(out),
           "link path": str(link), "relative outside path": "./my out"}[form]
    res = cli("eval", "remove", ref)
    assert res.code == 0 and f"forgot run {run_id}" in res.out, res.err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.jsonl", "run.json"]
    assert not os.path.lexists(link)


@pytest.mark.parametrize("form", ["id", "path"])
def test_removing_a_run_inside_the_store_deletes_it(cli, swcli_home, form):
    folder = write_run(Store().runs_dir / "20260101-000000-net-cifar-ab12")
    res = cli("eval", "remove", folder.name if form == "id" else str(folder))
    assert res.code == 0 and "removed run 20260101-000000-net-cifar-ab12" in res.out
    assert not folder.exists() and os.listdir(Store().runs_dir) == []


def test_an_unrecorded_outside_folder_is_never_deleted(cli, swcli_home, tmp_path):
    out = write_run(tmp_path / "elsewhere")
    Store().runs_dir.mkdir(parents=True)
    one_line_error(cli("eval", "remove", str(out)), str(out), "not a run in")
    assert (out / "run.json").is_file()


@pytest.mark.parametrize("ref", ["../../victim", "../victim", "..", "x/../../../victim", "victim\n", "a b", "a;b"])
def test_hostile_run_refs(cli, swcli_home, tmp_path, monkeypatch, ref):
    victim = write_run(tmp_path / "victim")
    write_run(Store().runs_dir / "20260101-000000-net-cifar-ab12")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative refs name nothing from here, and must not mean runs/<ref>
    res = cli("eval", "remove", ref)
    assert res.code != 0 and "Traceback" not in res.err
    assert (victim / "run.json").is_file()
    assert (Store().runs_dir / "20260101-000000-net-cifar-ab12" / "run.json").is_file()


def test_broken_entries_can_be_removed_by_exact_id(cli, swcli_home, tmp_path):
    runs = Store().runs_dir
    gone = write_run(tmp_path / "gone")
    gone_id = record_run(gone, Store())
    for path in gone.iterdir():
        path.unlink()
    gone.rmdir()
    broken = write_run(runs / "20260102-broken", metrics=[1, 2])
    assert cli("eval", "remove", gone_id).code == 0 and not os.path.lexists(runs / gone_id)
    assert cli("eval", "remove", "20260102-broken").code == 0 and not broken.exists()


def test_record_run_makes_a_valid_id_and_never_reuses_one(swcli_home, tmp_path):
    store = Store()
    first = record_run(write_run(tmp_path / "a" / "out [v2]"), store)
    second = record_run(write_run(tmp_path / "b" / "out [v2]"), store)  # same start, same folder name
    assert first != second and second == f"{first}-2"
    assert " " not in first and "[" not in first
    assert record_run(tmp_path / "a" / "out [v2]", store) == first  # recording again is a no-op
    os.unlink(store.runs_dir / first)
    os.symlink(tmp_path / "deleted", store.runs_dir / first)  # a dangling link holds the id
    assert record_run(tmp_path / "a" / "out [v2]", store) == f"{first}-3"


# -------------------------------------------------------------------------------------------- broken history


def test_eval_list_names_unreadable_runs_and_lists_the_rest(cli, swcli_home, tmp_path):
    runs = Store().runs_dir
    good = write_run(runs / "20260103-good")
    bad = {
        "bad json": runs / "20260101-badjson",
        "a list": runs / "20260101-list",
        "metrics shape": runs / "20260101-metrics",
        "dangling": runs / "20260101-dangling",
        "bad id": runs / "bad id",
    }
    write_run(bad["bad json"])
    (bad["bad json"] / "run.json").write_text("{broken")
    write_run(bad["a list"], run=[RUN])
    write_run(bad["metrics shape"], metrics={**METRICS, "summary": [0.75]})
    os.symlink(tmp_path / "deleted", bad["dangling"])
    write_run(bad["bad id"])
    (runs / "20260101-running").mkdir()  # no run.json yet: still running, not a problem
    failed = copy.deepcopy(RUN) | {"status": "failed", "error": "boom"}
    write_run(runs / "20260101-failed", run=failed)
    (runs / "20260101-failed" / "metrics.json").unlink()  # a failed run has no metrics: not listed, not a problem

    listed, problems = scan_runs(Store())
    assert [r.id for r in listed] == ["20260103-good"]
    assert len(problems) == len(bad)
    for path in bad.values():
        assert sum(str(path) in p for p in problems) == 1, (path, problems)

    res = cli("eval", "list", "-o", "json")
    assert res.code == 0 and [r["id"] for r in json.loads(res.out)] == [good.name]
    warnings = res.err.splitlines()
    assert len(warnings) == len(bad) and all(w.startswith("swcli: warning: ") for w in warnings)
    assert "Traceback" not in res.err
    assert cli("eval", "show", "latest").code == 0  # resolving survives the broken siblings too


# ------------------------------------------------------------------------------------------- wrong shapes


def mutate(doc: dict, path: str, value: object) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


RUN_SHAPES = {
    "run a list": ([RUN], "run.json: expected a JSON object"),
    "dataset a string": (mutate(RUN, "dataset", "cifar"), "field 'dataset'"),
    "records.ok a string": (mutate(RUN, "records.ok", "4"), "field 'records.ok'"),
    "model.name a number": (mutate(RUN, "model.name", 7), "field 'model.name'"),
    "label_names a list": (mutate(RUN, "dataset.label_names", ["airplane"]), "field 'dataset.label_names'"),
    "a label name a number": (mutate(RUN, "dataset.label_names", {"0": 1}), "field 'dataset.label_names.0'"),
}
METRIC_SHAPES = {
    "metrics a list": ([METRICS], "metrics.json: expected a JSON object"),
    "summary a list": (mutate(METRICS, "summary", [0.75]), "field 'summary'"),
    "accuracy a string": (mutate(METRICS, "summary.accuracy", "0.75"), "field 'summary.accuracy'"),
    "an average of strings": (mutate(METRICS, "summary.macro avg.recall", "x"), "field 'summary.macro avg.recall'"),
    "labels a list": (mutate(METRICS, "labels", [1, 2]), "field 'labels'"),
    "a label a number": (mutate(METRICS, "labels.0", 1.0), "field 'labels.0'"),
    "precision a string": (mutate(METRICS, "labels.1.precision", "high"), "field 'labels.1.precision'"),
    "counts not square": (mutate(METRICS, "confusion_matrix.counts", [[1, 0], [0, 1, 1], [0, 0, 1]]), "confusion_matrix.counts"),
    "counts of strings": (mutate(METRICS, "confusion_matrix.counts", [["1", "0", "0"]] * 3), "confusion_matrix.counts"),
    "counts for 2 labels": (mutate(METRICS, "confusion_matrix.counts", [[1, 0], [0, 1]]), "3x3"),
    "all_labels a dict": (mutate(METRICS, "all_labels", {"0": 0}), "field 'all_labels'"),
    "roc without tpr": (mutate(METRICS, "roc_auc.0", {"fpr": [0.0], "auc": 0.5}), "field 'roc_auc.0'"),
    "roc auc a string": (mutate(METRICS, "roc_auc.2.auc", "0.5"), "field 'roc_auc.2.auc'"),
}
RESULT_SHAPES = {
    "a line a list": ([RESULTS[0], [1, 2]], "results.jsonl:2: expected a JSON object"),
    "no index": ([RESULTS[0], {"label": 1, "result": 1, "error": None}], "results.jsonl:2: field 'index'"),
    "index a string": ([{**RESULTS[0], "index": "0"}], "results.jsonl:1: field 'index'"),
    "no result": ([{"index": 0, "label": 0, "error": None}], "results.jsonl:1: missing field 'result'"),
    "error a number": ([{**RESULTS[0], "error": 1}], "results.jsonl:1: field 'error'"),
}


def commands(bad: Path, good: Path, tmp_path: Path) -> dict[str, list]:
    return {"show": ["eval", "show", bad], "show json": ["eval", "show", bad, "-o", "json"],
            "gate": ["eval", "show", bad, "--fail-under", "accuracy=0.1"],
            "report": ["eval", "report", bad, "-o", tmp_path / "r.html"],
            "diff": ["eval", "diff", good, bad], "diff json": ["eval", "diff", bad, good, "-o", "json"]}


@pytest.mark.parametrize("shape", sorted(RUN_SHAPES) + sorted(METRIC_SHAPES))
@pytest.mark.parametrize("command", ["show", "show json", "gate", "report", "diff", "diff json"])
def test_wrong_shapes_in_run_and_metrics_are_one_line(cli, swcli_home, tmp_path, shape, command):
    good = write_run(tmp_path / "good")
    if shape in RUN_SHAPES:
        doc, words = RUN_SHAPES[shape]
        bad = write_run(tmp_path / "bad", run=doc)
    else:
        doc, words = METRIC_SHAPES[shape]
        bad = write_run(tmp_path / "bad", metrics=doc)
    res = cli(*commands(bad, good, tmp_path)[command])
    one_line_error(res, str(bad), words)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("shape", sorted(RESULT_SHAPES))
@pytest.mark.parametrize("command", ["report", "diff", "diff json"])
def test_wrong_shapes_in_results_are_one_line(cli, swcli_home, tmp_path, shape, command):
    good = write_run(tmp_path / "good")
    lines, words = RESULT_SHAPES[shape]
    bad = write_run(tmp_path / "bad", results=lines)
    one_line_error(cli(*commands(bad, good, tmp_path)[command]), str(bad), words)
    assert not (tmp_path / "r.html").exists()


def test_a_sparse_but_valid_run_renders_everywhere(cli, swcli_home, tmp_path):
    """Optional keys may be absent or null: a counts-only run (no cmp) and a run.json without model/records."""
    sparse = write_run(tmp_path / "sparse", run={"status": "succeeded", "dataset": {"name": "cifar", "version": None}},
                       metrics={"kind": "counts", "records": 4, "ok": 4, "failed": 0, "labels": None})
    other = write_run(tmp_path / "other", run={"dataset": {"name": "cifar"}}, metrics={"summary": {"accuracy": None}})
    for args in (["eval", "show", sparse], ["eval", "report", sparse, "-o", tmp_path / "r.html"],
                 ["eval", "diff", sparse, other]):
        res = cli(*args)
        assert res.code == 0 and res.err == "", (args, res.err)


# --------------------------------------------------------------------------------------------- label names


def test_show_report_and_diff_print_label_names(cli, swcli_home, tmp_path):
    named = write_run(tmp_path / "named", names=NAMES)
    other = write_run(tmp_path / "other", names=NAMES, results=[{**r, "result": r["label"]} for r in RESULTS])
    metrics_before = (named / "metrics.json").read_text()

    text = cli("eval", "show", named).out
    per_label = text[text.index("per label"):text.index("confusion matrix")]
    for key, name in NAMES.items():
        assert f"{key} {name}" in per_label
    confusion = text[text.index("confusion matrix"):]
    header, *rows = [line for line in confusion.splitlines() if "airplane" in line or "bird" in line]
    assert header.index("0 airplane") < header.index("1 automobile") < header.index("2 bird")  # column headers
    assert any(row.strip("│┃ ").startswith("2 bird") for row in rows)  # row headers

    report = tmp_path / "r.html"
    assert cli("eval", "report", named, "-o", report).code == 0
    page = report.read_text()
    assert '<tr data-label="1"><td>1 automobile</td>' in page  # raw key kept for scripts, name shown
    assert "true 1 automobile · predicted 2 bird" in page  # the confidently wrong record

    d = cli("eval", "diff", named, other)
    assert "2 bird" in d.out and "0 airplane" in d.out
    assert json.loads(cli("eval", "diff", named, other, "-o", "json").out)["label_names"] == NAMES
    assert (named / "metrics.json").read_text() == metrics_before  # metrics.json keeps its numeric keys


def test_without_label_names_the_raw_keys_show(cli, swcli_home, tmp_path):
    plain = write_run(tmp_path / "plain")
    text = cli("eval", "show", plain).out
    assert "airplane" not in text
    per_label = text[text.index("per label"):text.index("confusion matrix")]
    assert [line.strip("│┃ ").split()[0] for line in per_label.splitlines() if line.strip("│┃ ")[:1].isdigit()] == ["0", "1", "2"]
