"""Run history, `swcli eval show/list/remove/diff/report`, CI gates, and the report in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from tests.helpers.capabilities import chromium
from tests.helpers.cli import one_line_error
from tests.helpers.projects import write_digits_project


@pytest.fixture()
def two_runs(cli, tmp_path):
    """The digits project evaluated by two real models: a good LogisticRegression and a weak one."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    runs, predictions = [], []
    for name, clf in (("good", LogisticRegression(max_iter=300).fit(x[:1200], y[:1200])),
                      ("weak", LogisticRegression(max_iter=3).fit(x[:60], y[:60]))):
        project = write_digits_project(tmp_path / "digits", x[1200:], y[1200:], clf, model_name=f"digits_{name}")
        assert cli("dataset", "build", "--no-image", project).code == 0
        assert cli("model", "build", "--no-image", "--skip-gen-env", project).code == 0
        out = tmp_path / f"out-{name}"
        assert cli("model", "eval", f"digits_{name}", "--dataset", "digits", "-o", out).code == 0
        runs.append(out)
        predictions.append(clf.predict(x[1200:]))
    return runs, predictions, y[1200:]


def ids(cli):
    return [r["id"] for r in json.loads(cli("eval", "list", "-o", "json").out)]


def test_runs_written_anywhere_are_recorded_and_listed(cli, two_runs, swcli_home):
    (good, weak), _, _ = two_runs
    listed = json.loads(cli("eval", "list", "-o", "json").out)
    assert [Path(r["path"]).resolve() for r in listed] == [weak.resolve(), good.resolve()]  # newest first
    assert listed[0]["model"] == "digits_weak" and listed[0]["status"] == "succeeded"
    assert "digits_good" in cli("eval", "list").out
    assert cli("eval", "remove", listed[0]["id"]).code == 0
    assert (weak / "metrics.json").is_file()  # a recorded outside folder is forgotten, not deleted
    assert ids(cli) == [listed[1]["id"]]


def test_show_json_and_tables(cli, two_runs):
    (good, _), (pred_good, _), truth = two_runs
    shown = json.loads(cli("eval", "show", str(good), "-o", "json").out)
    assert shown["summary"]["accuracy"] == pytest.approx(skm.accuracy_score(truth, pred_good), abs=1e-12)
    assert shown["confusion_matrix"] == skm.confusion_matrix(truth, pred_good).tolist()
    text = cli("eval", "show", str(good)).out
    assert "per label" in text and "confusion matrix" in text


def test_fail_under_gates(cli, two_runs):
    (good, weak), (pred_good, pred_weak), truth = two_runs
    acc_good, acc_weak = skm.accuracy_score(truth, pred_good), skm.accuracy_score(truth, pred_weak)
    bound = (acc_good + acc_weak) / 2
    assert cli("eval", "show", str(good), "--fail-under", f"accuracy={bound}", "--fail-under", "macro-f1=0.5").code == 0
    res = cli("eval", "show", str(weak), "--fail-under", f"accuracy={bound}")
    assert res.code == 2 and f"accuracy {round(acc_weak, 4)} (bound {bound})" in res.err
    one_line_error(cli("eval", "show", str(good), "--fail-under", "precision=0.5"), "unknown metric 'precision'")
    one_line_error(cli("eval", "show", str(good), "--fail-under", "accuracy"), "METRIC=NUMBER")


def test_diff_reports_deltas_and_flipped_records(cli, two_runs):
    (good, weak), (pred_good, pred_weak), truth = two_runs
    d = json.loads(cli("eval", "diff", str(weak), str(good), "-o", "json").out)
    acc = d["summary"]["accuracy"]
    assert acc["delta"] == pytest.approx(skm.accuracy_score(truth, pred_good) - skm.accuracy_score(truth, pred_weak), abs=1e-12)
    f1_good = skm.f1_score(truth, pred_good, labels=[3], average=None)[0]
    f1_weak = skm.f1_score(truth, pred_weak, labels=[3], average=None)[0]
    assert d["labels"]["3"]["f1-score"]["delta"] == pytest.approx(f1_good - f1_weak, abs=1e-12)
    fixed = np.flatnonzero((pred_weak != truth) & (pred_good == truth))
    broken = np.flatnonzero((pred_weak == truth) & (pred_good != truth))
    assert d["flipped"]["wrong_to_right"] == len(fixed) > 0 and d["flipped"]["right_to_wrong"] == len(broken)
    assert d["flipped"]["wrong_to_right_indices"] == fixed[:20].tolist()
    assert "wrong -> right" in cli("eval", "diff", str(weak), str(good)).out


def test_bad_inputs(cli, two_runs, tmp_path):
    (good, weak), _, _ = two_runs
    one_line_error(cli("eval", "show", "no-such-run"), "no run matches 'no-such-run'")
    other = tmp_path / "other"
    shutil.copytree(weak, other)
    run = json.loads((other / "run.json").read_text())
    run["dataset"]["version"] = "zzzz" + run["dataset"]["version"][4:]
    (other / "run.json").write_text(json.dumps(run))
    one_line_error(cli("eval", "diff", str(good), str(other)), "evaluated different datasets")
    (other / "metrics.json").write_text("{broken")
    one_line_error(cli("eval", "show", str(other)), "metrics.json is unreadable")
    (weak / "results.jsonl").unlink()
    one_line_error(cli("eval", "diff", str(good), str(weak)), "results.jsonl is missing")


def report_numbers(text: str) -> dict:
    cards = dict(re.findall(r'data-metric="([^"]+)">([^<]+)<', text))
    rows = re.findall(r'<tr data-label="([^"]+)">(.*?)</tr>', text, re.S)
    per_label = {html.unescape(label): re.findall(r"<td>([^<]*)</td>", body)[1:] for label, body in rows}
    return {"cards": cards, "labels": per_label}


def test_report_numbers_equal_metrics_json(cli, two_runs, tmp_path):
    (good, _), _, _ = two_runs
    out = tmp_path / "report.html"
    assert cli("eval", "report", str(good), "-o", out).code == 0
    text = out.read_text()
    metrics = json.loads((good / "metrics.json").read_text())
    numbers = report_numbers(text)
    for key in ("accuracy", "hamming_loss", "cohen_kappa_score", "roc_auc"):
        assert numbers["cards"][key] == f"{metrics['summary'][key]:.4f}"
    for label, m in metrics["labels"].items():
        assert numbers["labels"][label] == [f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1-score']:.4f}",
                                            str(int(m["support"])), f"{m['auc']:.4f}"]
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") >= 2


BROWSER = chromium()
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
def test_report_renders_in_a_real_browser(cli, two_runs, tmp_path):
    from PIL import Image

    (good, _), _, _ = two_runs
    report = tmp_path / "report.html"
    assert cli("eval", "report", str(good), "-o", report).code == 0
    flags = [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([BROWSER, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for element in ('id="summary"', 'id="confusion-matrix"', 'id="roc"', 'id="per-label"', 'id="wrong-records"',
                    'alt="confusion matrix"', 'alt="ROC curves"'):
        assert element in dom
    shot = tmp_path / "shot.png"
    subprocess.run([BROWSER, *flags, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    assert pixels.std() > 20  # not a blank page: text, plots and tables
