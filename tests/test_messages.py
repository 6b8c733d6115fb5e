"""What swcli prints never sends a user to a Makefile target: a `pip install` has no checkout (issue 21)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return sorted(set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M)))


def test_no_string_in_builder_names_a_make_target():
    targets = _make_targets()
    assert "base-image" in targets and "docker" in targets
    said = re.compile(rf"\bmake ({'|'.join(map(re.escape, targets))})\b")
    found = []
    for path in sorted((ROOT / "builder").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and said.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {said.search(node.value).group(0)}")
    assert found == [], found
