"""In-process handlers shaped like the seed's (one record per call, or batched), and the records they read:
data = one byte v in 0..9, label = v % 3, predicted v % 3 except for multiples of 7."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from builder.api.metric import multi_classification
from builder.api.model import PipelineHandler


@dataclass(frozen=True)
class Rec:
    index: int
    data: bytes
    label: bytes


def records(n=30):
    """data = one byte v in 0..9, label = v % 3; a 'model' that predicts v % 3 except for multiples of 7."""
    return [Rec(i, bytes([i % 10]), bytes([i % 10 % 3])) for i in range(n)]


def predict(v: int) -> tuple[int, list[float]]:
    pred = (v % 3) if v % 7 else (v + 1) % 3
    scores = np.full(3, 0.1)
    scores[pred] = np.exp(2.0)
    return pred, scores


class SeedStyle(PipelineHandler):
    """Shaped like the seed: one record per call, ([pred], [[scores]]) out, labels via handle_label."""

    def __init__(self, ignore_error=False):
        super().__init__(merge_label=True, ignore_error=ignore_error)
        self.seen_kw = []

    def ppl(self, data, **kw):
        self.seen_kw.append(kw)
        if data == b"\x05" and self.ignore_error:
            raise ValueError("cannot read five")
        pred, scores = predict(data[0])
        return [pred], np.asarray([scores])

    def handle_label(self, label, **kw):
        return [int(l) for l in label]

    @multi_classification(all_labels=[0, 1, 2])
    def cmp(self, _data_loader):
        _result, _label, _pr = [], [], []
        for _data in _data_loader:
            _label.extend([int(l) for l in _data["label"]])
            _result.extend([int(l) for l in _data["result"]])
            _pr.extend([l for l in _data["pr"]])
        return _label, _result, _pr


class Batched(SeedStyle):
    def __init__(self, batch_size=4):
        PipelineHandler.__init__(self, batch_size=batch_size)
        self.seen_kw = []
        self.ignore_error = False

    def ppl(self, data, **kw):
        self.seen_kw.append(kw)
        out = []
        for item in data:
            pred, scores = predict(item[0])
            out.append(([pred], np.asarray([scores])))
        return out
