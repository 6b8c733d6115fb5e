"""A run folder as the evaluator writes it (run.json, metrics.json, results.jsonl), written without evaluating:
for the run history, its displays and the hostile-input tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

RUN = {"kind": "eval", "status": "succeeded", "model": {"name": "net", "version": "v1"}, "handler": "h:Handler",
       "dataset": {"name": "cifar", "version": "abcdabcdabcd"}, "records": {"total": 4, "ok": 4, "failed": 0},
       "started": "2026-01-01T00:00:00.000000+00:00"}
METRICS = {
    "kind": "multi_classification", "record_count": 4, "all_labels": [0, 1, 2],
    "summary": {"accuracy": 0.75, "macro avg": {"precision": 0.83, "recall": 0.83, "f1-score": 0.78, "support": 4}},
    "labels": {str(i): {"precision": p, "recall": 1.0, "f1-score": 0.8, "support": 1 + (i == 1)}
               for i, p in enumerate((1.0, 1.0, 0.5))},
    "confusion_matrix": {"normalize": None, "counts": [[1, 0, 0], [0, 1, 1], [0, 0, 1]]},
    "roc_auc": {str(i): {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "thresholds": [None, 0.5], "auc": 0.5} for i in range(3)},
}
RESULTS = [{"index": 0, "label": 0, "result": 0, "pr": [0.9, 0.05, 0.05], "error": None},
           {"index": 1, "label": 1, "result": 1, "pr": [0.1, 0.8, 0.1], "error": None},
           {"index": 2, "label": 1, "result": 2, "pr": [0.1, 0.2, 0.7], "error": None},
           {"index": 3, "label": 2, "result": 2, "pr": [0.1, 0.1, 0.8], "error": None}]


def write_run(folder: Path, *, run: object = None, metrics: object = None, results: list | None = None,
              names: dict | None = None, started: str | None = None) -> Path:
    """A run folder as the evaluator writes it (run.json, metrics.json, results.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    if run is None:
        run = copy.deepcopy(RUN)
        if names:
            run["dataset"]["label_names"] = names
        if started:
            run["started"] = started
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "metrics.json").write_text(json.dumps(METRICS if metrics is None else metrics))
    lines = RESULTS if results is None else results
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder
