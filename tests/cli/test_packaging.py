"""What a wheel will hold and what `make` installs: every subpackage listed, the templates mapped in, every
declared dependency pinned by requirements.lock (the lock is what `make venv` and the wheel test install from)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_subpackage_and_the_templates_are_in_the_wheel():
    tool = PYPROJECT["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "builder").rglob("__init__.py")}
    assert on_disk <= set(tool["packages"]), f"missing from [tool.setuptools] packages: {sorted(on_disk - set(tool['packages']))}"
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["builder.templates"] == "templates"
    assert {"Dockerfile.j2", "report.html.j2"} <= {p.name for p in (ROOT / "templates").glob("*.j2")}


def test_the_lock_pins_every_declared_dependency():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[_norm(name)] = version.strip()
    project = PYPROJECT["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
                + project["optional-dependencies"]["torch"]]
    for req in declared:
        assert _norm(req.name) in pins, f"requirements.lock has no pin for {req.name}; run `make lock`"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), f"{req} vs lock {pins[_norm(req.name)]}"
