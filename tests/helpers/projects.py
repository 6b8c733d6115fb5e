"""A dataset+model project over scikit-learn's digits: the second example, beside the CIFAR-10 one."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

DIGITS_SLICER = '''
import numpy as np

from builder.api.dataset import BuildExecutor


class DigitsSlicer(BuildExecutor):
    def iter_data_slice(self, path):
        for row in np.load(path)["images"]:
            yield row.astype(np.float32).tobytes()

    def iter_label_slice(self, path):
        for label in np.load(path)["labels"]:
            yield bytes([int(label)])
'''

DIGITS_HANDLER = '''
import pickle
from pathlib import Path

import numpy as np

from builder.api.metric import multi_classification
from builder.api.model import PipelineHandler

ROOT = Path(__file__).parent.parent


class DigitsHandler(PipelineHandler):
    def __init__(self):
        super().__init__(batch_size=32)
        with open(ROOT / "models" / "logreg.pkl", "rb") as fh:
            self.clf = pickle.load(fh)

    def ppl(self, data, **kw):
        x = np.stack([np.frombuffer(d, dtype=np.float32) for d in data])
        proba = self.clf.predict_proba(x)
        return [(int(p.argmax()), p.tolist()) for p in proba]

    def handle_label(self, label, **kw):
        return label[0]

    @multi_classification(confusion_matrix_normalize="true", all_labels=list(range(10)))
    def cmp(self, _data_loader):
        rows = list(_data_loader)
        return [r["label"] for r in rows], [r["result"] for r in rows], [r["pr"] for r in rows]
'''


def write_digits_project(project: Path, test_x, test_y, clf, model_name: str = "digits_logreg") -> Path:
    """A dataset+model project over scikit-learn's digits: a slicer over an .npz, a pickled classifier."""
    for sub in ("code", "data", "models"):
        (project / sub).mkdir(parents=True, exist_ok=True)
    (project / "code" / "__init__.py").write_text("")
    (project / "code" / "slicer.py").write_text(DIGITS_SLICER)
    (project / "code" / "handler.py").write_text(DIGITS_HANDLER)
    np.savez(project / "data" / "test.npz", images=test_x, labels=test_y)
    with open(project / "models" / "logreg.pkl", "wb") as fh:
        pickle.dump(clf, fh)
    (project / "dataset.yaml").write_text(
        "name: digits\ndata_dir: data\ndata_filter: '*.npz'\nlabel_filter: '*.npz'\nprocess: code.slicer:DigitsSlicer\n"
    )
    (project / "model.yaml").write_text(f"name: {model_name}\nmodel: [models/logreg.pkl]\nrun:\n  ppl: code.handler:DigitsHandler\n")
    return project
