"""What a user relies on without checking: a package's version covers everything in it (the env lock too), an
image tag names one image for good, a bad flag value is a usage error (exit 2) whatever checks it, and a store
root that is not a folder is one line and a non-zero exit, never an empty table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.store import Store
from tests.test_dataset_build import one_line_error
from tests.test_model import model_dir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _built(res) -> tuple[str, str]:
    """(version, env lock) from `model build`'s summary line."""
    assert res.code == 0, res.err
    said = re.search(r"built model modthree:(\w+): .* env lock: (\S+?),", res.out)
    assert said, res.out
    return Store().resolve("model", f"modthree:{said.group(1)}").version, said.group(2)


# ------------------------------------------------------------------------------------------------- env lock


def test_the_env_lock_is_part_of_the_version_skip_first(cli, model_dir, swcli_home, tmp_path, monkeypatch):
    skipped, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert said == "skipped"
    locked, said = _built(cli("model", "build", "--no-image", model_dir))
    assert said == "pip-freeze" and locked != skipped
    assert {e.version for e in Store().list("model")} == {skipped, locked}
    assert Store().resolve("model", f"modthree:{locked}").manifest["env_lock"] == "pip-freeze"
    assert Store().resolve("model", f"modthree:{skipped}").manifest["env_lock"] is None
    # a fresh store gives the same version for the same command
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh"))
    fresh, said = _built(cli("model", "build", "--no-image", model_dir))
    assert (fresh, said) == (locked, "pip-freeze")
    fresh, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert (fresh, said) == (skipped, "skipped")


def test_the_env_lock_is_part_of_the_version_lock_first(cli, model_dir):
    locked, said = _built(cli("model", "build", "--no-image", model_dir))
    assert said == "pip-freeze"
    skipped, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert said == "skipped" and skipped != locked
    entry = Store().resolve("model", f"modthree:{skipped}")
    assert not (entry.path / "env.lock").exists()
    # the same command again is the same version: re-locking an unchanged env does not re-version
    again, said = _built(cli("model", "build", "--no-image", model_dir))
    assert (again, said) == (locked, "pip-freeze")
    assert len(Store().list("model")) == 2


def test_another_lock_text_is_another_version(model_dir, swcli_home):
    from builder.services.model_build import build_model
    from builder.services.runtime_build import EnvLock

    a = build_model(model_dir, env_lock=lambda: EnvLock("pip-freeze", "numpy==1.0\n")).entry
    b = build_model(model_dir, env_lock=lambda: EnvLock("pip-freeze", "numpy==2.0\n")).entry
    c = build_model(model_dir, env_lock=lambda: EnvLock("dist-info", "numpy==1.0\n")).entry
    assert len({a.version, b.version, c.version}) == 3
    assert (b.path / "env.lock").read_text() == "numpy==2.0\n"
