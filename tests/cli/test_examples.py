"""End to end, through the CLI: the CIFAR-10 example on small CIFAR-format data, and a digits project.

Metrics are recomputed with scikit-learn from results.jsonl and must equal metrics.json.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from builder.store import Store
from tests.helpers.projects import write_digits_project

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cifar10"


def flat(values):
    """The seed stores one-element lists per record; flatten them to scalars."""
    return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]


def check_metrics_against_sklearn(out: Path, labels):
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["error"] is None]
    y_true, y_pred = flat([r["label"] for r in rows]), flat([r["result"] for r in rows])
    scores = np.array(flat([r["pr"] for r in rows]))
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["record_count"] == len(rows)
    assert doc["summary"]["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-12)
    report = skm.classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0.0)
    assert doc["summary"]["macro avg"]["f1-score"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)
    assert doc["summary"]["cohen_kappa_score"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred), abs=1e-12)
    assert doc["confusion_matrix"]["counts"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    onehot = (np.array(y_true)[:, None] == np.array(labels)[None, :]).astype(int)
    present = [i for i in range(len(labels)) if 0 < onehot[:, i].sum() < len(rows)]
    macro_auc = skm.roc_auc_score(onehot[:, present], scores[:, present], average="macro")
    assert doc["summary"]["roc_auc"] == pytest.approx(macro_auc, abs=1e-12)
    return doc


def write_cifar_batch(path: Path, n: int, seed: int):
    """Random 32x32 RGB images in the real CIFAR pickle layout; the class brightens one channel band."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    data = rng.integers(0, 100, (n, 3072), dtype=np.uint8)
    for i, label in enumerate(labels):
        data[i, label * 300 : label * 300 + 300] += 150
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"test", b"labels": labels.tolist(), b"data": data,
                     b"filenames": [f"{i}.png".encode() for i in range(n)]}, fh)


@pytest.fixture()
def cifar_project(tmp_path):
    project = tmp_path / "cifar10"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "*.pth", "__pycache__"))
    batches = project / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    write_cifar_batch(batches / "data_batch_1", 400, seed=1)
    write_cifar_batch(batches / "test_batch", 150, seed=2)
    return project


@pytest.mark.slow
def test_cifar10_example_end_to_end(cli, cifar_project, tmp_path):
    import torch  # noqa: F401  (a dev dependency: requirements.lock pins it)
    train = subprocess.run([sys.executable, "-m", "code.train", "--epochs", "3", "--batch-size", "16"],
                           cwd=cifar_project, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert (cifar_project / "models" / "cifar_net.pth").is_file()

    assert cli("dataset", "build", "--no-image", cifar_project).code == 0
    res = cli("model", "build", "--no-image", cifar_project)
    assert res.code == 0, res.err
    assert Store().resolve("dataset", "cifar10").manifest["records"] == 150

    one = cli("model", "eval", "cifar_net", "--dataset", "cifar10", "-o", tmp_path / "one")
    assert one.code == 0, one.err
    doc = check_metrics_against_sklearn(tmp_path / "one", list(range(10)))
    assert doc["summary"]["accuracy"] > 0.3  # the planted signal is easy; random would be ~0.1
    assert json.loads((tmp_path / "one" / "run.json").read_text())["runtime"].startswith("local:")
    assert cli("eval", "report", tmp_path / "one", "-o", tmp_path / "report.html").code == 0
    assert '<img alt="record ' in (tmp_path / "report.html").read_text()  # CIFAR-shaped records as thumbnails

    model_yaml = cifar_project / "model.yaml"
    model_yaml.write_text(model_yaml.read_text().replace("CIFAR10Inference", "CIFAR10BatchInference"))
    batched = cli("model", "eval", cifar_project, "--dataset", "cifar10", "-o", tmp_path / "batched", "--batch-size", "64")
    assert batched.code == 0, batched.err
    check_metrics_against_sklearn(tmp_path / "batched", list(range(10)))
    a = [json.loads(x) for x in (tmp_path / "one" / "results.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "batched" / "results.jsonl").read_text().splitlines()]
    assert [r["result"] for r in a] == [r["result"] for r in b]
    np.testing.assert_allclose([r["pr"] for r in a], [r["pr"] for r in b], rtol=1e-4)


def test_digits_end_to_end_matches_sklearn(cli, tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target
    clf = LogisticRegression(max_iter=300).fit(x[:1200], y[:1200])
    project = write_digits_project(tmp_path / "digits", x[1200:], y[1200:], clf)
    assert cli("dataset", "build", "--no-image", project).code == 0
    assert cli("model", "build", "--no-image", project, "--skip-gen-env").code == 0
    res = cli("model", "eval", "digits_logreg", "--dataset", "digits", "-o", tmp_path / "out")
    assert res.code == 0, res.err
    doc = check_metrics_against_sklearn(tmp_path / "out", list(range(10)))
    expected = clf.predict(x[1200:])
    assert doc["summary"]["accuracy"] == pytest.approx(skm.accuracy_score(y[1200:], expected), abs=1e-12)
    np.testing.assert_allclose(doc["confusion_matrix"]["binarylabel"],
                               skm.confusion_matrix(y[1200:], expected, labels=list(range(10)), normalize="true"))
