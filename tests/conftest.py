"""Shared fixtures and the two rules every test runs under.

- Isolation: no test reads or writes the user's store, Docker config or registry certificates. Every store and
  cache path swcli takes from the environment or from ``$HOME`` points into the test's ``tmp_path`` (into a
  session folder for module- and session-scoped fixtures), whether or not the test asks for ``swcli_home``.
  The one cache shared on purpose is the base rootfs cache (``$SWCLI_BASE_CACHE``, as the session found it):
  it is content-keyed, shared by every store by design, and filling it takes mmdebstrap half a minute.
- Capabilities: a test that needs something of the machine (a Docker engine, docker-registry, Chromium...)
  carries the marker (pyproject.toml lists them), or asks for a fixture marked ``@needs(marker)``
  (tests/helpers/capabilities.py). A missing capability skips the test, or fails it on CI (``CI=true``), which
  provides them all. Nothing else skips a test for want of a tool.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sklearn.metrics  # noqa: F401  (loaded once for the session: otherwise every in-process `model eval` here
#                        starts a scoring helper that imports it again, ~1.5 s each; tests/evaluate/test_metric_worker.py
#                        and the subprocess tests cover the helper)

from builder.cli import main
from tests.helpers import capabilities
from tests.helpers.capabilities import needs
from tests.helpers.cli import CliResult
from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.engine import engine_or_none
from tests.helpers.models import HANDLER, write_model

SHARED_BASE_CACHE = Path(os.environ.get("SWCLI_BASE_CACHE") or Path.home() / ".cache" / "swcli-base")


# ------------------------------------------------------------------------------------------------ isolation


def _isolate(monkeypatch, root: Path) -> Path:
    """Every path swcli reads from the environment or ``$HOME`` (store, Docker config, registry certificates)
    under ``root``; the base rootfs cache is the session's. Returns the store root (not created)."""
    home = root / "swcli-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(root / "docker-config"))
    monkeypatch.setenv("SWCLI_DOCKER_CERTS_D", str(root / "certs.d"))
    monkeypatch.setenv("SWCLI_BASE_CACHE", str(SHARED_BASE_CACHE))
    return home


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory):
    """What module- and session-scoped fixtures (built runtimes, registries) write goes to a session folder."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("session"))
        yield


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch) -> Path:
    """A fresh store (and Docker config...) per test, under its tmp_path: no test sees another's, or the user's."""
    return _isolate(monkeypatch, tmp_path)


@pytest.fixture()
def swcli_home(_isolated) -> Path:
    """The test's store root, ``$SWCLI_HOME`` (for the tests that look inside it)."""
    return _isolated


# --------------------------------------------------------------------------------------------- capabilities


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: a fixture's marker counts there too
def pytest_collection_modifyitems(config, items):
    """A test that asks for a fixture marked ``@needs(marker)``, directly or through other fixtures, carries it."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:  # not a python test function
            continue
        for name in item.fixturenames:
            defs = info.name2fixturedefs.get(name)
            marker = getattr(defs[-1].func, "capability", None) if defs else None
            if marker and not item.get_closest_marker(marker):
                item.add_marker(marker)


@pytest.hookimpl(tryfirst=True)  # before the fixtures are set up
def pytest_runtest_setup(item):
    for marker in sorted({m.name for m in item.iter_markers()} & capabilities.PROBES.keys()):
        capabilities.require(marker)


# -------------------------------------------------------------------------------------------------- engine


@pytest.fixture()
def no_engine(monkeypatch):
    """No Docker engine answers: what runs here must talk to registries (or the store) alone."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")


@pytest.fixture(autouse=True)
def _no_docker_volume_left(request):
    """A docker test fails when it leaves a volume behind. A dataset image declares VOLUME /dataset, so every
    container of it gets an anonymous volume holding a copy of the dataset; removing the container without ``v``
    keeps that copy on disk for good (in swcli as in a test). Only dangling volumes count (no container uses
    them): another process's volumes in use are neither blamed nor touched."""
    client = engine_or_none() if request.node.get_closest_marker("docker") else None
    if client is None:
        yield
        return
    dangling = lambda: {v.name for v in client.volumes.list(filters={"dangling": True})}  # noqa: E731
    before = dangling()
    yield
    left = dangling() - before
    for name in left:
        with contextlib.suppress(Exception):  # gone meanwhile: the assertion still names the leak
            client.volumes.get(name).remove(force=True)
    client.close()
    assert not left, f"{len(left)} docker volume(s) left behind"


@pytest.fixture(scope="module")
@needs("docker")
def base_engine():
    """A docker-py client whose engine answers and holds the base image (the `docker` marker)."""
    client = engine_or_none(timeout=300)
    assert client is not None, "no Docker engine answers a ping"
    return client


@pytest.fixture(scope="module")
@needs("docker")
def engine():
    """A docker-py client whose engine holds the base image (the `docker` marker); the images tagged while the
    module ran are removed after it."""
    import docker

    client = engine_or_none()
    assert client is not None, "no Docker engine answers a ping"
    before = {tag for image in client.images.list() for tag in image.tags}
    yield client
    for image in client.images.list():
        for tag in image.tags:
            if tag not in before:
                with contextlib.suppress(docker.errors.ImageNotFound):  # another session on this engine got there first
                    client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def tiny_runtime(engine, tmp_path_factory):
    """A runtime from an empty venv: the swcli layer brings numpy and scikit-learn, all the toy handler needs."""
    from builder.images.runtime_image import build_runtime_image

    venv = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    result, manifest = build_runtime_image("swcli-test-env", venv, client=engine)
    return result.tags[0]


# -------------------------------------------------------------------------------------------------- registry


@pytest.fixture()
@needs("registry")
def registry(tmp_path):
    """A real docker-registry on a loopback port, plain HTTP, stopped after the test."""
    from tests.registry_servers import Registry

    reg = Registry(tmp_path / "registry")
    yield reg
    reg.stop()


# ------------------------------------------------------------------------------------------- cli and projects


@pytest.fixture()
def cli(swcli_home, capsys):
    """Run ``swcli ARGS...`` in-process; returns CliResult(code, out, err)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture()
def tiny_dataset(tmp_path) -> Path:
    """A 50-record dataset project: data = 10..59 bytes of the index, label = index % 3."""
    return write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3) for i in range(50)], files=3)


@pytest.fixture()
def model_dir(tmp_path):
    root = write_model(tmp_path / "model", HANDLER)
    (root / ".swignore").write_text("models/\n")  # weights still ship: model.yaml names them
    return root


@pytest.fixture()
@needs("base_rootfs")
def runtime(cli, tmp_path):
    """A runtime from an empty venv, written into this test's store only (`--no-load`): swrt/swcli-test-env."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    res = cli("runtime", "build", "--name", "swcli-test-env", "--venv", venv, "--no-load")
    assert res.code == 0, res.err
    return "swcli-test-env"


@pytest.fixture()
def project(model_dir, tiny_dataset):
    """The tiny numpy-only model of tests/helpers/models.py and the 50-record dataset."""
    return model_dir, tiny_dataset
