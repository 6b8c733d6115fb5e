"""Importing user classes by 'module:Class' from a project folder."""

import pytest

from builder.api.dataset import BuildExecutor
from builder.errors import SpecError
from builder.loader import load_class

SLICER = """
from builder.api.dataset import BuildExecutor

class Good(BuildExecutor):
    def iter_data_slice(self, path):
        yield b"x"
    def iter_label_slice(self, path):
        yield b"y"

class NotASlicer:
    pass
"""


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "pkgx").mkdir()
    (tmp_path / "pkgx" / "__init__.py").write_text("")
    (tmp_path / "pkgx" / "slicer.py").write_text(SLICER)
    (tmp_path / "pkgx" / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "pkgx" / "syntax.py").write_text("def f(:\n")
    return tmp_path


def load(project, ref):
    return load_class(ref, project, BuildExecutor, spec_file=project / "dataset.yaml", field="process")


def test_loads_subclass(project):
    cls = load(project, "pkgx.slicer:Good")
    assert list(cls().iter_data_slice("p")) == [b"x"]


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("pkgx.nope:Good", "no module 'pkgx.nope'"),
        ("pkgx.slicer:Missing", "has no 'Missing'"),
        ("pkgx.slicer:NotASlicer", "not a subclass of builder.api.dataset.BuildExecutor"),
        ("pkgx.broken:Good", "RuntimeError: boom at import"),
        ("pkgx.syntax:Good", "syntax error"),
    ],
)
def test_failures_name_file_and_field(project, ref, words):
    with pytest.raises(SpecError) as info:
        load(project, ref)
    assert words in str(info.value)
    assert info.value.field == "process"
    assert "dataset.yaml" in str(info.value)


def test_same_package_name_from_two_projects_does_not_collide(tmp_path):
    for proj, label in (("a", b"A"), ("b", b"B")):
        root = tmp_path / proj / "code"
        root.mkdir(parents=True)
        (root / "__init__.py").write_text("")
        (root / "s.py").write_text(SLICER.replace('b"y"', repr(label)))
    first = load(tmp_path / "a", "code.s:Good")
    second = load(tmp_path / "b", "code.s:Good")
    assert list(first().iter_label_slice("p")) == [b"A"]
    assert list(second().iter_label_slice("p")) == [b"B"]
