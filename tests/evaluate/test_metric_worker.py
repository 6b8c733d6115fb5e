"""The scoring helper process: the same metrics as in-process, the same errors, and no way to lose a run.

Every test starts a real helper (``python -m builder.evaluate.runner.metric_worker``, which imports scikit-learn).
"""

from __future__ import annotations

import json
import random
import sys

import pytest

from builder.evaluate.runner import metric_worker
from builder.api.metric import compute_multi_classification, multi_classification
from builder.evaluate.runner.metric_worker import MetricWorker, scoring_helper
from builder.errors import EvalError

OPTIONS = dict(confusion_matrix_normalize="all", show_hamming_loss=True, show_cohen_kappa_score=True,
               show_roc_auc=True, all_labels=list(range(10)))


def predictions(n: int = 2000, seed: int = 7):
    rng = random.Random(seed)
    y_true = [rng.randrange(10) for _ in range(n)]
    y_pred = [t if rng.random() < 0.6 else rng.randrange(10) for t in y_true]
    y_pr = []
    for p in y_pred:
        row = [rng.random() for _ in range(10)]
        row[p] += 2
        y_pr.append([v / sum(row) for v in row])
    return y_true, y_pred, y_pr


@pytest.fixture()
def helper(monkeypatch):
    worker = MetricWorker(["sklearn.metrics"])
    monkeypatch.setattr(metric_worker, "_ACTIVE", worker)
    yield worker
    worker.close()


class Scored:
    def __init__(self, rows):
        self.rows = rows

    @multi_classification(**OPTIONS)
    def cmp(self, _loader):
        return tuple(self.rows)


def test_the_helper_computes_the_same_document_byte_for_byte(helper):
    y_true, y_pred, y_pr = predictions()
    here = compute_multi_classification(y_true, y_pred, y_pr, **OPTIONS)
    there = helper.compute(y_true, y_pred, y_pr, OPTIONS)
    assert json.dumps(there, sort_keys=True) == json.dumps(here, sort_keys=True)
    # through the decorator, as cmp calls it (iterators are read once and sent as lists)
    rows = (iter(y_true), iter(y_pred), iter(y_pr))
    assert json.dumps(Scored(rows).cmp(None), sort_keys=True) == json.dumps(here, sort_keys=True)
    assert helper.proc is not None and helper.proc.poll() is None  # still serving


def test_an_eval_error_in_the_helper_is_the_same_one_line(helper):
    y_true, y_pred, y_pr = predictions(50)
    y_pr[17] = y_pr[17][:9]
    with pytest.raises(EvalError) as here:
        compute_multi_classification(y_true, y_pred, y_pr, **OPTIONS)
    with pytest.raises(EvalError) as there:
        Scored((y_true, y_pred, y_pr)).cmp(None)
    assert str(there.value) == str(here.value) == "record 17: probability row has 9 scores, all_labels has 10"


def test_other_errors_are_raised_by_the_in_process_path_with_their_own_type(helper):
    # mixed label types: scikit-learn raises; the helper only says it failed, and the decorator's in-process
    # computation raises the real exception, as it would without a helper
    y_true, y_pred = [0, "a", 1], [0, 1, "a"]
    assert helper.compute(y_true, y_pred, None, dict(OPTIONS, show_roc_auc=False)) is None
    with pytest.raises(TypeError):
        Scored((y_true, y_pred)).cmp(None)


def test_a_dead_helper_or_values_that_do_not_pickle_fall_back_in_process(helper):
    y_true, y_pred, y_pr = predictions(300)
    expected = compute_multi_classification(y_true, y_pred, y_pr, **OPTIONS)
    unpicklable = [lambda: 0]
    assert helper.compute(unpicklable, unpicklable, None, OPTIONS) is None
    helper.proc.kill()
    helper.proc.wait()
    assert helper.compute(y_true, y_pred, y_pr, OPTIONS) is None
    assert Scored((y_true, y_pred, y_pr)).cmp(None) == expected


def test_an_import_that_fails_or_prints_does_not_break_scoring(tmp_path, monkeypatch):
    (tmp_path / "noisy_metrics_dep.py").write_text("print('a line on stdout, not a reply')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    noisy = MetricWorker(["noisy_metrics_dep", "sklearn.metrics"])
    broken = MetricWorker(["builder_no_such_module"])
    try:
        y_true, y_pred, y_pr = predictions(200)
        expected = compute_multi_classification(y_true, y_pred, y_pr, **OPTIONS)
        assert noisy.compute(y_true, y_pred, y_pr, OPTIONS) == expected
        assert broken.compute(y_true, y_pred, y_pr, OPTIONS) is None  # it exited: compute in-process
    finally:
        noisy.close()
        broken.close()


def test_no_helper_when_the_modules_are_loaded_already_and_close_is_idempotent():
    import sklearn.metrics  # noqa: F401  (as after any in-process cmp, or a handler that imports it itself)

    assert "sklearn.metrics" in sys.modules
    with scoring_helper(["sklearn.metrics"]) as worker:
        assert worker is None and metric_worker.active() is None
    with scoring_helper([]) as worker:
        assert worker is None
    with scoring_helper(["json_no_such_module_either"]) as worker:
        assert worker is not None and metric_worker.active() is worker
    assert metric_worker.active() is None and worker.proc is None
    worker.close()


def test_a_helper_already_importing_the_modules_is_taken_over_not_doubled():
    if "tabnanny" in sys.modules:
        pytest.skip("tabnanny is loaded here already")  # a module not loaded here yet, cheap to import
    with scoring_helper(["tabnanny"]) as early:
        assert early is not None and metric_worker.active() is early
        with scoring_helper(["tabnanny"]) as again:  # the run's own request: the early helper serves it
            assert again is early
        assert metric_worker.active() is early and early.proc is not None  # the inner block did not close it
    assert metric_worker.active() is None and early.proc is None


def test_cmp_imports_are_guessed_from_the_handler_source_before_it_is_imported(tmp_path):
    from builder.api.metric import IMPORTS, imports_named_in
    from builder.loader import module_source

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "ppl.py").write_text("from builder.api.metric import multi_classification\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("class H: pass\n")
    assert imports_named_in(module_source("code.ppl:H", tmp_path)) == IMPORTS
    assert imports_named_in(module_source("pkg:H", tmp_path)) == ()
    assert module_source("missing.mod:H", tmp_path) == ""
    assert module_source("../etc:H", tmp_path) == ""  # not a module name: nothing is read
