"""The store under hostile refs, broken entries, killed builds, umasks and unwritable homes (issue 9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builder.errors import RefNotFoundError, StoreError, SwcliError
from builder.files import write_json_atomic
from builder.store import Store
from tests.helpers.capabilities import require
from tests.helpers.cli import one_line_error
from tests.helpers.store import publish

REPO = Path(__file__).resolve().parents[1]


def manifest(name: str, version: str) -> dict:
    return {"kind": "dataset", "name": name, "version": version, "created": "2026-01-01T00:00:00+00:00"}


def outside_entry(folder: Path, name: str = "mnist", version: str = "abcdabcdabcd") -> Path:
    folder.mkdir(parents=True)
    write_json_atomic(folder / "manifest.json", manifest(name, version))
    (folder / "precious").write_text("keep me")
    return folder


# ------------------------------------------------------------------------------------------------- remove


def test_remove_refuses_a_path_outside_the_store_but_reading_it_works(cli, tmp_path):
    outside = outside_entry(tmp_path / "exported")
    assert cli("dataset", "info", str(outside)).code == 0  # path refs stay fine for reading
    one_line_error(cli("dataset", "remove", str(outside)), str(outside), "not a dataset in the store")
    assert (outside / "precious").read_text() == "keep me"


@pytest.mark.parametrize("ref", ["../../victim", "../../victim:latest", "../../victim:abcd", "mnist:../../victim",
                                 "mnist/../../../victim", "mnist:..", "..", ".", "/", "MNIST", "mnist:abcd/..",
                                 "mnist:ABCD", "mnist:abcd\n", "mnist\n", ""])
def test_hostile_refs_never_walk_out_of_the_store(tmp_path, monkeypatch, ref):
    store = Store(tmp_path / "home")
    entry = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    victim = outside_entry(tmp_path / "victim" / "abcdabcdabcd")  # laid out like <name>/<version>, next to home
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative refs do not name a folder from here
    with pytest.raises(SwcliError):
        store.remove("dataset", ref)
    assert (victim / "precious").is_file() and entry.path.is_dir()


def test_remove_refuses_an_entry_reached_through_a_link_out_of_the_store(tmp_path):
    store = Store(tmp_path / "home")
    publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    outside_entry(tmp_path / "elsewhere" / "abcdabcdabcd", name="evil")
    os.symlink(tmp_path / "elsewhere", store.kind_dir("dataset") / "evil")
    assert sorted(e.name for e in store.list("dataset")) == ["evil", "mnist"]  # readable, so listed
    with pytest.raises(StoreError, match="not a dataset in the store"):
        store.remove("dataset", "evil")
    assert (tmp_path / "elsewhere" / "abcdabcdabcd" / "precious").is_file()


def test_remove_by_a_path_inside_the_store_still_works(tmp_path):
    store = Store(tmp_path / "home")
    entry = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    assert store.remove("dataset", str(entry.path)) == entry
    assert not entry.path.exists()


# --------------------------------------------------------------------------------------------- broken store


def broken_store(tmp_path) -> tuple[Store, object, dict[str, Path]]:
    store = Store(tmp_path / "home")
    good = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    base = store.kind_dir("dataset")
    bad = {}
    for label, folder, content in [
        ("not json", base / "mnist" / "aaaabbbbcccc", "{broken"),
        ("a list", base / "mnist" / "bbbbccccdddd", "[1, 2]"),
        ("name a number", base / "cifar" / "ccccddddeeee", json.dumps(manifest(3, "ccccddddeeee"))),
        ("name of another folder", base / "cifar" / "ddddeeeeffff", json.dumps(manifest("other", "ddddeeeeffff"))),
        ("version a dict", base / "cifar" / "eeeeffffgggg", json.dumps(manifest("cifar", {"v": 1}))),
        ("no manifest", base / "cifar" / "ffffgggghhhh", None),
        ("bad folder name", base / "Bad Name" / "ggggiiiijjjj", json.dumps(manifest("bad", "ggggiiiijjjj"))),
    ]:
        folder.mkdir(parents=True)
        if content is not None:
            (folder / "manifest.json").write_text(content)
        bad[label] = folder.parent if label == "bad folder name" else folder  # the path its problem names
    return store, good, bad


def test_scan_lists_what_is_readable_and_names_every_broken_entry(tmp_path):
    store, good, bad = broken_store(tmp_path)
    entries, problems = store.scan("dataset")
    assert entries == [good] == store.list("dataset")
    assert len(problems) == len(bad)
    for folder in bad.values():
        assert sum(str(folder) in p for p in problems) == 1, (folder, problems)
    assert all("\n" not in p and ": " in p for p in problems)
    assert store.scan("dataset", "mnist") == ([good], [p for p in problems if "/mnist/" in p])


def test_resolve_and_remove_survive_bad_siblings(tmp_path):
    store, good, bad = broken_store(tmp_path)
    assert store.resolve("dataset", "mnist") == good
    assert store.resolve("dataset", good.ref) == good
    with pytest.raises(RefNotFoundError, match="unreadable: .*ccccddddeeee"):
        store.resolve("dataset", "cifar")
    assert store.remove("dataset", "mnist") == good
    assert bad["not json"].is_dir()  # a broken sibling is named, never deleted behind the user's back


def test_cli_on_a_broken_store_says_which_file(cli, swcli_home, tmp_path):
    store, good, _ = broken_store(tmp_path)
    swcli_home.parent.mkdir(parents=True, exist_ok=True)
    store.root.rename(swcli_home)
    assert cli("dataset", "info", "mnist").code == 0
    bad = swcli_home / "datasets" / "mnist" / "bbbbccccdddd"
    one_line_error(cli("dataset", "info", str(bad)), f"{bad / 'manifest.json'}: expected a JSON object")


# ------------------------------------------------------------------------------------------------- staging

STAGER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from builder.store import Store
    with Store(Path(sys.argv[1])).stage("dataset") as staged:
        (staged / "big").write_bytes(b"x" * 100000)
        print(staged, flush=True)
        time.sleep(600)
    """
)


