"""`swcli eval diff`: two runs over one dataset, metric by metric, label by label, and the records that flipped."""

from __future__ import annotations

from builder.runs.gates import GATE_KEYS, metric_value
from builder.runs.history import Run, flat
from builder.runs.schema import RunError


def diff_runs(a: Run, b: Run, *, max_records: int = 20) -> dict:
    """Metric-by-metric and label-by-label deltas (b - a), and the records that flipped between right and wrong."""
    out = metric_deltas(a, b)
    right_a = {r["index"]: flat(r["result"]) == flat(r["label"]) for r in a.results() if r.get("error") is None}
    fixed, broken = [], []
    for r in b.results():
        if r.get("error") is not None or r["index"] not in right_a:
            continue
        now = flat(r["result"]) == flat(r["label"])
        if now and not right_a[r["index"]]:
            fixed.append(r["index"])
        elif right_a[r["index"]] and not now:
            broken.append(r["index"])
    out["flipped"] = {"wrong_to_right": len(fixed), "right_to_wrong": len(broken),
                      "wrong_to_right_indices": fixed[:max_records], "right_to_wrong_indices": broken[:max_records]}
    return out


def check_same_dataset(a: Run, b: Run) -> None:
    """A RunError unless both runs evaluated one dataset (name and version): what a diff, a compare, the flipped
    records and a gate need."""
    if (a.dataset.get("name"), a.dataset.get("version")) != (b.dataset.get("name"), b.dataset.get("version")):
        raise RunError(
            f"runs {a.id} and {b.id} evaluated different datasets "
            f"({a.dataset.get('name')}:{str(a.dataset.get('version'))[:12]} vs {b.dataset.get('name')}:{str(b.dataset.get('version'))[:12]}); "
            "a diff compares two models on the same dataset"
        )


def metric_deltas(a: Run, b: Run) -> dict:
    """:func:`diff_runs` without the records: the deltas (b - a) of the headline metrics and of each label's, from
    the two metrics.json alone (the console counts flips from its own record tables)."""
    check_same_dataset(a, b)
    summary = {}
    for key in GATE_KEYS:
        va, vb = metric_value(a.metrics, key), metric_value(b.metrics, key)
        if va is not None or vb is not None:
            summary[key] = {"a": va, "b": vb, "delta": (vb - va) if va is not None and vb is not None else None}
    labels = {}
    labels_a, labels_b = a.metrics.get("labels") or {}, b.metrics.get("labels") or {}
    for label in sorted(set(labels_a) | set(labels_b), key=str):
        la, lb = labels_a.get(label, {}), labels_b.get(label, {})
        labels[label] = {m: {"a": la.get(m), "b": lb.get(m),
                             "delta": (lb[m] - la[m]) if isinstance(la.get(m), (int, float)) and isinstance(lb.get(m), (int, float)) else None}
                         for m in ("precision", "recall", "f1-score", "auc") if m in la or m in lb}
    return {
        "a": {"id": a.id, "model": a.run.get("model")},
        "b": {"id": b.id, "model": b.run.get("model")},
        "dataset": a.dataset,
        "label_names": {**b.label_names, **a.label_names},
        "summary": summary,
        "labels": labels,
    }
