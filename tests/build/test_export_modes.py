"""`swcli dataset export`: a bad target is one line before any work; the folder it writes reads like any other
(modes from the umask, not mkdtemp's 0700), so a container running as another user can read it."""

from __future__ import annotations

import os
import stat

import pytest

from builder.images.engine import apply_umask, check_target
from builder.store import Store
from tests.helpers.engine import run_removed


def one_line(res, *words):
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert res.code != 0 and len(lines) == 1 and lines[0].startswith("swcli: error: "), res.err
    for word in words:
        assert word in lines[0], lines[0]


def test_a_target_that_is_a_file_a_link_or_a_full_folder_is_one_line_and_left_alone(cli, tiny_dataset, tmp_path):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    file = tmp_path / "a-file"
    file.write_text("keep me")
    one_line(cli("dataset", "export", "tiny", file), str(file), "is a file")
    assert file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    one_line(cli("dataset", "export", "tiny", full), str(full), "is not empty")
    assert [p.name for p in full.iterdir()] == ["mine.txt"]
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    one_line(cli("dataset", "export", "tiny", link), str(link), "symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ds", "full", "link", "swcli-home"]


def test_check_target_accepts_a_new_or_empty_folder(tmp_path):
    assert check_target(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_target(tmp_path / "empty") == tmp_path / "empty"


@pytest.fixture()
def umask():
    """Set the process umask for one test, and put it back."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_to(mask: int) -> None:
        os.umask(mask)

    yield set_to
    os.umask(saved)


def modes(root):
    return {p.relative_to(root).as_posix() or ".": stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_apply_umask_gives_plain_modes(tmp_path, umask, mask):
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    os.chmod(root, 0o700)
    (root / "f").write_bytes(b"x")
    os.chmod(root / "f", 0o400)
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "sub" / "run.sh", 0o700)
    umask(mask)
    apply_umask(root)
    assert modes(root) == {".": 0o777 & ~mask, "sub": 0o777 & ~mask, "f": 0o666 & ~mask, "sub/run.sh": 0o777 & ~mask}


def test_a_built_dataset_entry_is_not_0700(cli, tiny_dataset, umask):
    umask(0o022)
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    entry = Store().resolve("dataset", "tiny")
    assert set(modes(entry.path).values()) <= {0o755, 0o644}, modes(entry.path)


@pytest.mark.docker
@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_an_export_is_readable_by_a_container_running_as_another_user(engine, cli, tiny_dataset, tmp_path, umask,  # noqa: F811
                                                                      mask):
    umask(mask)
    assert cli("dataset", "build", tiny_dataset).code == 0
    target = tmp_path / "exported"
    res = cli("dataset", "export", "tiny", target)
    assert res.code == 0, res.err
    got = modes(target)
    assert got["."] == 0o777 & ~mask and got["manifest.json"] == 0o666 & ~mask
    assert set(got.values()) == {0o777 & ~mask, 0o666 & ~mask}
    assert cli("dataset", "info", target, "--verify").code == 0
    entry = Store().resolve("dataset", "tiny")
    out = run_removed(engine, f"swds/tiny:{entry.version}", ["sh", "-c", "ls /dataset && cat /dataset/*.swds | wc -c"],
                      user="1000:1000", volumes={str(target): {"bind": "/dataset", "mode": "ro"}})
    listed = out.decode().split()
    assert sorted(listed[:-1]) == sorted(p.name for p in entry.path.iterdir())
    assert int(listed[-1]) == entry.manifest["totals"]["shard_bytes"]



