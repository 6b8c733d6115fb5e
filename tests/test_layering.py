"""The shape of builder/ (docs/architecture.md): no import cycles and no import pointing up a layer, imports inside
functions included; no module over 400 lines and no function over 60. Read from the source with ``ast``, so a lazy
import inside a function counts like any other."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shape():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "scripts" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shape = _shape()
MODULES = shape.modules(ROOT)
GRAPH = shape.imports(MODULES)


def test_the_reader_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "builder"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("def f():\n    from builder.low import b\n")
    (package / "low" / "b.py").write_text("import builder.low.a as a\n")
    (package / "cli.py").write_text("")
    (package / "low" / "c.py").write_text("def g():\n    from builder import cli\n")
    mods = shape.modules(tmp_path)
    graph = shape.imports(mods)
    assert shape.cycles(graph) == [["builder.low.a", "builder.low.b"]]
    assert shape.upward(graph) == [("builder.low.c", "builder.cli")]


def test_no_import_cycles():
    assert shape.cycles(GRAPH) == []


def test_imports_point_down_the_layers():
    assert [f"{src} -> {dst}" for src, dst in shape.upward(GRAPH)] == []


def test_every_layer_exists():
    """A renamed package must be renamed in LAYERS too, or its modules would silently count as adapters."""
    for name, prefixes in shape.LAYERS:
        for prefix in prefixes:
            assert prefix in MODULES, f"{name}: {prefix} is not a module of builder/"


def test_modules_and_functions_stay_small():
    assert shape.long_modules(MODULES) == []
    assert shape.long_functions(MODULES) == []
