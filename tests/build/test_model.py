"""`swcli model build / eval / info / list / remove` on a tiny numpy-only model, and its bad inputs."""

from __future__ import annotations

import json

import pytest

from builder.store import Store
from tests.build.test_dataset_build import one_line_error

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


@pytest.fixture()
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "models").mkdir()
    (root / "models" / "weights.json").write_text(json.dumps({"offset": 0}))
    (root / "model.yaml").write_text(MODEL_YAML)
    (root / ".swignore").write_text("models/\n")  # weights still ship: model.yaml names them
    return root


def test_build_snapshot_has_code_and_weights_with_roles(cli, model_dir):
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0, res.err
    entry = Store().resolve("model", "modthree")
    roles = {f["path"]: f["role"] for f in entry.manifest["files"]}
    assert roles == {".swignore": "code", "code/__init__.py": "code", "code/ppl.py": "code",
                     "model.yaml": "code", "models/weights.json": "weights"}
    assert (entry.path / "src" / "models" / "weights.json").is_file()
    assert entry.manifest["env_lock"] is None and not (entry.path / "env.lock").exists()
    assert entry.manifest["handler"] == "code.ppl:ModThree"


def test_version_is_content_derived(cli, model_dir):
    cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert len(Store().list("model")) == 1
    (model_dir / "models" / "weights.json").write_text(json.dumps({"offset": 1}))
    cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert len(Store().list("model")) == 2


def test_env_lock_is_exported_by_default(cli, model_dir):
    assert cli("model", "build", "--no-image", model_dir).code == 0
    entry = Store().resolve("model", "modthree")
    assert entry.manifest["env_lock"] == "pip-freeze"
    assert "numpy==" in (entry.path / "env.lock").read_text()


def test_eval_from_ref_from_entry_dir_and_from_source_agree(cli, model_dir, tiny_dataset, tmp_path):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", model_dir, "--skip-gen-env").code == 0
    entry = Store().resolve("model", "modthree")
    dataset_dir = Store().resolve("dataset", "tiny").path
    outs = []
    for n, (model, dataset) in enumerate([("modthree", "tiny"), (entry.path, dataset_dir), (model_dir, "tiny:latest")]):
        out = tmp_path / f"out{n}"
        res = cli("model", "eval", model, "--dataset", dataset, "-o", out, "--device", "cpu")
        assert res.code == 0, res.err
        assert "accuracy" in res.out and "50 records scored" in res.out
        outs.append(out)
    metrics = [(o / "metrics.json").read_text() for o in outs]
    assert metrics[0] == metrics[1] == metrics[2]
    doc = json.loads(metrics[0])
    assert doc["summary"]["accuracy"] == 1.0  # label = byte % 3 and the model predicts byte % 3
    run = json.loads((outs[0] / "run.json").read_text())
    assert run["model"]["name"] == "modthree" and run["dataset"]["name"] == "tiny" and run["device"] == "cpu"


def test_eval_default_output_is_a_run_in_the_store(cli, model_dir, tiny_dataset, swcli_home):
    cli("dataset", "build", "--no-image", tiny_dataset)
    res = cli("model", "eval", model_dir, "--dataset", "tiny")
    assert res.code == 0, res.err
    runs = list((swcli_home / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file()


def test_info_list_remove(cli, model_dir):
    cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    info = json.loads(cli("model", "info", "modthree", "-o", "json").out)
    assert info["name"] == "modthree" and info["totals"]["weights_bytes"] > 0
    assert "modthree" in cli("model", "list").out
    assert cli("model", "remove", "modthree").code == 0
    assert json.loads(cli("model", "list", "-o", "json").out) == []


def test_seed_literal_unindented_ppl_builds_with_a_note(cli, model_dir):
    (model_dir / "model.yaml").write_text(MODEL_YAML.replace("run:\n  ppl:", "run:\nppl:"))
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0 and "note: top-level 'ppl' was read as 'run.ppl'" in res.err


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: (d / "model.yaml").unlink(), ["model.yaml", "no model.yaml"]),
        (lambda d: (d / "model.yaml").write_text("name: [\n"), ["model.yaml", "invalid yaml"]),
        (lambda d: (d / "model.yaml").write_text(MODEL_YAML.replace("  ppl: code.ppl:ModThree\n", "")), ["run.ppl", "missing required field"]),
        (lambda d: (d / "model.yaml").write_text(MODEL_YAML.replace("code.ppl:", "code.nope:")), ["run.ppl", "module 'code.nope' not found"]),
        (lambda d: (d / "model.yaml").write_text(MODEL_YAML.replace(":ModThree", ":ModFour")), ["run.ppl", "defines no 'ModFour'"]),
        (lambda d: (d / "models" / "weights.json").unlink(), ["model.yaml", "field 'model'", "models/weights.json' does not exist"]),
        (lambda d: (d / "escape").symlink_to("/etc/hostname"), ["escape: symlink points outside the source tree"]),
    ],
)
def test_bad_model_inputs(cli, model_dir, swcli_home, mutate, words):
    mutate(model_dir)
    one_line_error(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"), *words)
    assert Store().list("model") == []


def test_eval_bad_inputs(cli, model_dir, tiny_dataset, tmp_path):
    cli("dataset", "build", "--no-image", tiny_dataset)
    one_line_error(cli("model", "eval", "nomodel", "--dataset", "tiny"), "no model matches 'nomodel'")
    one_line_error(cli("model", "eval", model_dir, "--dataset", "nodata"), "no dataset matches 'nodata'")
    one_line_error(cli("model", "eval", model_dir, "--dataset", "tiny", "--batch-size", "8"), "takes one record per ppl call")
    (model_dir / "code" / "ppl.py").write_text(HANDLER.replace("class ModThree(PipelineHandler)", "class ModThree(object)"))
    one_line_error(cli("model", "eval", model_dir, "--dataset", "tiny"), "run.ppl", "not a subclass of builder.api.model.PipelineHandler")
    (model_dir / "code" / "ppl.py").write_text(HANDLER)
    (model_dir / "models" / "weights.json").unlink()
    one_line_error(cli("model", "eval", model_dir, "--dataset", "tiny"), "code.ppl:ModThree(): constructor raised FileNotFoundError")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("model", "eval", empty, "--dataset", "tiny"), "holds neither model.yaml nor a model manifest.json")
