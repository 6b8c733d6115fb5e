"""The shape of tests/: no test module (``test_*.py``) and no conftest is imported by another module, imports inside
functions included; what tests share lives in ``conftest.py`` (fixtures) or in modules that are not test modules
(tests/helpers/, tests/registry_servers.py, tests/hostile_images.py). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    return ".".join(path.relative_to(root.parent).with_suffix("").parts)


def _imported(tree: ast.AST) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, anywhere in the file (``from a import b`` counts
    both ``a`` and ``a.b``: b may be a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of_test_modules(root: Path = TESTS) -> list[str]:
    """``importer -> imported`` for every import of a test module or a conftest under ``root``."""
    tests = {_module_name(p, root) for p in root.rglob("*.py") if p.name.startswith("test_") or p.name == "conftest.py"}
    return sorted(f"{_module_name(p, root)} -> {name}" for p in root.rglob("*.py")
                  for name in _imported(ast.parse(p.read_text(), str(p))) if name in tests)


def test_the_reader_sees_imports_of_test_modules_inside_functions(tmp_path):
    root = tmp_path / "tests"
    (root / "pkg").mkdir(parents=True)
    (root / "conftest.py").write_text("")
    (root / "helper.py").write_text("X = 1\n")
    (root / "pkg" / "test_a.py").write_text("from tests.helper import X\n\ndef f():\n    from tests.pkg.test_b import y\n")
    (root / "pkg" / "test_b.py").write_text("import tests.conftest\nfrom tests.pkg import test_a\ny = 1\n")
    assert imports_of_test_modules(root) == ["tests.pkg.test_a -> tests.pkg.test_b", "tests.pkg.test_b -> tests.conftest",
                                           "tests.pkg.test_b -> tests.pkg.test_a"]


def test_no_module_imports_a_test_module_or_a_conftest():
    assert imports_of_test_modules() == []
