"""The metrics summary table printed after an evaluation."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from builder.cli._output import cell, console


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def print_summary(metrics: Any, run: dict) -> None:
    """Accuracy, averages and the extra scores when the document is a multi_classification one; counts otherwise."""
    records = run.get("records", {})
    secs = run.get("seconds", {})
    console.print(  # the handler's own numbers: printed as they are, never read as markup
        f"{records.get('ok')} records scored, {records.get('failed')} failed, "
        f"{run.get('records_per_second')} records/s (ppl phase {secs.get('ppl_phase')} s, cmp {secs.get('cmp')} s)", markup=False
    )
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    if not summary:
        return
    table = Table(title=cell(f"{metrics.get('kind', 'metrics')} summary"), title_justify="left")
    for col in ("metric", "precision", "recall", "f1-score", "value"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, value in summary.items():
        if isinstance(value, dict):
            table.add_row(cell(key), *(cell(_fmt(value.get(k))) for k in ("precision", "recall", "f1-score")), "")
        else:
            table.add_row(cell(key), "", "", "", cell(_fmt(value)))
    console.print(table)
