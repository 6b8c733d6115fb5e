"""The record browser's data: one run's results.jsonl as numpy columns (:class:`RecordTable`), filtered, sorted and
paged without a pass over the file; a bounded cache of tables that reloads a run whose results changed
(:class:`RecordCache`); the records that flipped between right and wrong from one run to another (:func:`flipped`).

A label is keyed as ``str(flat(value))``, the key run.json's ``dataset.label_names`` and metrics.json's per-label
objects use; the confusion chart's cells (:mod:`builder.console.charts`) carry the same keys, so a click on a cell
is a :meth:`RecordTable.query` of its true and predicted keys.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from builder.files import stat_key
from builder.runs.folder import RESULTS
from builder.runs.history import Run, flat
from builder.runs.schema import RunError

MAX_LIMIT = 500  # rows in one page
SORTS = ("index", "confidence", "-confidence")
NO_LABEL = -1  # the code of a label or prediction a failed record does not have


def label_key(value: Any) -> str:
    """How a label value is keyed everywhere in the console: ``str(flat(value))`` (``[3]`` and ``3`` are ``"3"``)."""
    return str(flat(value))


def _confidence(scores: Any, pred_key: str, positions: dict[str, int]) -> float:
    """The share of the score on the predicted label (as :func:`builder.runs.report.confidently_wrong` computes
    it), nan when the record has no usable scores."""
    if not isinstance(scores, list) or not scores:
        return math.nan
    column = positions.get(pred_key)
    if column is None or column >= len(scores):
        return math.nan
    try:
        total = sum(scores)
    except TypeError:  # a non-number among the scores
        return math.nan
    value = scores[column]
    if isinstance(total, (int, float)) and total > 0 and isinstance(value, (int, float)):
        return float(value) / total
    return math.nan


class _Coder:
    """Label keys to small integer codes, in the order first given."""

    def __init__(self, keys: list[str]):
        self.labels: list[str] = []
        self.codes: dict[str, int] = {}
        for key in keys:
            self.code(key)

    def code(self, key: str) -> int:
        code = self.codes.get(key)
        if code is None:
            code = self.codes[key] = len(self.labels)
            self.labels.append(key)
        return code


class RecordTable:
    """One run's results as numpy columns: ``index`` (int64), ``label`` and ``pred`` codes (int32, -1 when a failed
    record has none), ``confidence`` (float64, nan when the result has no scores), ``right`` (bool) and ``error``
    (bool). Codes index :attr:`labels`: metrics.json's ``all_labels`` in order, then any other key seen."""

    def __init__(self, labels: list[str], index: np.ndarray, label: np.ndarray, pred: np.ndarray,
                 confidence: np.ndarray, error: np.ndarray):
        self.labels = labels
        self.index, self.label, self.pred, self.confidence, self.error = index, label, pred, confidence, error
        self.right = (label == pred) & ~error
        self._codes = {key: code for code, key in enumerate(labels)}
        self._orders: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, run: Run) -> RecordTable:
        """One pass over ``run.results()`` (each line shape-checked there; a bad one is a RunError naming it)."""
        all_labels = run.metrics.get("all_labels")
        coder = _Coder([label_key(v) for v in all_labels or []])
        # the score columns follow all_labels; without it, the label values 0..n-1 (as the report reads them)
        positions = dict(coder.codes) if all_labels else None
        index, label, pred, confidence, error = [], [], [], [], []
        for r in run.results():
            index.append(r["index"])
            failed = r.get("error") is not None
            error.append(failed)
            label.append(coder.code(label_key(r["label"])) if "label" in r else NO_LABEL)
            if failed or "result" not in r:
                pred.append(NO_LABEL)
                confidence.append(math.nan)
                continue
            key = label_key(r["result"])
            pred.append(coder.code(key))
            scores = flat(r.get("pr"))
            if positions is None and isinstance(scores, list):
                positions = {str(i): i for i in range(len(scores))}
            confidence.append(_confidence(scores, key, positions or {}))
        try:
            indexes = np.array(index, dtype=np.int64)
        except OverflowError:
            raise RunError(f"{run.path / RESULTS}: a record index beyond 64 bits") from None
        return cls(coder.labels, indexes, np.array(label, dtype=np.int32), np.array(pred, dtype=np.int32),
                   np.array(confidence, dtype=np.float64), np.array(error, dtype=bool))

    def __len__(self) -> int:
        return len(self.index)

    def _order(self, sort: str) -> np.ndarray:
        """Row positions in ``sort`` order (computed once per sort): by index, or by confidence up or down with the
        records without one last, ties by index."""
        order = self._orders.get(sort)
        if order is None:
            if sort == "index":
                order = np.argsort(self.index, kind="stable")
            else:
                confidence = self.confidence if sort == "confidence" else -self.confidence
                key = np.where(np.isnan(confidence), np.inf, confidence)
                missing = np.isnan(confidence)
                order = np.lexsort((self.index, key, missing))
            self._orders[sort] = order
        return order

    def _mask(self, true: str | None, pred: str | None, correct: bool | None) -> np.ndarray | None:
        """The rows matching the filters; None when a label key names no label of this run (nothing matches)."""
        mask = np.ones(len(self.index), dtype=bool)
        for key, column in ((true, self.label), (pred, self.pred)):
            if key is not None:
                code = self._codes.get(key)
                if code is None:
                    return None
                mask &= column == code
        if correct is not None:
            mask &= ~self.error & (self.right if correct else ~self.right)
        return mask

    def query(self, *, true: str | None = None, pred: str | None = None, correct: bool | None = None,
              sort: str = "index", offset: int = 0, limit: int = 200) -> tuple[int, list[dict]]:
        """(how many rows match, one page of them). ``true``/``pred`` are label keys; ``correct`` True keeps the
        right predictions, False the wrong ones (failed records are neither; with no ``correct`` they are listed,
        ``error`` true). ``limit`` is capped at :data:`MAX_LIMIT`. A bad value is a ValueError of one line."""
        _check_query(true, pred, correct, sort, offset, limit)
        mask = self._mask(true, pred, correct)
        if mask is None:
            return 0, []
        order = self._order(sort)
        chosen = order[mask[order]]
        page = chosen[offset:offset + min(limit, MAX_LIMIT)]
        return len(chosen), [self._row(int(i)) for i in page]

    def _row(self, i: int) -> dict:
        label, pred, confidence = int(self.label[i]), int(self.pred[i]), float(self.confidence[i])
        return {"index": int(self.index[i]),
                "label": None if label == NO_LABEL else self.labels[label],
                "pred": None if pred == NO_LABEL else self.labels[pred],
                "confidence": None if math.isnan(confidence) else confidence,
                "right": bool(self.right[i]), "error": bool(self.error[i])}

    def rows_for(self, indexes: list[int]) -> list[dict]:
        """The rows of these record indexes, in that order (the first line of a record listed twice); a record the
        run does not have is a row of Nones."""
        order = self._order("index")
        sorted_index = self.index[order]
        at = np.searchsorted(sorted_index, np.asarray(indexes, dtype=np.int64))
        rows = []
        for wanted, pos in zip(indexes, at.tolist()):
            if pos < len(sorted_index) and sorted_index[pos] == wanted:
                rows.append(self._row(int(order[pos])))
            else:
                rows.append({"index": wanted, "label": None, "pred": None, "confidence": None, "right": None,
                             "error": None})
        return rows

    def right_by_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(record indexes, right) of the records that did not fail, sorted by index; a record listed twice counts
        once, its first line."""
        ok = ~self.error
        index, first = np.unique(self.index[ok], return_index=True)
        return index, self.right[ok][first]


def _check_query(true: Any, pred: Any, correct: Any, sort: Any, offset: Any, limit: Any) -> None:
    for name, value in (("true", true), ("pred", pred)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}: expected a label key (a string), got {type(value).__name__}")
    if correct is not None and not isinstance(correct, bool):
        raise ValueError(f"correct: expected true or false, got {type(correct).__name__}")
    if sort not in SORTS:
        raise ValueError(f"sort: expected one of {', '.join(SORTS)}, got {str(sort)[:40]!r}")
    for name, value in (("offset", offset), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: expected a whole number >= 0, got {str(value)[:40]!r}")


def flipped(a: RecordTable, b: RecordTable) -> dict[str, np.ndarray]:
    """The records of both runs (failed in neither) that went from right in ``a`` to wrong in ``b``, and back;
    each an array of record indexes, ascending."""
    index_a, right_a = a.right_by_index()
    index_b, right_b = b.right_by_index()
    both, in_a, in_b = np.intersect1d(index_a, index_b, assume_unique=True, return_indices=True)
    was, now = right_a[in_a], right_b[in_b]
    return {"right_to_wrong": both[was & ~now], "wrong_to_right": both[~was & now]}


class RecordCache:
    """RecordTables by run folder, reloaded when results.jsonl's (size, mtime_ns, inode) changes; at most
    ``max_tables`` kept, the least recently used dropped first. Safe to call from many threads: two threads asking
    for one run at once may both load it, the last one kept."""

    def __init__(self, max_tables: int = 8):
        if max_tables < 1:
            raise ValueError("max_tables: expected at least 1")
        self.max_tables = max_tables
        self._tables: OrderedDict[str, tuple[tuple[int, int, int], RecordTable]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run: Run) -> RecordTable:
        key = os.path.realpath(run.path)
        stamp = stat_key(os.path.join(key, RESULTS))
        if stamp is None:
            return RecordTable.load(run)  # raises the RunError that names the missing or unreadable file
        with self._lock:
            kept = self._tables.get(key)
            if kept is not None and kept[0] == stamp:
                self._tables.move_to_end(key)
                return kept[1]
        table = RecordTable.load(run)  # stat taken before the read: a file changed meanwhile is reloaded next time
        with self._lock:
            self._tables[key] = (stamp, table)
            self._tables.move_to_end(key)
            while len(self._tables) > self.max_tables:
                self._tables.popitem(last=False)
        return table

    def __len__(self) -> int:
        return len(self._tables)
