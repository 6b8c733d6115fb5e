"""Label names: a slicer's optional `label_names()` (checked), dataset.yaml's `labels:` winning over it, and the
CIFAR example reading `batches.meta` without changing a record."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from builder.volumes import DatasetReader
from builder.store import Store
from tests.helpers.datasets import SLICER, write_tiny_dataset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10"


def slicer_naming(expr: str) -> str:
    return SLICER + f"\n    def label_names(self):\n        return {expr}\n"


def build(cli, tmp_path, slicer: str, yaml_extra: str = ""):
    project = write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * 3, i % 3) for i in range(9)], slicer=slicer,
                                 yaml_extra=yaml_extra)
    return cli("dataset", "build", "--no-image", project)


@pytest.mark.parametrize("expr, expected", [
    ('["zero", "one", "two"]', {"0": "zero", "1": "one", "2": "two"}),
    ('("zero", "one")', {"0": "zero", "1": "one"}),
    ('{10: "ten", 2: "two", 1: "one"}', {"1": "one", "2": "two", "10": "ten"}),  # sorted as numbers
    ('{"cat": "Cat", "0": "zero"}', {"0": "zero", "cat": "Cat"}),
])
def test_the_slicers_names_go_into_the_manifest_as_a_mapping(cli, tmp_path, expr, expected):
    res = build(cli, tmp_path, slicer_naming(expr))
    assert res.code == 0, res.err
    assert Store().resolve("dataset", "tiny").manifest["label_names"] == expected


@pytest.mark.parametrize("expr", ["None", "[]", "{}"])
def test_no_names_means_no_key(cli, tmp_path, expr):
    assert build(cli, tmp_path, slicer_naming(expr)).code == 0
    assert "label_names" not in Store().resolve("dataset", "tiny").manifest


def test_a_slicer_without_the_hook_writes_no_key(cli, tmp_path):
    assert build(cli, tmp_path, SLICER).code == 0
    assert "label_names" not in Store().resolve("dataset", "tiny").manifest


@pytest.mark.parametrize("expr, words", [
    ('"airplane"', ["label_names()", "returned str"]),
    ('["a", ""]', ["label_names()", "label 1", "non-empty string"]),
    ('["a", 3]', ["label_names()", "label 1", "3"]),
    ('{None: "a"}', ["label_names()", "label value None"]),
    ('{True: "a"}', ["label_names()", "label value True"]),
    ('{1: "a", "1": "b"}', ["label_names()", "named twice"]),
    ('1 / 0', ["label_names()", "raised ZeroDivisionError"]),
])
def test_a_bad_answer_is_one_line_and_nothing_is_recorded(cli, tmp_path, expr, words):
    res = build(cli, tmp_path, slicer_naming(expr))
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code != 0 and len(lines) == 1 and lines[0].startswith("swcli: error: code.slicer:Slicer"), res.err
    for word in words:
        assert word in lines[0], lines[0]
    assert Store().list("dataset") == []


def test_yaml_labels_win_over_the_slicer(cli, tmp_path):
    res = build(cli, tmp_path, slicer_naming('["zero", "one", "two"]'), "labels: [nil, uno, dos]\n")
    assert res.code == 0, res.err
    assert Store().resolve("dataset", "tiny").manifest["label_names"] == {"0": "nil", "1": "uno", "2": "dos"}


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_project(tmp_path, meta: bool) -> Path:
    project = tmp_path / "cifar10"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "*.pth", "__pycache__"))
    batches = project / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels, data = rng.integers(0, 10, 20).tolist(), rng.integers(0, 255, (20, 3072), dtype=np.uint8)
    with open(batches / "test_batch", "wb") as fh:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data}, fh)
    if meta:
        with open(batches / "batches.meta", "wb") as fh:
            pickle.dump({b"num_cases_per_batch": 20, b"label_names": [c.encode() for c in CLASSES],
                         b"num_vis": 3072}, fh)
    return project


def test_the_cifar_slicer_names_labels_from_batches_meta_and_keeps_its_records(cli, tmp_path):
    with_meta = cifar_project(tmp_path / "a", meta=True)
    assert cli("dataset", "build", "--no-image", with_meta).code == 0
    named = Store().resolve("dataset", "cifar10")
    assert named.manifest["label_names"] == {str(i): c for i, c in enumerate(CLASSES)}
    batch = pickle.loads((with_meta / "data" / "cifar-10-batches-py" / "test_batch").read_bytes())
    with DatasetReader(named.path) as reader:
        assert [(r.data, r.label) for r in reader] == [(batch[b"data"][i].tobytes(), bytes([batch[b"labels"][i]]))
                                                       for i in range(20)]
    # without batches.meta: the same records and version, and no names
    Store().remove("dataset", "cifar10")
    assert cli("dataset", "build", "--no-image", cifar_project(tmp_path / "b", meta=False)).code == 0
    bare = Store().resolve("dataset", "cifar10")
    assert "label_names" not in bare.manifest and bare.version == named.version
