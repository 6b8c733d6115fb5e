"""``@multi_classification``: turns ``cmp``'s (labels, results, scores) into the metrics document.

Every number comes from scikit-learn on the same predictions, so our metrics agree with an independent
computation by construction; the key names are Starwhale's (``summary.accuracy``, ``macro avg``,
``confusion_matrix.binarylabel``, ``roc_auc.<label>``) so existing readers keep working. The schema is in
``docs/metrics.md``.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, Optional, Sequence

from builder.errors import EvalError

KIND = "multi_classification"
IMPORTS = ("sklearn.metrics",)  # imported on first use only: a handler module loads without scikit-learn
# (the runner imports them in a helper process while ppl runs: builder.evaluate.runner.metric_worker)
NORMALIZE_MODES = (None, "true", "pred", "all")

# compute(y_true, y_pred, y_pr, options) -> the document, or None: compute it here after all
Compute = Callable[[list, list, Optional[list], dict], Optional[dict]]
_elsewhere: Callable[[], Optional[Compute]] = lambda: None  # noqa: E731


def compute_elsewhere(find: Callable[[], Optional[Compute]]) -> None:
    """For the runner, not for handlers: ``find()`` says where ``@multi_classification`` sends its predictions
    while a run scores (the runner's helper process, which imported scikit-learn while ppl ran:
    :mod:`builder.evaluate.runner.metric_worker`), or None to compute in this process. The SDK does not know the
    runner; the runner decides."""
    global _elsewhere
    _elsewhere = find


def imports_named_in(source: str) -> tuple[str, ...]:
    """What a handler module whose text is ``source`` will have cmp import, guessed before it is imported (and
    torch with it): :data:`IMPORTS` when it names ``multi_classification``. A wrong guess costs an import on an idle
    core; a missed one, the wait the runner's own helper would have had anyway."""
    return IMPORTS if KIND in source else ()


def _plain(obj: Any) -> Any:
    """numpy -> Python, NaN/inf -> None: the document must be strict JSON."""
    import numpy as np  # not with the module: a handler module that names the decorator loads without numpy

    def plain(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        if isinstance(obj, np.ndarray):
            return plain(obj.tolist())
        if isinstance(obj, np.generic):
            obj = obj.item()
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        return obj

    return plain(obj)


def _score_matrix(y_pr: Sequence, n_labels: int):
    import numpy as np

    rows = []
    for position, row in enumerate(y_pr):
        values = np.asarray(row, dtype=float).reshape(-1)
        if values.shape[0] != n_labels:
            raise EvalError(
                f"record {position}: probability row has {values.shape[0]} scores, all_labels has {n_labels}"
            )
        rows.append(values)
    return np.vstack(rows) if rows else np.empty((0, n_labels))


def roc_for_label(is_positive, scores) -> dict:
    """One-vs-rest ROC of one label (numpy arrays); AUC is null when the label has no positives or no negatives."""
    from sklearn.metrics import auc, roc_curve

    positives = int(is_positive.sum())
    if positives == 0 or positives == len(is_positive):
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": None}
    fpr, tpr, thresholds = roc_curve(is_positive, scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist(), "auc": float(auc(fpr, tpr))}


def compute_multi_classification(
    y_true: Sequence,
    y_pred: Sequence,
    y_pr: Sequence | None = None,
    *,
    confusion_matrix_normalize: str | None = "all",
    show_hamming_loss: bool = True,
    show_cohen_kappa_score: bool = True,
    show_roc_auc: bool = True,
    all_labels: Sequence | None = None,
) -> dict:
    """The metrics document for one set of predictions (see ``docs/metrics.md``)."""
    from sklearn.metrics import cohen_kappa_score, hamming_loss

    if confusion_matrix_normalize not in NORMALIZE_MODES:
        raise EvalError(f"confusion_matrix_normalize must be one of {NORMALIZE_MODES}, got {confusion_matrix_normalize!r}")
    y_true, y_pred = list(y_true), list(y_pred)
    if not y_true:
        raise EvalError("no records to score")
    if len(y_true) != len(y_pred):
        raise EvalError(f"cmp returned {len(y_true)} labels but {len(y_pred)} results")
    labels = list(all_labels) if all_labels is not None else sorted(set(y_true) | set(y_pred), key=str)

    with warnings.catch_warnings():
        # labels never predicted or absent are expected in small evaluations; sklearn's defaults (0.0) stand
        warnings.simplefilter("ignore")
        doc = _report(y_true, y_pred, labels)
        doc["confusion_matrix"] = _confusion(y_true, y_pred, labels, confusion_matrix_normalize)
        if show_hamming_loss:
            doc["summary"]["hamming_loss"] = float(hamming_loss(y_true, y_pred))
        if show_cohen_kappa_score:
            doc["summary"]["cohen_kappa_score"] = float(cohen_kappa_score(y_true, y_pred))

    if show_roc_auc and y_pr is not None:
        if all_labels is None:
            raise EvalError("show_roc_auc needs all_labels: the order of the score columns")
        _add_roc(doc, y_true, y_pr, labels)
    return _plain(doc)


def _report(y_true: list, y_pred: list, labels: list) -> dict:
    """The document's head: its kind and size, the summary (accuracy and the averages) and the per-label scores."""
    import numpy as np
    from sklearn.metrics import classification_report

    report = classification_report(y_true, y_pred, labels=labels, output_dict=True)
    doc: dict[str, Any] = {"kind": KIND, "record_count": len(y_true), "all_labels": labels, "summary": {}}
    for key in ("accuracy", "micro avg", "macro avg", "weighted avg"):
        if key in report:
            doc["summary"][key] = report.pop(key)
    if "accuracy" not in doc["summary"]:  # sklearn reports micro avg instead when labels is a subset
        doc["summary"]["accuracy"] = float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)))
    doc["labels"] = report
    return doc


