"""The long steps of a build are named as they start (issue 21): in a log, one stderr line each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from builder.build.runtime import BASE_STEP


def _empty_venv(path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


@pytest.mark.base_rootfs
def test_runtime_build_names_its_step_on_stderr(cli, tmp_path):
    res = cli("runtime", "build", "--name", "steps", "--venv", _empty_venv(tmp_path / "venv"), "--no-load")
    assert res.code == 0, res.err
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert lines[-1] == "building runtime steps..." and set(lines[:-1]) <= {BASE_STEP + "..."}, res.err
    assert "built runtime" in res.out


@pytest.mark.mmdebstrap
@pytest.mark.slow
def test_the_first_base_build_is_named_before_it_starts(cli, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("SWCLI_BASE_CACHE", str(tmp_path / "empty-base-cache"))  # this machine's first image build
    res = cli("dataset", "build", tiny_dataset, "--no-load")
    assert res.code == 0, res.err
    assert [line for line in res.err.splitlines() if line.strip()] == [BASE_STEP + "..."], res.err
    again = cli("dataset", "build", tiny_dataset, "--no-load")  # built once: not named again
    assert again.code == 0 and again.err.strip() == "", again.err