def test_staging_of_a_killed_build_is_removed_and_a_live_one_is_kept(tmp_path):
    store = Store(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-c", STAGER, str(store.root)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        killed = Path(proc.stdout.readline().strip())
        assert (killed / "big").is_file()
        with store.stage("dataset") as live:  # another build running at the same time: its staging is not stale
            assert killed.is_dir(), "a live build's staging was removed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            (live / "half").write_text("x")
            with store.stage("dataset") as second:
                assert not killed.exists() and not Path(f"{killed}.lock").exists()
                assert (live / "half").is_file() and second.is_dir() and second != live
        assert sorted(os.listdir(store.tmp_dir)) == []
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_scan_cleans_staging_left_without_a_lock(tmp_path):
    store = Store(tmp_path / "home")
    legacy = store.tmp_dir / "dataset-k3j2h1"  # what swcli left before staging was locked
    legacy.mkdir(parents=True)
    (legacy / "shard").write_bytes(b"x")
    other = store.tmp_dir / "not-ours"
    other.mkdir()
    assert store.scan("dataset") == ([], [])
    assert not legacy.exists() and other.is_dir()


# ---------------------------------------------------------------------------------------------------- modes


def test_published_entries_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "home")
        version = "abcdabcdabcdabcd"
        with store.stage("dataset") as staged:
            assert staged.stat().st_mode & 0o777 == 0o700  # private while it is built
            (staged / "sub").mkdir(mode=0o700)
            write_json_atomic(staged / "manifest.json", manifest("mnist", version))
            entry = store.publish("dataset", "mnist", version, staged)
    finally:
        os.umask(old)
    assert entry.path.stat().st_mode & 0o777 == 0o755
    assert (entry.path / "sub").stat().st_mode & 0o777 == 0o755
    assert (entry.path / "manifest.json").stat().st_mode & 0o777 == 0o644


# -------------------------------------------------------------------------------------- unwritable stores


@pytest.fixture()
def read_only_home(tmp_path):
    """A store root on a read-only filesystem (chmod does not stop root, so a read-only tmpfs when root)."""
    home = tmp_path / "ro-home"
    home.mkdir()
    if os.geteuid() == 0:
        require("tmpfs")
        assert not subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(home)], capture_output=True).returncode
        yield home
        subprocess.run(["umount", str(home)], check=True)
    else:
        home.chmod(0o555)
        yield home
        home.chmod(0o755)


def test_a_read_only_store_gives_one_line(cli, read_only_home, monkeypatch, tiny_dataset):
    monkeypatch.setenv("SWCLI_HOME", str(read_only_home))
    with pytest.raises(StoreError, match=str(read_only_home / "tmp")):
        with Store().stage("dataset"):
            pass
    one_line_error(cli("dataset", "build", "--no-image", tiny_dataset), str(read_only_home / "tmp"))
    assert cli("dataset", "list").code == 0


def test_swcli_home_pointing_at_a_file(cli, monkeypatch, tmp_path, tiny_dataset):
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("SWCLI_HOME", str(home))
    one_line_error(cli("dataset", "build", "--no-image", tiny_dataset), str(home))
    with pytest.raises(StoreError, match="the store root is a file, not a folder; check SWCLI_HOME"):
        Store()  # issue 18: `list` on such a root is one line and exit 1, not a warning and an empty table
    with pytest.raises(StoreError, match=str(home)):
        write_json_atomic(home / "runs" / "x" / "run.json", {})


def test_list_commands_name_unreadable_entries_and_show_the_rest(cli, swcli_home, tiny_dataset):
    assert cli("dataset", "build", tiny_dataset, "--no-image").code == 0
    for kind in ("datasets", "models", "runtimes"):
        bad = swcli_home / kind / "evil" / "abcd"
        bad.mkdir(parents=True)
        (bad / "manifest.json").write_text("[1, 2")
    for kind in ("dataset", "model", "runtime"):
        res = cli(kind, "list", "-o", "json")
        assert res.code == 0, res.err
        assert [line for line in res.err.splitlines() if line] == [
            f"swcli: warning: skipped {swcli_home / (kind + 's') / 'evil' / 'abcd' / 'manifest.json'}: unreadable manifest: "
            "Expecting ',' delimiter: line 1 column 6 (char 5)"]
    assert [e["name"] for e in json.loads(cli("dataset", "list", "-o", "json").out)] == ["tiny"]
