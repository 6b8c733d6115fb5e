"""Evaluation runs: the history under ``$SWCLI_HOME/runs``, looking one up, comparing two, CI gates.

Every evaluation writes a run folder (metrics.json, results.jsonl, run.json). Runs written elsewhere
(``--output DIR``, ``swcli job run -o DIR``) are recorded by a symlink in ``runs/``, so ``swcli eval list``
sees every evaluation wherever its files went.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from builder.errors import SwcliError
from builder.store import Store

RUN_FILES = ("run.json", "metrics.json", "results.jsonl")


class RunError(SwcliError):
    """A run is unknown, incomplete or unreadable, or two runs cannot be compared."""


class GateFailed(SwcliError):
    """A metric is below the bound `--fail-under` asked for."""

    exit_code = 2


@dataclass(frozen=True)
class Run:
    id: str
    path: Path
    run: dict
    metrics: dict

    @property
    def summary(self) -> dict:
        return self.metrics.get("summary") or {}

    @property
    def dataset(self) -> dict:
        return self.run.get("dataset") or {}

    def results(self) -> Iterator[dict]:
        path = self.path / "results.jsonl"
        try:
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, 1):
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise RunError(f"{path}:{number}: not a JSON line") from None
        except FileNotFoundError:
            raise RunError(f"{path} is missing") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{path} is unreadable: {err}") from None


def load_run(path: Path, run_id: str | None = None) -> Run:
    path = Path(path)
    return Run(run_id or path.name, path, _read_json(path / "run.json"), _read_json(path / "metrics.json"))


def record_run(output_dir: Path, store: Store | None = None) -> str:
    """Link an output folder written outside the store into ``runs/``; returns the run id."""
    store = store or Store()
    output_dir = Path(output_dir).resolve()
    runs = store.runs_dir.resolve()
    if output_dir.parent == runs:
        return output_dir.name
    runs.mkdir(parents=True, exist_ok=True)
    run = _read_json(output_dir / "run.json")
    stamp = str(run.get("started", "")).replace(":", "").replace("-", "").replace("+0000", "")[:15]
    run_id = f"{stamp}-{output_dir.name}"
    link = runs / run_id
    if not link.exists():
        os.symlink(output_dir, link)
    return run_id


def list_runs(store: Store | None = None) -> list[Run]:
    """Every readable run, newest first; dangling links and half-written folders are skipped."""
    store = store or Store()
    out = []
    if store.runs_dir.is_dir():
        for path in store.runs_dir.iterdir():
            if (path / "run.json").is_file() and (path / "metrics.json").is_file():
                try:
                    out.append(load_run(path))
                except RunError:
                    continue
    out.sort(key=lambda r: (str(r.run.get("started", "")), r.id), reverse=True)
    return out


def resolve_run(ref: str, store: Store | None = None) -> Run:
    """A run by id, unique id prefix, ``latest``, or the path of a run folder."""
    store = store or Store()
    path = Path(ref).expanduser()
    if (path / "run.json").is_file():
        return load_run(path)
    if ref != "latest" and (store.runs_dir / ref).exists():
        return load_run(store.runs_dir / ref)
    runs = list_runs(store)
    if ref == "latest" and runs:
        return runs[0]
    matches = [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunError(f"no run matches '{ref}'" + ("" if runs else f"; {store.runs_dir} holds no runs"))
    raise RunError(f"'{ref}' is ambiguous: {', '.join(r.id for r in matches[:5])}")


def remove_run(ref: str, store: Store | None = None) -> Run:
    store = store or Store()
    run = resolve_run(ref, store)
    link = store.runs_dir / run.id
    if link.is_symlink():
        link.unlink()  # a recorded outside folder: forget it, keep the user's files
    else:
        shutil.rmtree(run.path)
    return run


def flat(value: Any) -> Any:
    """The seed stores one-element lists per record; comparisons want the element."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


# ------------------------------------------------------------------------------------------------- gates

GATE_KEYS = {
    "accuracy": ("accuracy", None),
    "hamming_loss": ("hamming_loss", None),
    "cohen_kappa": ("cohen_kappa_score", None),
    "roc_auc": ("roc_auc", None),
    **{f"{avg}-{m}": (f"{avg} avg", key) for avg in ("macro", "weighted")
       for m, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"))},
}


def metric_value(metrics: dict, key: str) -> float | None:
    if key not in GATE_KEYS:
        raise RunError(f"unknown metric '{key}' for --fail-under; known: {', '.join(GATE_KEYS)}")
    outer, inner = GATE_KEYS[key]
    value = (metrics.get("summary") or {}).get(outer)
    return value.get(inner) if inner and isinstance(value, dict) else value


def check_gates(run: Run, gates: list[str]) -> list[str]:
    """``["accuracy=0.6", ...]``: raises GateFailed naming every metric below its bound; returns what passed."""
    failures, passed = [], []
    for gate in gates:
        key, sep, bound = gate.partition("=")
        try:
            limit = float(bound)
        except ValueError:
            raise RunError(f"--fail-under takes METRIC=NUMBER, got '{gate}'") from None
        if not sep:
            raise RunError(f"--fail-under takes METRIC=NUMBER, got '{gate}'")
        value = metric_value(run.metrics, key.strip())
        (failures if value is None or value < limit else passed).append(f"{key.strip()} {value if value is None else round(value, 4)} (bound {limit})")
    if failures:
        raise GateFailed(f"run {run.id}: below the bound: {'; '.join(failures)}")
    return passed


# -------------------------------------------------------------------------------------------------- diff


def diff_runs(a: Run, b: Run, *, max_records: int = 20) -> dict:
    """Metric-by-metric and label-by-label deltas (b - a), and the records that flipped between right and wrong."""
    if (a.dataset.get("name"), a.dataset.get("version")) != (b.dataset.get("name"), b.dataset.get("version")):
        raise RunError(
            f"runs {a.id} and {b.id} evaluated different datasets "
            f"({a.dataset.get('name')}:{str(a.dataset.get('version'))[:12]} vs {b.dataset.get('name')}:{str(b.dataset.get('version'))[:12]}); "
            "a diff compares two models on the same dataset"
        )
    summary = {}
    for key in GATE_KEYS:
        va, vb = metric_value(a.metrics, key), metric_value(b.metrics, key)
        if va is not None or vb is not None:
            summary[key] = {"a": va, "b": vb, "delta": (vb - va) if va is not None and vb is not None else None}
    labels = {}
    for label in sorted(set(a.metrics.get("labels", {})) | set(b.metrics.get("labels", {})), key=str):
        la, lb = a.metrics.get("labels", {}).get(label, {}), b.metrics.get("labels", {}).get(label, {})
        labels[label] = {m: {"a": la.get(m), "b": lb.get(m),
                             "delta": (lb[m] - la[m]) if isinstance(la.get(m), (int, float)) and isinstance(lb.get(m), (int, float)) else None}
                         for m in ("precision", "recall", "f1-score", "auc") if m in la or m in lb}
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
    return {
        "a": {"id": a.id, "model": a.run.get("model")},
        "b": {"id": b.id, "model": b.run.get("model")},
        "dataset": a.dataset,
        "summary": summary,
        "labels": labels,
        "flipped": {"wrong_to_right": len(fixed), "right_to_wrong": len(broken),
                    "wrong_to_right_indices": fixed[:max_records], "right_to_wrong_indices": broken[:max_records]},
    }
