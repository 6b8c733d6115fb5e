"""@multi_classification must agree with scikit-learn computed independently on the same predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from builder.api.metric import compute_multi_classification, multi_classification
from builder.errors import EvalError


def predictions(n=600, k=10, seed=0, skill=1.5):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y_true] += skill
    return y_true.tolist(), logits.argmax(1).tolist(), np.exp(logits)  # raw exp(logits), like the seed


def check_against_sklearn(doc, y_true, y_pred, scores, labels, normalize="all"):
    report = skm.classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0.0)
    assert doc["summary"]["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    for avg in ("macro avg", "weighted avg"):
        for key in ("precision", "recall", "f1-score", "support"):
            assert doc["summary"][avg][key] == pytest.approx(report[avg][key], abs=1e-12)
    for label in labels:
        for key in ("precision", "recall", "f1-score", "support"):
            assert doc["labels"][str(label)][key] == pytest.approx(report[str(label)][key], abs=1e-12)
    assert doc["summary"]["hamming_loss"] == pytest.approx(skm.hamming_loss(y_true, y_pred), abs=1e-12)
    kappa = skm.cohen_kappa_score(y_true, y_pred)
    assert doc["summary"]["cohen_kappa_score"] == (None if np.isnan(kappa) else pytest.approx(kappa, abs=1e-12))
    assert doc["confusion_matrix"]["counts"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    np.testing.assert_allclose(
        doc["confusion_matrix"]["binarylabel"], skm.confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize), atol=1e-12
    )
    onehot = label_binarize(y_true, classes=labels)
    if len(labels) == 2:
        onehot = np.hstack([1 - onehot, onehot])
    present = [i for i in range(len(labels)) if 0 < onehot[:, i].sum() < len(y_true)]
    for i, label in enumerate(labels):
        auc = doc["labels"][str(label)]["auc"]
        if i in present:
            assert auc == pytest.approx(skm.roc_auc_score(onehot[:, i], scores[:, i]), abs=1e-12)
            fpr, tpr, thr = skm.roc_curve(onehot[:, i], scores[:, i])
            assert doc["roc_auc"][str(label)]["fpr"] == fpr.tolist() and doc["roc_auc"][str(label)]["tpr"] == tpr.tolist()
            assert doc["roc_auc"][str(label)]["thresholds"] == [t if np.isfinite(t) else None for t in thr.tolist()]
        else:
            assert auc is None
    if present:
        macro = skm.roc_auc_score(onehot[:, present], scores[:, present], average="macro")
        assert doc["summary"]["roc_auc"] == pytest.approx(macro, abs=1e-12)
    else:
        assert doc["summary"]["roc_auc"] is None


def test_balanced_ten_classes_with_raw_scores():
    y_true, y_pred, scores = predictions()
    labels = list(range(10))
    doc = compute_multi_classification(y_true, y_pred, scores, all_labels=labels)
    check_against_sklearn(doc, y_true, y_pred, scores, labels)
    assert doc["kind"] == "multi_classification" and doc["record_count"] == 600 and doc["all_labels"] == labels
    json.dumps(doc, allow_nan=False)


def test_imbalanced_with_a_label_never_predicted_and_one_absent():
    y_true, y_pred, scores = predictions(n=300, k=4, seed=3)
    y_true = [0 if t == 3 else t for t in y_true]  # label 3 never true
    y_pred = [1 if p == 2 else p for p in y_pred]  # label 2 never predicted
    labels = [0, 1, 2, 3]
    doc = compute_multi_classification(y_true, y_pred, scores, all_labels=labels)
    check_against_sklearn(doc, y_true, y_pred, scores, labels)
    assert doc["labels"]["3"]["auc"] is None and doc["roc_auc"]["3"]["fpr"] == []
    assert doc["labels"]["2"]["precision"] == 0.0
    json.dumps(doc, allow_nan=False)


def test_string_labels_and_binary_case():
    y_true, y_pred, scores = predictions(n=200, k=2, seed=5)
    names = ["cat", "dog"]
    doc = compute_multi_classification([names[t] for t in y_true], [names[p] for p in y_pred], scores, all_labels=names)
    check_against_sklearn(doc, [names[t] for t in y_true], [names[p] for p in y_pred], scores, names)
    assert set(doc["labels"]) == {"cat", "dog"}


@pytest.mark.parametrize("normalize", [None, "true", "pred", "all"])
def test_normalize_modes(normalize):
    y_true, y_pred, scores = predictions(n=120, k=3, seed=7)
    doc = compute_multi_classification(y_true, y_pred, scores, all_labels=[0, 1, 2], confusion_matrix_normalize=normalize)
    check_against_sklearn(doc, y_true, y_pred, scores, [0, 1, 2], normalize=normalize)
    assert doc["confusion_matrix"]["normalize"] == normalize


def test_flags_off_remove_their_keys():
    y_true, y_pred, scores = predictions(n=50, k=3)
    doc = compute_multi_classification(
        y_true, y_pred, scores, all_labels=[0, 1, 2], show_hamming_loss=False, show_cohen_kappa_score=False, show_roc_auc=False
    )
    assert "hamming_loss" not in doc["summary"] and "cohen_kappa_score" not in doc["summary"]
    assert "roc_auc" not in doc and "roc_auc" not in doc["summary"] and "auc" not in doc["labels"]["0"]


def test_subset_of_labels_reports_micro_avg_and_still_has_accuracy():
    y_true, y_pred, scores = [0, 1, 2, 2, 1], [0, 2, 2, 1, 1], None
    doc = compute_multi_classification(y_true, y_pred, scores, all_labels=[1, 2], show_roc_auc=False)
    assert "micro avg" in doc["summary"]
    assert doc["summary"]["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))


class SeedHandler:
    """The seed's cmp body, verbatim, fed the per-record shapes the runner stores for a batch of one."""

    def __init__(self, rows):
        self.rows = rows

    @multi_classification(confusion_matrix_normalize="all", show_hamming_loss=True, show_cohen_kappa_score=True,
                          show_roc_auc=True, all_labels=[i for i in range(0, 10)])
    def cmp(self, _data_loader):
        """Seed cmp."""
        _result, _label, _pr = [], [], []
        for _data in _data_loader:
            _label.extend([int(l) for l in _data["label"]])
            _result.extend([int(l) for l in _data["result"]])
            _pr.extend([l for l in _data["pr"]])
        return _label, _result, _pr


