"""The evaluations table's rows: one summary per run of the history, re-read only when its files change.

The history is read the way `swcli eval list` reads it (:func:`builder.runs.history.scan_runs`: every file bounded and
shape-checked); what the table needs of each run is kept by (run.json, metrics.json) stat, so a page of 1,000 runs
parses nothing that did not change since the last one.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime

from builder.files import stat_key
from builder.runs.folder import METRICS, RUN
from builder.runs.gates import GATE_KEYS, metric_value
from builder.runs.history import Run, load_run, run_id_problem
from builder.runs.schema import RunError
from builder.store import Store

def _duration(run: dict) -> float | None:
    """Seconds from run.json's ``started`` to ``finished``; None when either is missing or not a timestamp."""
    try:
        start, end = (datetime.fromisoformat(str(run[k]).replace("Z", "+00:00")) for k in ("started", "finished"))
        return round((end - start).total_seconds(), 2)
    except (KeyError, ValueError, TypeError):
        return None


def summary(run: Run) -> dict:
    """What the evaluations table and ``GET /api/runs`` show of one run."""
    meta, model = run.run, run.run.get("model") or {}
    records = meta.get("records") or {}
    return {
        "id": run.id,
        "model": model.get("name") if isinstance(model, dict) else str(model),
        "model_version": model.get("version") if isinstance(model, dict) else None,
        "dataset": run.dataset.get("name"),
        "dataset_version": run.dataset.get("version"),
        "status": meta.get("status"),
        "started": meta.get("started"),
        "finished": meta.get("finished"),
        "duration": _duration(meta),
        "records": records.get("ok") if isinstance(records, dict) else None,
        "metrics": {k: v for k in GATE_KEYS if (v := metric_value(run.metrics, k)) is not None},
    }


class RunIndex:
    """Summaries of the store's runs, newest first; unreadable runs are named in :attr:`problems`."""

    def __init__(self, store: Store):
        self.store = store
        self.scanning = threading.Lock()  # one scan at a time: a page asked for during the start-up scan waits for it
        self.cache: dict[str, tuple[tuple, dict]] = {}  # run id -> (stats, summary); read and replaced under scanning
        self.problems: list[str] = []

    def rows(self) -> list[dict]:
        with self.scanning:
            return self._rows()

    def _rows(self) -> list[dict]:
        runs_dir = self.store.runs_dir
        try:
            names = sorted(os.listdir(runs_dir)) if runs_dir.is_dir() else []
        except OSError as err:
            return self._set([], [f"{runs_dir}: cannot list: {err.strerror or err}"])
        rows, problems, keep = [], [], {}
        for name in names:
            if name.startswith(".") or run_id_problem(name):
                continue
            path = runs_dir / name
            stats = (stat_key(path / RUN), stat_key(path / METRICS))
            if stats[0] is None or stats[1] is None:
                continue  # running, or failed before metrics: not listed, as in `eval list`
            cached = self.cache.get(name)
            if cached is None or cached[0] != stats:
                try:
                    cached = (stats, summary(load_run(path, name)))
                except RunError as err:
                    problems.append(str(err))
                    continue
            keep[name] = cached
            rows.append(cached[1])
        rows.sort(key=lambda r: (str(r["started"] or ""), r["id"]), reverse=True)
        self.cache = keep
        return self._set(rows, problems)

    def _set(self, rows: list[dict], problems: list[str]) -> list[dict]:
        self.problems = problems
        return rows
