"""CI gates over a run's metrics: `swcli eval show --fail-under accuracy=0.6`.

A gate names a headline metric by the key users type (:data:`GATE_KEYS`: ``accuracy``, ``macro-f1``, ...), which
maps to where metrics.json holds it; a run whose value is below the bound, or has none, fails with exit code 2.
The same keys name the metrics a diff compares and an attached evaluation's annotations carry, and the rules of
`swcli eval gate` (a candidate against a baseline: :mod:`builder.runs.gate_report`).
"""

from __future__ import annotations

from builder.errors import SwcliError, UsageError
from builder.runs.history import Run
from builder.runs.schema import RunError


class GateFailed(SwcliError):
    """A metric is below the bound `--fail-under` asked for."""

    exit_code = 2


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
            raise UsageError(f"--fail-under takes METRIC=NUMBER, got '{gate}'") from None
        if not sep:
            raise UsageError(f"--fail-under takes METRIC=NUMBER, got '{gate}'")
        value = metric_value(run.metrics, key.strip())
        (failures if value is None or value < limit else passed).append(f"{key.strip()} {value if value is None else round(value, 4)} (bound {limit})")
    if failures:
        raise GateFailed(f"run {run.id}: below the bound: {'; '.join(failures)}")
    return passed