def test_seed_cmp_body_works_unchanged_and_keeps_its_name():
    y_true, y_pred, scores = predictions(n=200)
    rows = [{"label": [t], "result": [p], "pr": [s.tolist()]} for t, p, s in zip(y_true, y_pred, scores)]
    handler = SeedHandler(rows)
    doc = handler.cmp(rows)
    check_against_sklearn(doc, y_true, y_pred, scores, list(range(10)))
    assert SeedHandler.cmp.__name__ == "cmp" and SeedHandler.cmp.__doc__ == "Seed cmp."


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (([], [], []), "no records to score"),
        (([0, 1], [0], None), "2 labels but 1 results"),
        (([0, 1], [0, 1], [[0.1, 0.9], [0.2]]), "record 1: probability row has 1 scores"),
    ],
)
def test_bad_inputs_raise_eval_errors(args, words):
    with pytest.raises(EvalError, match=words):
        compute_multi_classification(*args, all_labels=[0, 1])


def test_roc_needs_all_labels():
    with pytest.raises(EvalError, match="needs all_labels"):
        compute_multi_classification([0, 1], [0, 1], [[1, 0], [0, 1]])


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.lists(st.floats(0.001, 1000), min_size=4, max_size=4)),
                  min_size=2, max_size=60)
)
def test_property_agrees_with_sklearn(data):
    y_true = [d[0] for d in data]
    y_pred = [d[1] for d in data]
    scores = np.array([d[2] for d in data])
    doc = compute_multi_classification(y_true, y_pred, scores, all_labels=[0, 1, 2, 3])
    check_against_sklearn(doc, y_true, y_pred, scores, [0, 1, 2, 3])
