"""`/api/runs...` and `/api/compare...`: the history's evaluations, their records and thumbnails, as JSON.

Every handler is a plain function of the :class:`~builder.console.state.Console` and the request's parameters; the
routes in :mod:`builder.console.app` run them on a worker thread. A run is named by its full id, a record by its
index: no request names a file.
"""

from __future__ import annotations

from builder.console.runs_index import summary
from builder.console.state import Console, NotFound
from builder.errors import UsageError
from builder.console.api_jobs import body_fields
from builder.console.records import flipped as flips
from builder.runs.diff import check_same_dataset, metric_deltas
from builder.runs.history import Run

PAGE_MAX = 500


def runs(console: Console) -> dict:
    """Every run of the history, newest first, with its headline metrics; unreadable runs are named."""
    rows = console.runs.rows()
    return {"runs": rows, "problems": console.runs.problems}


def run(console: Console, run_id: str) -> dict:
    r = console.run(run_id)
    cm = r.metrics.get("confusion_matrix") or {}
    return {**summary(r), "path": str(r.path), "run": r.run, "summary": r.summary, "labels": r.metrics.get("labels") or {},
            "all_labels": r.metrics.get("all_labels") or [], "label_names": r.label_names,
            "confusion_matrix": {"counts": cm.get("counts"), "normalize": cm.get("normalize")}}


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got '{value[:40]}'") from None
    if not low <= number <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {number}")
    return number


def _row(r: Run, row: dict) -> dict:
    return {**row, "label_title": r.label_title(row["label"]), "pred_title": r.label_title(row["pred"]),
            "thumb": f"/api/runs/{r.id}/records/{row['index']}/thumb"}


def records(console: Console, run_id: str, params: dict) -> dict:
    """One page of a run's records: ``true``, ``pred`` (label keys), ``correct`` (right|wrong), ``sort`` (index,
    confidence, -confidence), ``offset``, ``limit`` (<= 500)."""
    r = console.run(run_id)
    correct = params.get("correct") or None
    if correct not in (None, "right", "wrong"):
        raise UsageError(f"correct must be right or wrong, got '{correct[:40]}'")
    offset = _int(params.get("offset"), "offset", 0, 0, 1 << 40)
    limit = _int(params.get("limit"), "limit", 200, 1, PAGE_MAX)
    table = console.records.get(r)
    try:
        total, rows = table.query(true=params.get("true") or None, pred=params.get("pred") or None,
                                  correct=None if correct is None else correct == "right",
                                  sort=params.get("sort") or "index", offset=offset, limit=limit)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return {"run": r.id, "total": total, "offset": offset, "limit": limit, "labels": table.labels,
            "label_names": r.label_names, "rows": [_row(r, row) for row in rows]}


def thumbnail(console: Console, run_id: str, index: int) -> tuple[bytes, str]:
    r = console.run(run_id)
    got = console.thumbs.get(str(r.dataset.get("name")), str(r.dataset.get("version")), index)
    if got is None:
        raise NotFound(f"no picture of record {index}: the dataset {r.dataset.get('name')} is not in this store, "
                       "or its records are not images")
    return got


def compare(console: Console, ids: list[str], baseline: str | None) -> dict:
    """Runs on one dataset against a pinned baseline (the first run unless ``baseline`` names another)."""
    if len(ids) < 2:
        raise UsageError("compare takes two runs or more (runs=A&runs=B)")
    if len(ids) > 12:
        raise UsageError(f"compare takes at most 12 runs, got {len(ids)}")
    base_id = baseline or ids[0]
    if base_id not in ids:
        raise UsageError(f"the baseline {base_id} is not one of the compared runs")
    base = console.run(base_id)
    others = [console.run(i) for i in ids if i != base_id]
    diffs = [metric_deltas(base, other) for other in others]
    base_table = console.records.get(base)
    counts = {}
    for other in others:
        found = flips(base_table, console.records.get(other))
        counts[other.id] = {kind: int(len(found[kind])) for kind in ("wrong_to_right", "right_to_wrong")}
    metrics = sorted({k for d in diffs for k in d["summary"]})
    rows = []
    for key in metrics:
        values = [d["summary"].get(key, {}) for d in diffs]
        base_value = next((v.get("a") for v in values if v.get("a") is not None), None)
        rows.append({"metric": key, "baseline": base_value,
                     "runs": [{"value": v.get("b"), "delta": v.get("delta")} for v in values],
                     "differs": any(v.get("delta") not in (None, 0, 0.0) for v in values)})
    labels = {}
    for d, other in zip(diffs, others):
        for label, deltas in d["labels"].items():
            labels.setdefault(label, {})[other.id] = {m: x.get("delta") for m, x in deltas.items()}
    return {"baseline": summary(base), "runs": [summary(o) for o in others], "metrics": rows, "labels": labels,
            "label_names": diffs[0]["label_names"] if diffs else base.label_names,
            "flipped": counts}


def flipped(console: Console, a: str, b: str, kind: str, params: dict) -> dict:
    """The records right in one run and wrong in the other (``kind``: right_to_wrong or wrong_to_right from a to b)."""
    if kind not in ("right_to_wrong", "wrong_to_right"):
        raise UsageError(f"kind must be right_to_wrong or wrong_to_right, got '{kind[:40]}'")
    ra, rb = console.run(a), console.run(b)
    check_same_dataset(ra, rb)
    offset = _int(params.get("offset"), "offset", 0, 0, 1 << 40)
    limit = _int(params.get("limit"), "limit", 100, 1, PAGE_MAX)
    ta, tb = console.records.get(ra), console.records.get(rb)
    indexes = flips(ta, tb)[kind]
    page = [int(i) for i in indexes[offset:offset + limit]]
    rows_a, rows_b = ta.rows_for(page), tb.rows_for(page)
    out = [{"index": i, "label_title": rb.label_title(row_b["label"]), "a_pred_title": ra.label_title(row_a["pred"]),
            "b_pred_title": rb.label_title(row_b["pred"]), "a_confidence": row_a["confidence"],
            "b_confidence": row_b["confidence"], "thumb": f"/api/runs/{rb.id}/records/{i}/thumb"}
           for i, row_a, row_b in zip(page, rows_a, rows_b)]
    return {"a": a, "b": b, "kind": kind, "total": int(len(indexes)), "offset": offset, "rows": out}


def attach(console: Console, run_id: str, body: object) -> dict:
    """``{"image": REGISTRY/REPO:TAG}``: `eval attach` of the run to its model image."""
    from builder.refs import image_ref_problem
    from builder.runs.attach import attach_run

    image = body_fields(body, {"image"}).get("image")
    r = console.run(run_id)
    problem = image_ref_problem(image) if isinstance(image, str) else "not a string"
    if problem:
        raise UsageError(f"image: {problem}")
    done = attach_run(r, image, client_for=console.clients())
    registry = done.repository.split("/", 1)[0]
    for view in console.registries:  # the next listing shows the new evaluation, not a cached one
        if view.registry == registry:
            view.forget()
    return {"repository": done.repository, "digest": done.digest, "subject": done.subject}
