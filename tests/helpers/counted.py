"""The counting model of the resume and workers tests, as source text: it predicts v % 3 (except for multiples
of 7), fails record 13, and appends every ppl call's index to ``$CALLS``; variants in ``HANDLERS``. With
``calls`` (what ppl was called on) and ``same_files`` (two runs wrote the same outputs)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.models import MODEL_YAML

# predicts v % 3 except for multiples of 7; every ppl call is appended to $CALLS first, then sleeps $SLEEP;
# cmp sleeps $CMP_SLEEP before scoring, so a test can kill the process during cmp. In a container (`job run`),
# calls go to /output/calls, and record 20 ends the process at once (like kill -9) when /output/crash-once exists
HANDLER = '''
import os
import time

from builder.api.metric import multi_classification
from builder.api.model import PipelineHandler


class Counted(PipelineHandler):
    def __init__(self, device="cpu"):
        super().__init__(merge_label=True, ignore_error=True)

    def ppl(self, data, **kw):
        with open(os.environ.get("CALLS", "/output/calls"), "a") as fh:
            fh.write(f"{kw['index']}\\n")
        if kw["index"] == 20 and os.path.exists("/output/crash-once"):
            os.remove("/output/crash-once")
            os._exit(9)
        time.sleep(float(os.environ.get("SLEEP", "0")))
        v = data[0]
        if v == 13:
            raise ValueError("thirteen")
        pred = v % 3 if v % 7 else (v + 1) % 3
        scores = [1 / 3, 1 / 7, 2 / 3]
        scores[pred] = 0.123456789123
        return [pred], [scores]

    def handle_label(self, label, **kw):
        return [int(l) for l in label]

    @multi_classification(confusion_matrix_normalize="all", all_labels=[0, 1, 2])
    def cmp(self, _data_loader):
        time.sleep(float(os.environ.get("CMP_SLEEP", "0")))
        _result, _label, _pr = [], [], []
        for _data in _data_loader:
            _label.extend([int(l) for l in _data["label"]])
            _result.extend([int(l) for l in _data["result"]])
            _pr.extend([l for l in _data["pr"]])
        return _label, _result, _pr
'''


def write_model(root: Path, offset: int = 0) -> Path:
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "weights.json").write_text(json.dumps({"offset": offset}))
    (root / "model.yaml").write_text(MODEL_YAML.replace("code.ppl:ModThree", "code.ppl:Counted"))
    return root


# the counting handler above, plus: a batching variant that logs each batch's indices, one that stops at
# the first failure, and one whose worker dies at $DIE_AT
HANDLERS = HANDLER + '''

class Strict(Counted):
    def __init__(self, device="cpu"):
        PipelineHandler.__init__(self, merge_label=True, ignore_error=False)


class Dies(Counted):
    def ppl(self, data, **kw):
        if kw["index"] == int(os.environ.get("DIE_AT", "-1")):
            os.kill(os.getpid(), 9)
        return super().ppl(data, **kw)


class Batched(Counted):
    def __init__(self, device="cpu"):
        PipelineHandler.__init__(self, merge_label=True, ignore_error=True, batch_size=8)

    def ppl(self, data, **kw):
        with open(os.environ["BATCHES"], "a") as fh:
            fh.write(",".join(map(str, kw["indices"])) + "\\n")
        out = []
        for record, index in zip(data, kw["indices"]):
            try:
                out.append(Counted.ppl(self, record, index=index))
            except ValueError:
                out.append(([0], [[0.5, 0.25, 0.25]]))
        return out
'''


def calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def same_files(a: Path, b: Path, names=("results.jsonl", "metrics.json")) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
