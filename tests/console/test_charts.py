"""The console's SVG charts (builder.console.charts): normalisation as scikit-learn's, confusion cells that carry the
label keys the record browser queries, ROC curves and delta bars; every chart parses as XML, references nothing
outside itself and shows hostile label names as text; a chart without data is ""."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from builder.console.charts import MAX_CURVES, confusion_svg, delta_bars_svg, normalised, roc_svg
from builder.console.records import RecordTable
from builder.runs.history import load_run
from tests.helpers.large_runs import large_metrics, large_results, write_large_run
from tests.helpers.run_folders import METRICS

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>\"'&"


def _parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert int(root.get("width")) > 0 and int(root.get("height")) > 0
    assert "<script" not in svg and "href" not in svg and "url(" not in svg and "<style" not in svg
    return root


def _texts(root: ET.Element) -> list[str]:
    return ["".join(node.itertext()) for node in root.iter() if node.tag in (f"{SVG}text", f"{SVG}title")]


@pytest.mark.parametrize("mode", ["true", "pred", "all"])
def test_normalised_matches_scikit_learn(mode):
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    counts = confusion_matrix(y_true, y_pred, labels=range(5)).tolist()  # label 4 never seen: zero row and column
    expected = np.nan_to_num(confusion_matrix(y_true, y_pred, labels=range(5), normalize=mode))
    assert np.allclose(normalised(counts, mode), expected)
    assert normalised(counts, "counts") == counts


@pytest.mark.parametrize("counts, mode", [([[1, 2], [3, 4]], "rows"), ([[1, 2], [3]], "true"), ([1, 2], "true"),
                                          ([["a", "b"], ["c", "d"]], "all")])
def test_normalised_refuses_bad_input(counts, mode):
    with pytest.raises(ValueError):
        normalised(counts, mode)


def test_a_bad_mode_is_a_value_error():
    with pytest.raises(ValueError, match="^mode: "):
        confusion_svg(METRICS, {}, "rows")
    with pytest.raises(ValueError, match="^mode: "):
        confusion_svg({}, {}, "rows")


def test_confusion_cells_carry_keys_titles_and_values():
    metrics = {**METRICS, "all_labels": ["cat", 7, "dog"]}
    root = _parsed(confusion_svg(metrics, {"cat": "Felis", "7": "seven"}, "counts"))
    cells = [node for node in root.iter(f"{SVG}rect") if node.get("class") == "cell"]
    assert [(c.get("data-true"), c.get("data-pred")) for c in cells[:4]] == [("cat", "cat"), ("cat", "7"),
                                                                            ("cat", "dog"), ("7", "cat")]
    assert len(cells) == 9
    tips = ["".join(c.find(f"{SVG}title").itertext()) for c in cells]
    assert tips[5] == "true 7 seven, predicted dog: 1"
    texts = _texts(root)
    assert "cat Felis" in texts and "7 seven" in texts and "dog" in texts
    assert [t for t in texts if t.isdigit()] == ["1", "0", "0", "0", "1", "1", "0", "0", "1"]


def test_each_cell_queries_the_records_it_counts(tmp_path):
    run = load_run(write_large_run(tmp_path / "run", 600, 6, failed_every=50))
    table = RecordTable.load(run)
    root = _parsed(confusion_svg(run.metrics, run.label_names, "counts"))
    cells = [node for node in root.iter(f"{SVG}rect") if node.get("class") == "cell"]
    assert len(cells) == 36
    for cell in cells:
        total, _ = table.query(true=cell.get("data-true"), pred=cell.get("data-pred"), correct=None)
        tip = "".join(cell.find(f"{SVG}title").itertext())
        assert tip.endswith(f": {total}"), tip
    assert sum(table.query(true=c.get("data-true"), pred=c.get("data-pred"))[0] for c in cells) == 600 - 12


def test_normalised_cells_print_two_decimals():
    root = _parsed(confusion_svg(METRICS, {}, "true"))
    assert [t for t in _texts(root) if t[:2] in ("0.", "1.")] == ["1.00", "0.00", "0.00", "0.00", "0.50", "0.50",
                                                                 "0.00", "0.00", "1.00"]


def test_many_labels_draw_only_cells_with_records_and_no_values():
    metrics = large_metrics(large_results(3000, 50), 50)
    svg = confusion_svg(metrics, {}, "counts")
    root = _parsed(svg)
    cells = [node for node in root.iter(f"{SVG}rect") if node.get("class") == "cell"]
    assert len(cells) == int(np.count_nonzero(metrics["confusion_matrix"]["counts"])) < 50 * 50
    assert not any(t.isdigit() and int(t) > 49 for t in _texts(root))  # axis keys 0..49, no counts printed


@pytest.mark.parametrize("metrics", [{}, {"confusion_matrix": {}}, {"confusion_matrix": {"counts": []}},
                                     {"confusion_matrix": {"counts": [[1, 2]]}}, {"confusion_matrix": {"counts": [[1], [2, 3]]}},
                                     {"confusion_matrix": {"counts": [["a"]]}}])
def test_a_confusion_matrix_without_data_is_empty(metrics):
    assert confusion_svg(metrics, {}, "counts") == ""


def test_hostile_label_names_and_keys_are_text():
    metrics = copy.deepcopy(METRICS)
    metrics["all_labels"] = [HOSTILE, "b\x1b[31m\u202e", "c\ud800\uffff"]
    metrics["roc_auc"] = {key: {"fpr": [0, 1], "tpr": [0, 1], "auc": 0.5} for key in metrics["all_labels"]}
    names = {HOSTILE: HOSTILE, "b\x1b[31m\u202e": f"{HOSTILE}\x00\n"}
    for svg in (confusion_svg(metrics, names, "counts"), confusion_svg(metrics, names, "all"), roc_svg(metrics, names),
                delta_bars_svg([(HOSTILE, 0.1), ("x\x07", -0.2)])):
        svg.encode("utf-8")  # no lone surrogate left
        root = _parsed(svg)
        assert any(HOSTILE in t for t in _texts(root))
        assert "\x1b" not in svg and "\u202e" not in svg and "\x00" not in svg
    cells = [n for n in _parsed(confusion_svg(metrics, names, "counts")).iter(f"{SVG}rect") if n.get("class") == "cell"]
    assert cells[0].get("data-true") == HOSTILE


def test_roc_draws_a_curve_per_label_with_its_auc():
    metrics = copy.deepcopy(METRICS)
    metrics["roc_auc"]["1"] = {"fpr": [0, 0, 0.5, 1], "tpr": [0, 0.5, 1, 1], "auc": 0.875}
    metrics["roc_auc"]["2"]["auc"] = None  # a label without positives has no curve
    root = _parsed(roc_svg(metrics, {"1": "one"}))
    lines = [n for n in root.iter(f"{SVG}polyline")]
    assert [n.get("data-label") for n in lines] == ["0", "1"]
    assert lines[1].get("points") == "56,376 56,196 236,16 416,16"
    assert "1 one (AUC 0.875)" in _texts(root)


def test_a_curve_of_non_numbers_is_not_drawn():
    curves = {"0": {"fpr": ["a", "b"], "tpr": [0, 1], "auc": 0.5}, "1": {"fpr": [0, 1], "tpr": [0, 1], "auc": 0.5}}
    lines = list(_parsed(roc_svg({"roc_auc": curves}, {})).iter(f"{SVG}polyline"))
    assert [n.get("points") for n in lines] == ["", "56,376 416,16"]


def test_a_long_curve_is_drawn_with_few_points_and_curves_are_bounded():
    rng = np.random.default_rng(0)
    fpr, tpr = np.sort(rng.random(50_000)), np.sort(rng.random(50_000))
    curves = {str(i): {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": 0.5} for i in range(MAX_CURVES + 5)}
    root = _parsed(roc_svg({"roc_auc": curves}, {}))
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == MAX_CURVES and len(lines[0].get("points").split()) < 2000
    assert "5 more labels not drawn" in _texts(root)


@pytest.mark.parametrize("metrics", [{}, {"roc_auc": {}}, {"roc_auc": {"0": {"fpr": [], "tpr": [], "auc": None}}},
                                     {"roc_auc": {"0": {"fpr": "01", "tpr": "01", "auc": 0.5}}},
                                     {"roc_auc": {"0": {"fpr": [0, 1], "tpr": [0], "auc": 0.5}}}])
def test_roc_without_curves_is_empty(metrics):
    assert roc_svg(metrics, {}) == ""


def test_delta_bars_are_coloured_by_sign_and_scaled_to_the_largest():
    root = _parsed(delta_bars_svg([("a", 0.2), ("b", -0.1), ("c", None), ("d", float("nan"))]))
    bars = [n for n in root.iter(f"{SVG}rect") if n.get("class") == "delta"]
    assert [(b.get("fill"), float(b.get("width"))) for b in bars] == [("#2ca02c", 150.0), ("#d62728", 75.0)]
    assert float(bars[1].get("x")) + 75 == float(bars[0].get("x"))
    assert "+0.2000" in _texts(root) and "-0.1000" in _texts(root) and _texts(root).count("\u2013") == 2


@pytest.mark.parametrize("rows", [[], [("a", None)], [("a", float("inf"))]])
def test_delta_bars_without_deltas_are_empty(rows):
    assert delta_bars_svg(rows) == ""
