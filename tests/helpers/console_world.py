"""A store whose entries were pushed to the test's registry, for the console's data sources: dataset tiny (with its
image), model modthree on the stand-in runtime, one run of it; the model pushed as ``team/modthree:v1`` and
``other/modthree:v1``, the dataset as ``team/tiny:v1``, all with ``swcli push`` (so the push records are real)."""

from __future__ import annotations

import re

from tests.helpers.attach_world import build_model, evaluate, model_image, stand_in_runtime
from tests.helpers.datasets import write_tiny_dataset


def pushed_world(cli, registry, tmp_path) -> dict:
    stand_in_runtime()
    data = write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3) for i in range(50)], files=3)
    res = cli("dataset", "build", data, "--no-load")
    assert res.code == 0, res.err
    version = build_model(cli, tmp_path / "m1", 0)
    run = evaluate(cli, version)
    address = registry.address
    refs = {"model": f"{address}/team/modthree:v1", "elsewhere": f"{address}/other/modthree:v1",
            "dataset": f"{address}/team/tiny:v1"}
    digests = {}
    for key, kind, name in (("model", "model", "modthree"), ("elsewhere", "model", "modthree"),
                            ("dataset", "dataset", "tiny")):
        res = cli(kind, "push", name, refs[key])
        assert res.code == 0, res.err
        digests[key] = re.search(r"@(sha256:[0-9a-f]{64})", res.out).group(1)
    return {"version": version, "run": run, "refs": refs, "digests": digests, "image": model_image(version)}
