"""Runtime snapshots: venv and conda-format envs, layer splitting, runtime.yaml, and their bad inputs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from builder.images.runtime_image import build_runtime_image
from builder.images.env import RuntimeError_, conda_tree, env_layers, split_layers
from builder.errors import SpecError
from builder.build.runtime import EnvResolveError, load_runtime_spec, resolved_venv
from builder.store import Store
from tests.helpers.conda import make_conda_env, write
from tests.helpers.engine import run_removed


def test_split_layers_gives_big_packages_their_own_layer(tmp_path):
    site = tmp_path / "site"
    write(site / "torch" / "lib.so", size=3000)
    write(site / "numpy" / "core.so", size=1500)
    write(site / "six.py", size=10)
    write(site / "six-1.16.dist-info" / "RECORD", size=10)
    layers = split_layers(site, threshold=1000)
    assert [(label, [p.name for p in paths]) for label, paths in layers] == [
        ("00-torch", ["torch"]), ("01-numpy", ["numpy"]), ("02-rest", ["six-1.16.dist-info", "six.py"])]


def test_changing_a_small_package_changes_only_the_rest_layer(tmp_path):
    from builder.images.layers import stat_key

    env = tmp_path / "venv"
    write(env / "pyvenv.cfg", "home = /usr/bin\nversion = 3.11.7\n")
    site = env / "lib/python3.11/site-packages"
    write(site / "torch" / "big.so", size=70 << 20)
    write(site / "six.py", "v1")

    def digests():
        entries, table = env_layers(env, whole_prefix=False)
        assert all(e.arcname.split("/", 2)[2].startswith("lib/python3.11/site-packages/") for e in entries)
        return {t["dir"]: stat_key(t["dir"], [e for e in entries if e.arcname.startswith(t["dir"] + "/")]) for t in table}

    before = digests()
    write(site / "six.py", "v2-longer")
    after = digests()
    assert list(before) == ["layers/00-torch", "layers/01-rest"]
    assert before["layers/00-torch"] == after["layers/00-torch"]
    assert before["layers/01-rest"] != after["layers/01-rest"]


def test_conda_env_is_packed_with_paths_rewritten(tmp_path):
    env = make_conda_env(tmp_path / "conda")
    with conda_tree(env) as tree:
        text = (tree / "lib/python3.11/site-packages/hello/__init__.py").read_text()
        entries, table = env_layers(tree, whole_prefix=True)
    assert "/opt/swcli/env" in text and str(env) not in text
    names = {e.arcname for e in entries}
    assert "layers/00-rest/share/hello/data.txt" in names and "layers/00-rest/bin/python3" in names
    assert "layers/00-rest/lib/python3.11/site-packages/hello/__init__.py" in names


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (lambda p: write(p / "pyvenv.cfg", "version = 3.9.18\n") and write(p / "lib/python3.9/site-packages/x.py"),
         "the environment is Python 3.9, the base image swcli/base:bookworm-py3.11 has Python 3.11"),
        (lambda p: make_conda_env(p, "3.10.4"), "Python 3.10"),
        (lambda p: write(p / "README"), "neither a venv (pyvenv.cfg) nor a conda env"),
        (lambda p: (p / "conda-meta").mkdir(parents=True) or write(p / "conda-meta" / "broken.json", "{nope"),
         "invalid conda prefix"),
    ],
)
def test_bad_envs_are_one_line_errors(tmp_path, swcli_home, setup, words):
    from builder.images.build import DEFAULT_BASE
    from builder.images.image import ConfigChanges, write_image

    # a base whose Python the store knows (its label), as `make base-image` leaves it
    write_image(Store().layout, None, [], ConfigChanges(labels={"io.swcli.python": "3.11"}), refs=[DEFAULT_BASE])
    env = tmp_path / "env"
    env.mkdir()
    setup(env)
    with pytest.raises(RuntimeError_) as info:
        build_runtime_image("x", env, dockerfile_only=tmp_path / "out")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_env_folder(tmp_path):
    with pytest.raises(RuntimeError_, match="does not exist"):
        build_runtime_image("x", tmp_path / "nope", dockerfile_only=tmp_path / "out")


def test_dockerfile_only_writes_the_recipe_and_context(tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    write(env / "lib/python3.11/site-packages/mypkg/__init__.py", "X = 1\n")
    out = tmp_path / "ctx"
    build_runtime_image("tiny", env, dockerfile_only=out)
    dockerfile = (out / "Dockerfile").read_text()
    assert "COPY --chown=0:0 layers/00-rest/ /opt/swcli/env/" in dockerfile
    assert (out / "layers/00-rest/lib/python3.11/site-packages/mypkg/__init__.py").is_file()
    assert (out / "swcli" / "builder" / "cli/container.py").is_file()


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("mode: venv\nrequirements: [six]\n", "name", "missing required field"),
        ("name: r\nmode: venv\nrequirments: [six]\n", "requirments", "did you mean 'requirements'"),
        ("name: r\nmode: docker\n", "mode", "expected 'venv' or 'conda'"),
        ("name: r\nrequirements: nofile.txt\n", "requirements", "does not exist"),
        ("name: r\nbase_image: 'a b'\n", "base_image", "not an image reference"),
    ],
)
def test_runtime_yaml_errors(tmp_path, text, field, words):
    (tmp_path / "runtime.yaml").write_text(text)
    with pytest.raises(SpecError) as info:
        load_runtime_spec(tmp_path)
    assert info.value.field == field and words in str(info.value)


@pytest.mark.slow
def test_requirements_resolve_into_a_cached_venv_and_pip_failures_are_one_line(tmp_path):
    store = Store(tmp_path / "home")
    (tmp_path / "runtime.yaml").write_text("name: sixenv\nrequirements: [six]\n")
    venv = resolved_venv(load_runtime_spec(tmp_path), store)
    assert list(venv.glob("lib/python3.11/site-packages/six.py"))
    assert resolved_venv(load_runtime_spec(tmp_path), store) == venv  # cached
    (tmp_path / "runtime.yaml").write_text("name: bad\nrequirements: ['swcli-no-such-package-anywhere==0.0.1']\n")
    with pytest.raises(EnvResolveError, match="pip could not install the requirements"):
        resolved_venv(load_runtime_spec(tmp_path), store)
    assert not any(p.name.endswith(".tmp") for p in (store.root / "cache" / "envs").iterdir())


@pytest.mark.docker
def test_conda_runtime_image_runs_the_packed_env(tmp_path, base_engine):
    client = base_engine
    env = make_conda_env(tmp_path / "conda")
    result, manifest = build_runtime_image("swcli-test-conda", env, client=client)
    try:
        out = run_removed(client, result.tags[0], ["-c", "import hello, sys; print(hello.PREFIX, sys.executable)"],
                          entrypoint=["python3"]).decode()
        assert out.split() == ["/opt/swcli/env", "/opt/swcli/env/bin/python3"]
        assert manifest["mode"] == "conda"
    finally:
        for tag in result.tags:
            client.images.remove(tag, force=True)
