"""`eval list` shows run ids whole in an 80-column terminal; `eval show` and the HTML report show the confusion
matrix normalised as the handler asked (``multi_classification(confusion_matrix_normalize=...)``)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from builder.api.metric import compute_multi_classification
from builder.runs.history import load_run
from builder.runs.report import confusion_panels, render_report
from builder.store import Store
from tests.helpers.run_folders import METRICS, write_run

ROOT = Path(__file__).resolve().parents[2]
LONG_ID = "20261207-235959-cifar_resnet50_finetuned-cifar10-test-3f2a"  # as `model eval` names runs
TRUTH = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2, 1]


def _list(home: Path, columns: int) -> list[str]:
    env = {**os.environ, "SWCLI_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": str(columns)}
    done = subprocess.run([sys.executable, "-m", "builder", "eval", "list"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_list_shows_whole_run_ids_in_80_columns(swcli_home):
    runs = Store().runs_dir
    write_run(runs / LONG_ID)
    write_run(runs / "short", started="2026-02-01T00:00:00.000000+00:00")
    lines = _list(swcli_home, 80)
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80, lines
    assert sum(LONG_ID in line for line in table) == 1, lines  # on one line, not cut to "…" nor wrapped
    assert "…" not in "".join(lines)  # no value is cut: the columns that do not fit are left out whole
    assert "accuracy" in table[1] and "0.7500" in table[-2]
    assert lines[-1].startswith("(started, records, ") and lines[-1].endswith(" left out to fit 80 columns; -o json has them)")
    wide = _list(swcli_home, 200)
    assert all(c in wide[1] for c in ("run", "started", "model", "dataset", "records", "accuracy", "status"))
    assert any(LONG_ID in line and "2026-01-01 00:00" in line and "succeeded" in line for line in wide)
    assert "left out" not in "".join(wide)


def _shown_matrix(text: str, title: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix") and title in line)
    rows = []
    for line in lines[start + 4:]:
        if not line.startswith("│"):
            break
        rows.append([c.strip() for c in line.strip("│").split("│")][1:])
    return rows


@pytest.mark.parametrize("mode", ["true", "pred", "all"])
def test_show_prints_the_matrix_the_handler_asked_for(cli, swcli_home, mode):
    metrics = compute_multi_classification(TRUTH, PRED, confusion_matrix_normalize=mode, show_roc_auc=False)
    write_run(Store().runs_dir / "normed", metrics=metrics)
    res = cli("eval", "show", "normed")
    assert res.code == 0, res.err
    title = {"true": "normalised by true label", "pred": "normalised by predicted label",
             "all": "normalised over all records"}[mode]
    expected = confusion_matrix(TRUTH, PRED, normalize=mode)
    assert _shown_matrix(res.out, f"{title} (normalize={mode})") == [[f"{v:.4f}" for v in row] for row in expected]


def test_show_prints_counts_without_normalisation_and_recomputes_a_missing_matrix(cli, swcli_home):
    metrics = compute_multi_classification(TRUTH, PRED, confusion_matrix_normalize=None, show_roc_auc=False)
    write_run(Store().runs_dir / "counted", metrics=metrics)
    res = cli("eval", "show", "counted")
    assert _shown_matrix(res.out, "counts") == [[str(v) for v in row] for row in confusion_matrix(TRUTH, PRED)]
    assert "normalize=" not in res.out
    edited = copy.deepcopy(metrics)  # a hand-edited run: a mode, but no normalised matrix
    edited["confusion_matrix"]["normalize"] = "pred"
    del edited["confusion_matrix"]["binarylabel"]
    write_run(Store().runs_dir / "edited", metrics=edited)
    res = cli("eval", "show", "edited")
    expected = confusion_matrix(TRUTH, PRED, normalize="pred")
    assert _shown_matrix(res.out, "(normalize=pred)") == [[f"{v:.4f}" for v in row] for row in expected]


@pytest.mark.parametrize("mode", [None, "true", "pred", "all"])
def test_report_draws_the_handlers_normalisation(swcli_home, tmp_path, mode):
    metrics = compute_multi_classification(TRUTH, PRED, confusion_matrix_normalize=mode, show_roc_auc=False)
    panels = confusion_panels(metrics)
    assert panels[0][0] == "counts" and np.array_equal(panels[0][1], confusion_matrix(TRUTH, PRED))
    if mode is None:
        assert len(panels) == 1  # counts only: the handler asked for no normalisation
    else:
        assert len(panels) == 2 and panels[1][0].endswith(f"(normalize={mode})")
        assert np.allclose(panels[1][1], confusion_matrix(TRUTH, PRED, normalize=mode))
    out = render_report(load_run(write_run(tmp_path / "run", metrics=metrics)), tmp_path / "report.html")
    html = out.read_text()
    caption = " | ".join(title for title, _, _ in panels)
    assert f'<p class="caption" id="confusion-panels">{caption}</p>' in html
    assert "normalised by true label" not in html or mode == "true"


def test_report_of_a_run_without_a_mode_keeps_working(tmp_path):
    metrics = copy.deepcopy(METRICS)  # normalize None, counts only
    assert [title for title, _, _ in confusion_panels(metrics)] == ["counts"]
    assert confusion_panels({**metrics, "confusion_matrix": {}}) == []
