"""A generated run folder of any size (run.json, metrics.json, results.jsonl as the evaluator writes them), for the
console's record browser and its timings: labels ``i % n_labels``, predictions right for 80% of the records,
scores on every record but some, and a few failed records."""

from __future__ import annotations

import copy
import random
from pathlib import Path

from tests.helpers.run_folders import METRICS, RUN, write_run


def large_results(count: int, n_labels: int = 10, *, seed: int = 0, failed_every: int = 0,
                  unscored_every: int = 0, wrap: bool = True) -> list[dict]:
    """``count`` results lines; every ``failed_every``-th record failed, every ``unscored_every``-th has no
    scores (0: none); ``wrap`` writes labels and results as one-element lists, as the CIFAR-10 handler does."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        if failed_every and i % failed_every == failed_every - 1:
            lines.append({"index": i, "error": f"record {i}: boom"})
            continue
        label = i % n_labels
        pred = label if rng.random() < 0.8 else rng.randrange(n_labels)
        scores = [rng.random() for _ in range(n_labels)]
        scores[pred] += 2.0
        line = {"index": i, "label": [label] if wrap else label, "result": [pred] if wrap else pred,
                "pr": [scores] if wrap else scores, "error": None}
        if unscored_every and i % unscored_every == unscored_every - 1:
            line["pr"] = None
        lines.append(line)
    return lines


def large_metrics(results: list[dict], n_labels: int = 10, names: dict | None = None) -> dict:
    """A metrics.json of the right shape for ``results`` (counts computed, the other numbers made up)."""
    counts = [[0] * n_labels for _ in range(n_labels)]
    for r in results:
        if r.get("error") is None:
            flat = [v[0] if isinstance(v, list) else v for v in (r["label"], r["result"])]
            counts[flat[0]][flat[1]] += 1
    metrics = copy.deepcopy(METRICS)
    labels = [str(i) for i in range(n_labels)]
    metrics.update(record_count=len(results), all_labels=list(range(n_labels)),
                   labels={key: {"precision": 0.8, "recall": 0.8, "f1-score": 0.8, "support": 1} for key in labels},
                   confusion_matrix={"normalize": None, "counts": counts},
                   roc_auc={key: {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.7, 1.0], "auc": 0.8} for key in labels})
    return metrics


def write_large_run(folder: Path, count: int, n_labels: int = 10, *, names: dict | None = None,
                    dataset: tuple[str, str] | None = None, **options) -> Path:
    """A run folder of ``count`` generated records (see :func:`large_results` for ``options``)."""
    results = large_results(count, n_labels, **options)
    run = copy.deepcopy(RUN)
    run["records"] = {"total": count, "ok": sum(r.get("error") is None for r in results),
                      "failed": sum(r.get("error") is not None for r in results)}
    if names:
        run["dataset"]["label_names"] = names
    if dataset:
        run["dataset"].update(name=dataset[0], version=dataset[1])
    return write_run(folder, run=run, metrics=large_metrics(results, n_labels), results=results)