def _confusion(y_true: list, y_pred: list, labels: list, normalize: str | None) -> dict:
    """The confusion matrix: normalized as asked (``binarylabel``), in counts, and one 2x2 per label."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    counts = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "normalize": normalize,
        "binarylabel": confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize).tolist(),
        "counts": counts.tolist(),
        "multilabel": multilabel_confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def _add_roc(doc: dict, y_true: list, y_pr: Sequence, labels: list) -> None:
    """One-vs-rest ROC curves per label (``roc_auc``), each label's AUC beside its scores, their mean in the
    summary; ``y_pr``'s columns are in the order of ``labels``."""
    import numpy as np

    scores = _score_matrix(y_pr, len(labels))
    if scores.shape[0] != len(y_true):
        raise EvalError(f"cmp returned {len(y_true)} labels but {scores.shape[0]} probability rows")
    truth = np.asarray(y_true, dtype=object)
    doc["roc_auc"] = {}
    aucs = []
    for idx, label in enumerate(labels):
        curve = roc_for_label((truth == label).astype(int), scores[:, idx])
        doc["roc_auc"][str(label)] = curve
        doc["labels"].setdefault(str(label), {})["auc"] = curve["auc"]
        if curve["auc"] is not None:
            aucs.append(curve["auc"])
    doc["summary"]["roc_auc"] = float(np.mean(aucs)) if aucs else None


def multi_classification(
    confusion_matrix_normalize: str | None = "all",
    show_hamming_loss: bool = True,
    show_cohen_kappa_score: bool = True,
    show_roc_auc: bool = True,
    all_labels: Sequence | None = None,
) -> Callable:
    """Decorate ``cmp``; it returns ``(labels, results, probabilities)`` (or two items without ROC)."""

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> dict:
            returned = func(*args, **kwargs)
            if not isinstance(returned, (tuple, list)) or len(returned) not in (2, 3):
                raise EvalError(
                    f"{func.__qualname__} must return (labels, results) or (labels, results, probabilities), "
                    f"got {type(returned).__name__}"
                )
            y_true, y_pred, y_pr = (*returned, None) if len(returned) == 2 else returned
            options = dict(
                confusion_matrix_normalize=confusion_matrix_normalize,
                show_hamming_loss=show_hamming_loss,
                show_cohen_kappa_score=show_cohen_kappa_score,
                show_roc_auc=show_roc_auc,
                all_labels=all_labels,
            )
            y_pr = y_pr if show_roc_auc else None
            compute = _elsewhere()  # the runner's helper process, which imported scikit-learn during ppl
            if compute is not None:
                y_true, y_pred = list(y_true), list(y_pred)  # they may be iterators: read them once
                y_pr = None if y_pr is None else list(y_pr)
                doc = compute(y_true, y_pred, y_pr, options)
                if doc is not None:
                    return doc
            return compute_multi_classification(y_true, y_pred, y_pr, **options)

        wrapper.imports = IMPORTS  # type: ignore[attr-defined]  # the runner loads them while ppl runs
        return wrapper

    return decorator
