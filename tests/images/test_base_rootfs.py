"""The base rootfs from Debian packages: package names checked before any command, the cache, reproducibility."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from builder.images import base
from builder.images.base import BaseBuildError, PackageNameError, base_rootfs, cache_key, package_list


def _never(cmd, env, log):  # a runner that must not be called
    raise AssertionError(f"mmdebstrap ran: {cmd}")


def _fake_rootfs(path: Path, python: str = "3.12") -> None:
    """A tiny rootfs tar: what python_version reads, nothing else."""
    with tarfile.open(path, "w") as tf:
        for name in ("./usr/", "./usr/bin/", f"./usr/lib/python{python}/"):
            tf.addfile(_dir(name))
        link = tarfile.TarInfo("./usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, f"python{python}"
        tf.addfile(link)
        data = b"ELF"
        exe = tarfile.TarInfo(f"./usr/bin/python{python}")
        exe.size = len(data)
        tf.addfile(exe, io.BytesIO(data))


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


# ---- package names (no mmdebstrap) ----

def test_package_list_adds_the_base_sorts_and_dedups():
    assert package_list() == ("ca-certificates", "python3")
    assert package_list(["libgl1", "libgl1", "curl", "python3"]) == ("ca-certificates", "curl", "libgl1", "python3")
    assert package_list(["libstdc++6", "g++-12", "libglib2.0-0"])[:3] == ("ca-certificates", "g++-12", "libglib2.0-0")


@pytest.mark.parametrize("spec", ["curl=7.88.1-10+deb12u5", "tzdata=2024a-0+deb12u1", "libc6=2.36-9",
                                  "foo=1:2.3.4-1~bpo12+1", "foo=1.0", "foo=1:2:3", "foo=0.0~git20230101"])
def test_versions_follow_debian_grammar(spec):
    assert spec in package_list([spec])


def test_a_pinned_version_wins_over_a_bare_name_and_conflicts_are_refused():
    assert package_list(["python3=3.11.2-1+b1"]) == ("ca-certificates", "python3=3.11.2-1+b1")
    with pytest.raises(PackageNameError, match="conflicts"):
        package_list(["curl=1.0-1", "curl=2.0-1"])


@pytest.mark.parametrize("bad", ["", "a", "Curl", "-curl", "curl;id", "curl id", "curl,wget", "--include=x",
                                 "curl\nwget", "curl=", "curl=abc", "curl=1:2-", "curl=1-2:3", "curl=1.0 ",
                                 "curl=$(id)", "../x.deb", "/tmp/x.deb", "curl:amd64", "curl/bookworm"])
def test_bad_package_names_are_one_line_errors_naming_them(bad, tmp_path):
    with pytest.raises(PackageNameError) as info:
        base_rootfs([bad], cache_dir=tmp_path, run=_never)
    assert info.value.package == bad
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [{"suite": "bookworm;id"}, {"suite": "-x"}, {"mirror": "file:///etc"},
                                {"mirror": "http://x/ y"}, {"mirror": "deb http://x bookworm main"}])
def test_bad_suite_or_mirror_is_refused_before_any_command(kw, tmp_path):
    with pytest.raises(BaseBuildError):
        base_rootfs(cache_dir=tmp_path, run=_never, **kw)


def test_the_command_line_carries_validated_packages_and_the_fixed_epoch(tmp_path):
    seen = {}

    def fake(cmd, env, log):
        seen.update(cmd=cmd, env=env)
        _fake_rootfs(Path(cmd[-1]), "3.11")

    got = base_rootfs(["libgl1"], cache_dir=tmp_path, run=fake)
    assert seen["cmd"][:4] == ["mmdebstrap", "--variant=minbase", "--format=tar",
                               "--include=ca-certificates,libgl1,python3"]
    assert seen["env"]["SOURCE_DATE_EPOCH"] == str(base.SOURCE_DATE_EPOCH)
    assert got.python == "3.11" and got.packages == ("ca-certificates", "libgl1", "python3")
    assert got.tar == tmp_path / f"{got.key}.tar" and got.tar.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{got.key}.json", f"{got.key}.tar"]


def test_key_depends_on_the_sorted_list_suite_and_mirror():
    assert cache_key("bookworm", ["b", "a"]) == cache_key("bookworm", ["a", "b"])
    assert cache_key("bookworm", ["a"]) != cache_key("trixie", ["a"])
    assert cache_key("bookworm", ["a"]) != cache_key("bookworm", ["a", "b"])
    assert cache_key("bookworm", ["a"]) != cache_key("bookworm", ["a"], "http://snapshot.debian.org/archive/x")


# ---- the cache (no mmdebstrap) ----

def test_a_cache_hit_returns_at_once_without_mmdebstrap(tmp_path):
    key = cache_key("bookworm", package_list(["libgl1"]))
    _fake_rootfs(tmp_path / f"{key}.tar", "3.12")
    (tmp_path / f"{key}.json").write_text(json.dumps({"python": "3.12"}))
    started = time.perf_counter()
    got = base_rootfs(["libgl1", "libgl1"], cache_dir=tmp_path, run=_never)
    assert time.perf_counter() - started < 0.5
    assert (got.tar, got.key, got.python) == (tmp_path / f"{key}.tar", key, "3.12")


def test_a_cache_hit_without_its_sidecar_reads_python_from_the_tar(tmp_path):
    key = cache_key("bookworm", package_list())
    _fake_rootfs(tmp_path / f"{key}.tar", "3.13")
    assert base_rootfs(cache_dir=tmp_path, run=_never).python == "3.13"


def test_a_failed_run_leaves_nothing_that_looks_complete(tmp_path):
    def dies(cmd, env, log):
        Path(cmd[-1]).write_bytes(b"half a tar")
        raise BaseBuildError("mmdebstrap failed (exit 25): E: Unable to locate package nope")

    with pytest.raises(BaseBuildError, match="Unable to locate package nope"):
        base_rootfs(["nope"], cache_dir=tmp_path, run=dies)
    assert list(tmp_path.iterdir()) == []


def test_temp_files_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that existed and is gone
    dead = tmp_path / f".{'a' * 64}.{child.pid}.tmp"
    dead_meta = tmp_path / f".{'a' * 64}.{child.pid}.json.tmp"
    live = tmp_path / f".{'b' * 64}.{os.getpid()}.tmp"
    for p in (dead, dead_meta, live):
        p.write_bytes(b"partial")
    base_rootfs(cache_dir=tmp_path, run=lambda cmd, env, log: _fake_rootfs(Path(cmd[-1])))
    assert not dead.exists() and not dead_meta.exists() and live.exists()


def test_a_rootfs_without_python3_is_an_error(tmp_path):
    def no_python(cmd, env, log):
        with tarfile.open(cmd[-1], "w") as tf:
            tf.addfile(_dir("./etc/"))

    with pytest.raises(BaseBuildError, match="no single python3"):
        base_rootfs(cache_dir=tmp_path, run=no_python)
    assert list(tmp_path.iterdir()) == []


def test_mmdebstrap_errors_keep_the_specific_line():
    lines = ["I: running apt-get update...", "E: Unable to locate package nope",
             "E: setup failed: E: apt-get ... install python3 nope failed", "I: removing tempdir", "E: mmdebstrap failed to run"]
    assert base._last_error(lines) == "E: Unable to locate package nope"
    assert base._last_error(["something odd"]) == "something odd"


def test_main_prints_the_tar_path_and_errors_in_one_line(tmp_path, capsys):
    def fake_build(packages, **kw):
        return base.BaseRootfs(tmp_path / "k.tar", "k", "3.11", tuple(packages))

    assert base.main(["--out", str(tmp_path), "libgl1"], build=fake_build) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'k.tar'}\n"
    assert base.main(["--out", str(tmp_path), "--quiet", "Bad;name"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Bad;name" in err


# ---- real mmdebstrap ----

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.mmdebstrap
def test_two_runs_give_byte_identical_tars(tmp_path):
    first = base_rootfs(cache_dir=tmp_path / "one")
    second = base_rootfs(cache_dir=tmp_path / "two")
    assert first.key == second.key
    assert _sha256(first.tar) == _sha256(second.tar)
    assert first.python == second.python and first.python.startswith("3.")
    _check_contents(first.tar)


def _check_contents(tar: Path) -> None:
    """The user, shadow's fixed last-change day, and none of what varies between runs."""
    with tarfile.open(tar) as tf:
        names = set(tf.getnames())
        shadow = tf.extractfile("./etc/shadow").read().decode()
    assert "./home/swcli" in names
    assert f"swcli:!:{base.SOURCE_DATE_EPOCH // 86400}:" in shadow
    assert not [n for n in names if n.startswith("./var/lib/apt/lists/") and not n.endswith(("/lock", "/partial"))]
    assert not [n for n in names if n.startswith("./var/cache/apt/") and n.endswith((".deb", ".bin"))]
    assert not [n for n in names if n.startswith("./var/log/") and n.endswith(".log")]
    assert "./var/cache/ldconfig/aux-cache" not in names and "./etc/machine-id" not in names
