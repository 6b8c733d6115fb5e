"""`swcli dataset build/info/list/remove` end to end, and every bad input it must explain in one line."""

from __future__ import annotations

import json

import pytest

from builder.volumes import DatasetReader, volume_name
from builder.store import Store
from tests.helpers.cli import one_line_error
from tests.helpers.datasets import write_tiny_dataset


def built(cli, project):
    res = cli("dataset", "build", "--no-image", project)
    assert res.code == 0, res.err
    return Store().resolve("dataset", "tiny")


def test_build_pairs_records_across_files_in_sorted_order(cli, tiny_dataset):
    entry = built(cli, tiny_dataset)
    m = entry.manifest
    assert m["records"] == 50 and m["totals"]["shards"] == len(m["shards"]) > 1
    with DatasetReader(entry.path) as reader:
        assert [(r.data, r.label) for r in reader] == [(bytes([i]) * (10 + i), bytes([i % 3])) for i in range(50)]
    assert m["spec"]["name"] == "tiny" and m["attr"] == {"alignment_size": 64, "volume_size": 1024, "layer_size": 256 << 20}


def test_same_inputs_give_the_same_version_and_bytes(cli, tiny_dataset, tmp_path):
    first = built(cli, tiny_dataset)
    copy = tmp_path / "copy"
    write_tiny_dataset(copy, [(bytes([i]) * (10 + i), i % 3) for i in range(50)], files=3)
    res = cli("dataset", "build", "--no-image", copy)
    assert res.code == 0 and first.short_version in res.out
    assert len(Store().list("dataset")) == 1
    changed = write_tiny_dataset(tmp_path / "changed", [(bytes([i]) * (10 + i), i % 4) for i in range(50)], files=3)
    cli("dataset", "build", "--no-image", changed)
    assert len(Store().list("dataset")) == 2


def test_info_list_remove(cli, tiny_dataset):
    entry = built(cli, tiny_dataset)
    res = cli("dataset", "info", "tiny", "--output", "json")
    assert res.code == 0 and json.loads(res.out)["version"] == entry.version
    assert cli("dataset", "info", f"tiny:{entry.short_version}", "--verify").code == 0
    listed = json.loads(cli("dataset", "list", "-o", "json").out)
    assert [d["version"] for d in listed] == [entry.version]
    assert "tiny" in cli("dataset", "list").out
    assert cli("dataset", "remove", "tiny:latest").code == 0
    assert json.loads(cli("dataset", "list", "-o", "json").out) == []


def test_verify_finds_a_corrupted_shard(cli, tiny_dataset):
    entry = built(cli, tiny_dataset)
    shard = entry.path / volume_name(1)
    raw = bytearray(shard.read_bytes())
    raw[40] ^= 1
    shard.chmod(0o644)
    shard.write_bytes(bytes(raw))
    res = cli("dataset", "info", "tiny", "--verify")
    assert res.code == 3 and volume_name(1) in res.err and "sha256" in res.err


