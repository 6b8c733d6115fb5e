""".swignore semantics (Docker's .dockerignore rules) and the source walker."""

from __future__ import annotations

import os

import pytest

from builder.snapshot import IgnoreRules, SnapshotError, walk_source


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/README.md", False),  # * stays in one segment, anchored at the root
        (["**/*.md"], "docs/deep/README.md", True),
        (["docs"], "docs/deep/README.md", True),  # a matching dir takes its children
        (["docs/"], "docs/a.txt", True),  # trailing slash dropped
        (["/docs"], "docs/a.txt", True),  # leading slash dropped
        (["temp?"], "temp1", True),
        (["temp?"], "temp12", False),
        (["*", "!keep.txt"], "keep.txt", False),
        (["*", "!keep.txt"], "other.txt", True),
        (["data", "!data/keep.txt"], "data/keep.txt", False),
        (["data", "!data/keep.txt"], "data/drop.txt", True),
        (["!data/keep.txt", "data"], "data/keep.txt", True),  # the last match wins
        (["[a-c].txt"], "b.txt", True),
        (["[!a-c].txt"], "b.txt", False),
        (["# comment", "", "x"], "x", True),
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
    ],
)
def test_dockerignore_semantics(patterns, path, ignored):
    assert IgnoreRules(patterns).ignored(path) is ignored


def make_tree(root):
    files = {
        "model.yaml": "x",
        "code/ppl.py": "x",
        "code/__pycache__/ppl.cpython-311.pyc": "x",
        ".git/config": "x",
        ".env": "SECRET=1",
        "keys/id_rsa": "k",
        "keys/server.pem": "k",
        "data/big.bin": "x" * 100,
        "models/net.pth": "w",
        "venv/pyvenv.cfg": "home = /usr",
        "venv/lib/x.py": "x",
        "notes.md": "x",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.chmod(root / "code/ppl.py", 0o755)
    return root


def test_defaults_keep_secrets_envs_and_caches_out(tmp_path):
    make_tree(tmp_path)
    rels = [f.rel for f in walk_source(tmp_path)]
    assert rels == ["code/ppl.py", "data/big.bin", "model.yaml", "models/net.pth", "notes.md"]
    assert next(f for f in walk_source(tmp_path) if f.rel == "code/ppl.py").executable


def test_swignore_applies_and_forced_weights_survive(tmp_path):
    make_tree(tmp_path)
    (tmp_path / ".swignore").write_text("data/\n*.md\nmodels\n")
    rels = [f.rel for f in walk_source(tmp_path, always_include=["models/net.pth"])]
    assert rels == [".swignore", "code/ppl.py", "model.yaml", "models/net.pth"]


def test_symlinks_inside_are_kept_as_links_and_outside_refused(tmp_path):
    make_tree(tmp_path)
    os.symlink("code/ppl.py", tmp_path / "link.py")
    link = next(f for f in walk_source(tmp_path) if f.rel == "link.py")
    assert link.link == "code/ppl.py"
    os.symlink("/etc/passwd", tmp_path / "escape")
    with pytest.raises(SnapshotError, match="escape: symlink points outside the source tree"):
        walk_source(tmp_path)


def test_walk_is_sorted_and_stable(tmp_path):
    make_tree(tmp_path)
    assert walk_source(tmp_path) == walk_source(tmp_path)
