"""Hand-crafted dataset manifests: every file name is checked before a path is made from it, in `info --verify`
and in the reader; a name out of the entry, a link or a wrong shape is one line naming the manifest and field."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from builder.errors import ShardCorruptError
from builder.volumes import DatasetReader, ManifestError, manifest_layout, plain_name_problem
from builder.store import Store


@pytest.fixture()
def entry_copy(cli, tiny_dataset, tmp_path):
    """A writable copy of a freshly built entry, outside the store: (folder, manifest dict)."""
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    built = Store().resolve("dataset", "tiny")
    copy = tmp_path / "outer" / "entry"
    shutil.copytree(built.path, copy)
    for p in copy.iterdir():
        p.chmod(0o644)
    return copy, json.loads((copy / "manifest.json").read_text())


def rewrite(folder, manifest):
    (folder / "manifest.json").write_text(json.dumps(manifest))


def one_line(res, *words):
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code != 0 and len(lines) == 1 and lines[0].startswith("swcli: error: "), res.err
    assert "Traceback" not in res.err
    for word in words:
        assert word in lines[0], lines[0]


def test_an_untouched_copy_verifies(cli, entry_copy):
    folder, _ = entry_copy
    res = cli("dataset", "info", folder, "--verify")
    assert res.code == 0, res.err


@pytest.mark.parametrize("bad", ["../data-00000.swds", "/tmp/data-00000.swds", "sub/data-00000.swds", "..", "",
                                 "a\\b", None, 7])
def test_a_shard_name_leaving_the_entry_is_refused_before_it_is_read(cli, entry_copy, bad):
    folder, manifest = entry_copy
    # the real shard moved out beside the entry: following '../' would find a file whose sha256 checks out
    shutil.move(folder / "data-00000.swds", folder.parent / "data-00000.swds")
    manifest["shards"][0]["file"] = bad
    rewrite(folder, manifest)
    one_line(cli("dataset", "info", folder, "--verify"), "manifest.json", "shards[0].file")
    with pytest.raises(ManifestError, match=r"shards\[0\]\.file"):
        DatasetReader(folder)
    with pytest.raises(ManifestError):
        DatasetReader(folder, manifest)


@pytest.mark.parametrize("bad", ["../index.swidx", "/etc/passwd", "x/index.swidx", "data-00000.swds"])
def test_an_index_name_leaving_the_entry_is_refused(cli, entry_copy, bad):
    folder, manifest = entry_copy
    shutil.copy(folder / "index.swidx", folder.parent / "index.swidx")
    manifest["index"]["file"] = bad
    rewrite(folder, manifest)
    one_line(cli("dataset", "info", folder, "--verify"), "manifest.json", "index.file")
    with pytest.raises(ManifestError, match=r"index\.file"):
        DatasetReader(folder)


@pytest.mark.parametrize("field, value", [
    ("shards", []), ("shards", None), ("shards", "data-00000.swds"), ("index", None), ("index", {"file": "index.swidx"}),
    ("records", 49), ("records", "50"), ("version", "../x"), ("name", "../../etc"), ("kind", "model"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_the_field(cli, entry_copy, field, value):
    folder, manifest = entry_copy
    manifest[field] = value
    rewrite(folder, manifest)
    res = cli("dataset", "info", folder, "--verify")
    if field == "kind":  # read_entry already refuses a manifest of another kind
        one_line(res, "model")
        return
    one_line(res, "manifest.json", f"'{field}")


@pytest.mark.parametrize("key, value", [("sha256", "0" * 63), ("size", -1), ("records", True)])
def test_a_shard_entry_of_the_wrong_shape_is_one_line(cli, entry_copy, key, value):
    folder, manifest = entry_copy
    manifest["shards"][1][key] = value
    rewrite(folder, manifest)
    one_line(cli("dataset", "info", folder, "--verify"), "manifest.json", f"shards[1].{key}")


def test_a_symlinked_shard_is_not_followed(cli, entry_copy):
    folder, _ = entry_copy
    shard = folder / "data-00000.swds"
    outside = folder.parent / "elsewhere.swds"
    shutil.move(shard, outside)
    os.symlink(outside, shard)
    one_line(cli("dataset", "info", folder, "--verify"), "data-00000.swds", "not a regular file")
    with DatasetReader(folder) as reader, pytest.raises(ShardCorruptError, match="symlink"):
        reader[0]


def test_the_index_size_and_the_volume_count_are_checked(cli, entry_copy):
    folder, manifest = entry_copy
    manifest["index"]["size"] += 1
    rewrite(folder, manifest)
    one_line(cli("dataset", "info", folder, "--verify"), "index.swidx", "manifest says")
    manifest["index"]["size"] -= 1
    last = manifest["shards"].pop()
    manifest["shards"][-1]["records"] += last["records"]
    rewrite(folder, manifest)
    one_line(cli("dataset", "info", folder, "--verify"), "index.swidx", "volumes")


def test_plain_names():
    assert plain_name_problem("data-00000.swds") is None and plain_name_problem("index.swidx") is None
    for bad in ("..", ".", "../a", "a/b", "/a", "a\0b", "", None):
        assert plain_name_problem(bad), bad
    with pytest.raises(ManifestError, match="JSON object"):
        manifest_layout([], "m.json")