BAD_SLICERS = {
    "raises": ("""
from builder.api.dataset import BuildExecutor
class Slicer(BuildExecutor):
    def iter_data_slice(self, path):
        yield b"ok"
        raise ValueError("bad pixel")
    def iter_label_slice(self, path):
        yield b"l"
        yield b"l"
""", ["iter_data_slice", "part_0.pkl", "ValueError: bad pixel", "after record 0"]),
    "non_bytes": ("""
from builder.api.dataset import BuildExecutor
class Slicer(BuildExecutor):
    def iter_data_slice(self, path):
        yield b"ok"
        yield "a str"
    def iter_label_slice(self, path):
        yield b"l"
        yield b"l"
""", ["yielded str at record 1", "expected bytes"]),
    "mismatch": ("""
from builder.api.dataset import BuildExecutor
class Slicer(BuildExecutor):
    def iter_data_slice(self, path):
        yield from [b"a", b"b", b"c"]
    def iter_label_slice(self, path):
        yield from [b"1", b"2"]
""", ["count mismatch", "label_filter files yield 2", "data_filter files yield 3"]),
    "empty": ("""
from builder.api.dataset import BuildExecutor
class Slicer(BuildExecutor):
    def iter_data_slice(self, path):
        return iter(())
    def iter_label_slice(self, path):
        return iter(())
""", ["yielded no records"]),
    "wrong_base": ("""
class Slicer:
    pass
""", ["process", "not a subclass of builder.api.dataset.BuildExecutor"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SLICERS))
def test_bad_slicers_fail_in_one_line_and_leave_nothing(cli, tmp_path, swcli_home, case):
    slicer, words = BAD_SLICERS[case]
    project = write_tiny_dataset(tmp_path / case, [(b"x", 1)], slicer=slicer)
    one_line_error(cli("dataset", "build", "--no-image", project), *words)
    assert Store().list("dataset") == []
    staging = swcli_home / "tmp"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('data_filter: "part_*.pkl"', 'data_filter: "nothing_*"', ["data_filter", "'nothing_*' matches no file"]),
        ("data_dir: data", "data_dir: nowhere", ["data_dir", "is not a directory"]),
        ("process: code.slicer:Slicer", "process: code.missing:Slicer", ["process", "no module 'code.missing'"]),
        ("process: code.slicer:Slicer", "process: code.slicer:Nope", ["process", "has no 'Nope'"]),
        ("alignment_size: 64", "alignment_size: 48", ["attr.alignment_size", "power of two", ":8"]),
        ("volume_size: 1k", "volume_size: 1q", ["attr.volume_size", "not a size"]),
        ("desc: tiny", "dsec: tiny", ["dsec", "did you mean 'desc'"]),
        ("name: tiny\n", "", ["name", "missing required field"]),
        ("name: tiny", "name: [a]", ["name", "expected a string"]),
        ("attr:", "attr: [\n", ["invalid yaml"]),
    ],
)
def test_bad_yaml_fails_in_one_line(cli, tiny_dataset, old, new, words):
    path = tiny_dataset / "dataset.yaml"
    path.write_text(path.read_text().replace(old, new))
    one_line_error(cli("dataset", "build", "--no-image", tiny_dataset), "dataset.yaml", *words)


def test_missing_yaml_and_unknown_ref(cli, tmp_path):
    one_line_error(cli("dataset", "build", "--no-image", tmp_path), f"{tmp_path}: no dataset.yaml in this folder")
    one_line_error(cli("dataset", "build", "--no-image", tmp_path / "nope"),
                   f"{tmp_path / 'nope'}: no such folder; swcli dataset build expects a folder holding dataset.yaml")
    one_line_error(cli("model", "build", "--no-image", tmp_path), f"{tmp_path}: no model.yaml in this folder")
    one_line_error(cli("model", "build", tmp_path / "nope"),
                   f"{tmp_path / 'nope'}: no such folder; swcli model build expects a folder holding model.yaml")
    one_line_error(cli("runtime", "build", tmp_path / "nope"),
                   f"{tmp_path / 'nope'}: no such folder; swcli runtime build expects a folder holding runtime.yaml")
    one_line_error(cli("runtime", "build", tmp_path), f"{tmp_path}: no runtime.yaml in this folder")
    one_line_error(cli("dataset", "info", "nope"), "no dataset matches 'nope'")
    one_line_error(cli("dataset", "remove", "nope:1234"), "no dataset matches")


def test_interrupted_build_leaves_nothing(tmp_path, swcli_home, monkeypatch):
    from builder.build import dataset as dataset_build

    project = write_tiny_dataset(tmp_path / "p", [(b"x" * 10, 1)] * 20)
    real_add = dataset_build.VolumeWriter.add
    calls = {"n": 0}

    def interrupt_after_five(self, data, label):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_add(self, data, label)

    monkeypatch.setattr(dataset_build.VolumeWriter, "add", interrupt_after_five)
    with pytest.raises(KeyboardInterrupt):
        dataset_build.build_dataset(project)
    assert Store().list("dataset") == []
    assert list((swcli_home / "tmp").iterdir()) == []
