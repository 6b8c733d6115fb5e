"""dataset.yaml / model.yaml parsing: every bad input names the file, the line and the field."""

import textwrap

import pytest

from builder.errors import SpecError
from builder.spec import load_dataset_spec, load_model_spec, parse_size

SEED_DATASET = """\
name: cifar10
data_dir: data
data_filter: "test_batch"
label_filter: "test_batch"

process: code.data_slicer:CIFAR10Slicer
pip_req: requirements.txt

desc: CIFAR10 data and label test dataset
tag:
 - bin

attr:
  alignment_size: 4k
  volume_size: 2M
"""

SEED_MODEL_LITERAL = """\
version: 1.0
name: cifar_net

model:
  - models/cifar_net.pth

config:
  - config/hyperparam.json

run:
ppl: code.ppl:CIFAR10Inference

desc: cifar10 by pytorch

tag:
  - multi_classification
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_seed_dataset_yaml_parses(tmp_path):
    spec = load_dataset_spec(write(tmp_path, "dataset.yaml", SEED_DATASET).parent)
    assert spec.name == "cifar10"
    assert spec.alignment_size == 4096 and spec.volume_size == 2 * 1024 * 1024
    assert spec.process == "code.data_slicer:CIFAR10Slicer"
    assert spec.data_dir == (tmp_path / "data").resolve()
    assert spec.tag == ["bin"]


def test_attr_defaults_when_absent(tmp_path):
    text = SEED_DATASET.split("attr:")[0]
    spec = load_dataset_spec(write(tmp_path, "dataset.yaml", text))
    assert spec.alignment_size == 4096 and spec.volume_size == 64 << 20


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "words"),
    [
        ("name: cifar10\n", "", "name", None, "missing required field"),
        ("desc:", "decs:", "decs", 9, "did you mean 'desc'"),
        ("alignment_size: 4k", "alignment_sise: 4k", "attr.alignment_sise", 14, "did you mean 'attr.alignment_size'"),
        ("volume_size: 2M", "volume_size: 2X", "attr.volume_size", 15, "not a size"),
        ("alignment_size: 4k", "alignment_size: 3k", "attr.alignment_size", 14, "power of two"),
        ("volume_size: 2M", "volume_size: 1k", "attr.volume_size", 15, "smaller than"),
        ('data_filter: "test_batch"', "data_filter: [a, b]", "data_filter", 3, "expected a string"),
        ("process: code.data_slicer:CIFAR10Slicer", "process: code/data_slicer.py", "process", 6, "module.path:ClassName"),
        ("name: cifar10", "name: CIFAR 10", "name", 1, "not a valid name"),
    ],
)
def test_dataset_yaml_errors_name_field_and_line(tmp_path, old, new, field, line, words):
    path = write(tmp_path, "dataset.yaml", SEED_DATASET.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_dataset_spec(path)
    err = info.value
    assert err.field == field
    assert err.line == line
    assert words in str(err)
    assert str(path) in str(err)
    assert "\n" not in str(err)


def test_unparsable_yaml_reports_line(tmp_path):
    path = write(tmp_path, "dataset.yaml", SEED_DATASET.replace("tag:\n - bin", "tag: [bin\n"))
    with pytest.raises(SpecError) as info:
        load_dataset_spec(path)
    assert info.value.line is not None and "invalid yaml" in str(info.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_non_mapping_yaml(tmp_path, text):
    with pytest.raises(SpecError):
        load_dataset_spec(write(tmp_path, "dataset.yaml", text))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SpecError, match=f"^{tmp_path}: no dataset.yaml in this folder$"):
        load_dataset_spec(tmp_path)
    with pytest.raises(SpecError, match="^nope: no such folder; swcli dataset build expects a folder holding "
                                        "dataset.yaml$"):
        load_dataset_spec("./nope")
    with pytest.raises(SpecError, match="dataset.yaml: file not found"):
        load_dataset_spec(tmp_path / "dataset.yaml")


@pytest.mark.parametrize(
    ("text", "size"),
    [("4k", 4096), ("4K", 4096), ("2M", 2 << 20), ("2MB", 2 << 20), ("1GiB", 1 << 30), ("512", 512), (64, 64)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "-1", "0", "1.5M", "4 kilo", True, 0])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_seed_model_yaml_with_unindented_ppl_is_accepted_with_a_note(tmp_path):
    spec = load_model_spec(write(tmp_path, "model.yaml", SEED_MODEL_LITERAL))
    assert spec.ppl == "code.ppl:CIFAR10Inference"
    assert spec.version == "1.0"
    assert spec.model == ["models/cifar_net.pth"] and spec.config == ["config/hyperparam.json"]
    assert spec.notes and "run.ppl" in spec.notes[0]


def test_nested_model_yaml_has_no_note(tmp_path):
    text = SEED_MODEL_LITERAL.replace("run:\nppl:", "run:\n  ppl:")
    spec = load_model_spec(write(tmp_path, "model.yaml", text))
    assert spec.ppl == "code.ppl:CIFAR10Inference" and spec.notes == [] and spec.runtime is None


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("ppl: code.ppl:CIFAR10Inference", "", "run.ppl"),
        ("  - models/cifar_net.pth", "  - ../outside.pth", "model"),
        ("  - models/cifar_net.pth", "  - /abs/cifar_net.pth", "model"),
        ("name: cifar_net", "nmae: cifar_net", "nmae"),
    ],
)
def test_model_yaml_errors(tmp_path, old, new, field):
    text = SEED_MODEL_LITERAL.replace("run:\nppl:", "run:\n  ppl:").replace(old, new)
    with pytest.raises(SpecError) as info:
        load_model_spec(write(tmp_path, "model.yaml", text))
    assert info.value.field == field


def test_ppl_given_twice_is_refused(tmp_path):
    text = SEED_MODEL_LITERAL.replace("run:\nppl:", "run:\n  ppl: a.b:C\nppl:")
    with pytest.raises(SpecError, match="keep only run.ppl"):
        load_model_spec(write(tmp_path, "model.yaml", text))
