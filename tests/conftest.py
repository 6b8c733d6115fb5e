"""Shared fixtures: an isolated store per test and a CLI runner that returns exit code and output."""

from __future__ import annotations

import contextlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import sklearn.metrics  # noqa: F401  (loaded once for the session: otherwise every in-process `model eval` here
#                        starts a scoring helper that imports it again, ~1.5 s each; tests/evaluate/test_metric_worker.py
#                        and the subprocess tests cover the helper)

from builder.cli import main


@pytest.fixture()
def swcli_home(tmp_path, monkeypatch) -> Path:
    """Point SWCLI_HOME at a fresh folder so no test sees another's store (or the user's)."""
    home = tmp_path / "swcli-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    return home


@pytest.fixture()
def no_engine(monkeypatch):
    """No Docker engine answers: what runs here must talk to registries (or the store) alone."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")


@pytest.fixture()
def registry(tmp_path):
    """A real docker-registry on a loopback port, plain HTTP, stopped after the test."""
    from tests.registry_servers import Registry

    reg = Registry(tmp_path / "registry")
    yield reg
    reg.stop()


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


def engine_or_none(timeout: int = 120):
    """A docker-py client whose engine answered a ping, else None."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception:  # no engine: the test skips itself
        return None


@pytest.fixture(scope="module")
def base_engine():
    """A docker-py client whose engine answers and holds the base image (``make base-image``); else the test
    skips (CI builds both first, so there it runs)."""
    docker = pytest.importorskip("docker")
    from tests.images.test_images_docker import BASE

    client = engine_or_none(timeout=300)
    if client is None:
        pytest.skip("no Docker engine answers a ping")
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{BASE} is not in the engine (make base-image)")
    return client


def run_removed(engine, image: str, command=None, **kwargs) -> bytes:
    """``docker run --rm IMAGE COMMAND``: stdout, or ContainerError with stderr. docker-py's ``remove=True``
    removes the container but not its anonymous volumes."""
    from docker.errors import ContainerError

    container = engine.containers.run(image, command, detach=True, **kwargs)
    try:
        code = container.wait()["StatusCode"]
        if code:
            raise ContainerError(container, code, command, image, container.logs(stdout=False, stderr=True))
        return container.logs(stdout=True, stderr=False)
    finally:
        container.remove(v=True, force=True)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(swcli_home, capsys):
    """Run ``swcli ARGS...`` in-process; returns CliResult(code, out, err)."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


SLICER = '''
import pickle

from builder.api.dataset import BuildExecutor


class Slicer(BuildExecutor):
    """Records are the rows of an .npy-free pickle: {"data": [bytes...], "labels": [int...]}."""

    def iter_data_slice(self, path):
        with open(path, "rb") as fh:
            for item in pickle.load(fh)["data"]:
                yield item

    def iter_label_slice(self, path):
        with open(path, "rb") as fh:
            for label in pickle.load(fh)["labels"]:
                yield bytes([label])
'''


def write_tiny_dataset(root: Path, records: list[tuple[bytes, int]], *, files: int = 1, yaml_extra: str = "",
                       alignment: str = "64", volume: str = "1k", slicer: str = SLICER) -> Path:
    """A dataset project with ``records`` split over ``files`` pickles; returns its folder."""
    import pickle

    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "slicer.py").write_text(slicer)
    data = root / "data"
    data.mkdir(exist_ok=True)
    per = max(1, -(-len(records) // files))
    for n in range(files):
        chunk = records[n * per : (n + 1) * per]
        with open(data / f"part_{n}.pkl", "wb") as fh:
            pickle.dump({"data": [d for d, _ in chunk], "labels": [lbl for _, lbl in chunk]}, fh)
    (root / "dataset.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: tiny
            data_dir: data
            data_filter: "part_*.pkl"
            label_filter: "part_*.pkl"
            process: code.slicer:Slicer
            desc: tiny test dataset
            attr:
              alignment_size: {alignment}
              volume_size: {volume}
            """
        )
        + yaml_extra
    )
    return root


@pytest.fixture()
def tiny_dataset(tmp_path) -> Path:
    """A 50-record dataset project: data = 10..59 bytes of the index, label = index % 3."""
    return write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3) for i in range(50)], files=3)
