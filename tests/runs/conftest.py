"""Fixtures of the run tests: a store with evaluations and a pushed model image (``world``), and a fault proxy
in front of the test's registry (``proxy``)."""

from __future__ import annotations

import pytest

from tests.helpers.attach_world import REPO, build_model, evaluate, push_model, stand_in_runtime
from tests.helpers.datasets import write_tiny_dataset


@pytest.fixture()
def world(cli, no_engine, registry, tmp_path):
    """Dataset tiny, model v1 (perfect) and v2 (offset 1) built with images, two runs of v1 and one of v2; v1's image
    pushed as REPO:v1."""
    stand_in_runtime()
    assert cli("dataset", "build", write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3)
                                                                         for i in range(50)], files=3),
               "--no-image").code == 0
    v1 = build_model(cli, tmp_path / "m1", 0)
    runs = [evaluate(cli, v1), evaluate(cli, v1)]
    v2 = build_model(cli, tmp_path / "m2", 1)
    other = evaluate(cli, v2)
    digest = push_model(registry, v1, "v1")
    return {"v1": v1, "v2": v2, "runs": runs, "other": other, "image": f"{registry.address}/{REPO}:v1",
            "digest": digest, "registry": registry}


@pytest.fixture()
def proxy(registry):
    from tests.registry_servers import FaultProxy

    served = FaultProxy(registry.address, [])
    yield served
    served.stop()
