"""The tiny numpy-only model most tests build (`modthree`: predicts (first byte + offset) % 3), as source text.

``write_model`` writes it as a project folder with another handler source (slowed, failing... variants);
``tiny_model`` is a model project with no model in it (a handler class that is not one), for refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

HANDLER = '''
import json
from pathlib import Path

import numpy as np

from builder.api.metric import multi_classification
from builder.api.model import PipelineHandler

ROOT = Path(__file__).parent.parent


class ModThree(PipelineHandler):
    """Predicts (first byte + offset) % 3; the offset is the 'weight'."""

    def __init__(self, device="cpu"):
        super().__init__(merge_label=True, ignore_error=False)
        self.offset = json.loads((ROOT / "models" / "weights.json").read_text())["offset"]
        self.device = device

    def ppl(self, data, **kw):
        pred = (data[0] + self.offset) % 3
        scores = np.full(3, 0.2)
        scores[pred] = 0.6
        return [pred], [scores.tolist()]

    def handle_label(self, label, **kw):
        return [int(l) for l in label]

    @multi_classification(confusion_matrix_normalize="all", all_labels=[0, 1, 2])
    def cmp(self, _data_loader):
        _result, _label, _pr = [], [], []
        for _data in _data_loader:
            _label.extend([int(l) for l in _data["label"]])
            _result.extend([int(l) for l in _data["result"]])
            _pr.extend([l for l in _data["pr"]])
        return _label, _result, _pr
'''

MODEL_YAML = """\
version: 1.0
name: modthree
model:
  - models/weights.json
run:
  ppl: code.ppl:ModThree
desc: toy
tag:
  - multi_classification
"""


def write_model(root: Path, handler: str) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(handler)
    (root / "models").mkdir()
    (root / "models" / "weights.json").write_text(json.dumps({"offset": 0}))
    (root / "model.yaml").write_text(MODEL_YAML)
    return root


def tiny_model(tmp_path: Path) -> Path:
    (tmp_path / "m" / "code").mkdir(parents=True)
    (tmp_path / "m" / "code" / "ppl.py").write_text("class P: pass\n")
    (tmp_path / "m" / "model.yaml").write_text("name: tiny\nrun:\n  ppl: code.ppl:P\n")
    return tmp_path / "m"
