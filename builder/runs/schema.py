"""The shape checks of a run's files: every field a reader uses has the type it expects, or one RunError names the
file and the field (never a traceback deep in a table or a plot).

metrics.json (:func:`check_metrics`) and a results line (:func:`check_result`) are checked here; run.json's own
shape is :func:`builder.runs.folder.check_run`, with the rest of what the run folder is. The small type tests
(:func:`expect` and the predicates) are shared by both.
"""

from __future__ import annotations

from typing import Any, Callable

from builder.errors import SwcliError


class RunError(SwcliError):
    """A run is unknown, incomplete or unreadable, or two runs cannot be compared."""


def json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expect(where: str, field: str, value: Any, ok: Callable[[Any], bool], want: str, optional: bool = True) -> Any:
    if (value is None and optional) or ok(value):
        return value
    raise RunError(f"{where}: field '{field}': expected {want}, got {json_type(value)}")


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def number_or_null(value: Any) -> bool:
    return value is None or is_number(value)


def check_metrics(where: str, metrics: Any) -> dict:
    if not isinstance(metrics, dict):
        raise RunError(f"{where}: expected a JSON object, got {json_type(metrics)}")
    for key, value in (expect(where, "summary", metrics.get("summary"), is_object, "an object") or {}).items():
        if isinstance(value, dict):
            for inner, number in value.items():
                expect(where, f"summary.{key}.{inner}", number, number_or_null, "a number")
        else:
            expect(where, f"summary.{key}", value, number_or_null, "a number or an object")
    for label, value in (expect(where, "labels", metrics.get("labels"), is_object, "an object") or {}).items():
        expect(where, f"labels.{label}", value, is_object, "an object", optional=False)
        for key, number in value.items():
            expect(where, f"labels.{label}.{key}", number, number_or_null, "a number")
    all_labels = expect(where, "all_labels", metrics.get("all_labels"), lambda v: isinstance(v, list) and all(
        isinstance(x, str) or is_number(x) for x in v), "an array of labels")
    cm = expect(where, "confusion_matrix", metrics.get("confusion_matrix"), is_object, "an object") or {}
    counts = cm.get("counts")
    size = len(all_labels) if all_labels is not None else len(counts) if isinstance(counts, list) else 0
    expect(where, "confusion_matrix.counts", counts, lambda v: isinstance(v, list) and len(v) == size and all(
        isinstance(row, list) and len(row) == size and all(is_int(x) for x in row) for row in v),
        f"a {size}x{size} array of integer arrays (one row and column per label)")
    for label, curve in (expect(where, "roc_auc", metrics.get("roc_auc"), is_object, "an object") or {}).items():
        expect(where, f"roc_auc.{label}", curve, lambda v: isinstance(v, dict) and all(
            isinstance(v.get(k), list) and all(is_number(x) for x in v[k]) for k in ("fpr", "tpr"))
            and len(v["fpr"]) == len(v["tpr"]), "an object with fpr and tpr arrays of numbers, of one length",
            optional=False)
        expect(where, f"roc_auc.{label}.auc", curve.get("auc"), is_number, "a number")
    return metrics


def check_result(where: str, record: Any) -> dict:
    """One results.jsonl line: ``{index, label, result, pr, error}``."""
    if not isinstance(record, dict):
        raise RunError(f"{where}: expected a JSON object, got {json_type(record)}")
    expect(where, "index", record.get("index"), is_int, "an integer", optional=False)
    if expect(where, "error", record.get("error"), is_str, "a string or null") is None:
        missing = [key for key in ("label", "result") if key not in record]
        if missing:
            raise RunError(f"{where}: missing field '{missing[0]}' (a record without an error needs label and result)")
    return record
