"""`--dataset-mount init`: the init container, run for real in a dataset image, copies only its shard's volumes,
and `eval --shard` reads that copy exactly as it reads the whole dataset."""

from __future__ import annotations

import os

import pytest

from builder.jobs.k8s_init import PROGRAM, PROGRAM_ENV, init_command
from builder.evaluate.remote_dataset import volume_range
from builder.evaluate.sharding import Shard
from builder.store import Store
from tests.helpers.engine import run_removed
from tests.helpers.layered_datasets import project

pytestmark = pytest.mark.docker


def run_init(engine, image: str, shards: int, index: int, out) -> str:  # noqa: F811
    out.mkdir()
    os.chmod(out, 0o777)  # the pod's emptyDir is writable by uid 1000
    command = init_command(shards)
    logs = run_removed(engine, image, command[1:], entrypoint=command[:1], user="1000:1000",
                       environment={"JOB_COMPLETION_INDEX": str(index), PROGRAM_ENV: PROGRAM},
                       volumes={str(out): {"bind": "/copy", "mode": "rw"}})
    return logs.decode()


def test_each_pod_copies_only_the_volumes_of_its_shard(engine, cli, model_dir, tmp_path):  # noqa: F811
    res = cli("dataset", "build", project(tmp_path / "p", 300))
    assert res.code == 0, res.err
    entry = Store().resolve("dataset", "tiny")
    image = f"swds/tiny:{entry.version}"
    volumes = [s["file"] for s in entry.manifest["shards"]]
    assert len(volumes) > 20
    everything = set(run_removed(engine, image, ["ls", "-A", "/dataset"]).decode().split())
    assert {p.name for p in entry.path.iterdir()} <= everything
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    total = sum(s["records"] for s in entry.manifest["shards"])
    try:
        copied_volumes = 0
        for index in range(3):
            out = tmp_path / f"copy-{index}"
            logs = run_init(engine, image, 3, index, out)
            start, stop = Shard(index, 3).range(total)
            wanted = volume_range(entry.manifest, start, stop, "test")
            assert {p.name for p in out.iterdir()} == everything - (set(volumes) - set(wanted))
            assert len(wanted) < len(volumes) / 2
            assert f"records {start}..{stop} of {total}: copied {len(wanted)} of {len(volumes)} volumes" in logs
            copied_volumes += len(wanted)
            for name in wanted:
                assert (out / name).read_bytes() == (entry.path / name).read_bytes()
            # the shard read from the slice-only copy gives the bytes it gives from the whole dataset
            for where, source in (("copy", out), ("whole", "tiny")):
                res = cli("model", "eval", "modthree", "--dataset", source, "--shard", f"{index}/3",
                          "-o", tmp_path / f"eval-{where}-{index}")
                assert res.code == 0, res.err
            assert (tmp_path / f"eval-copy-{index}" / "results.jsonl").read_bytes() == \
                (tmp_path / f"eval-whole-{index}" / "results.jsonl").read_bytes()
        assert copied_volumes <= len(volumes) + 2  # N pods move about the dataset once (a shared edge volume each)
        # an image without python3 (a --base-image of the user's): the init copies the whole dataset, as before.
        # PATH names a folder holding only cp, so `command -v python3` finds none (merged /usr has it everywhere)
        only_cp = tmp_path / "only-cp"
        only_cp.mkdir()
        (only_cp / "cp").symlink_to("/usr/bin/cp")
        out = tmp_path / "copy-no-python"
        out.mkdir()
        os.chmod(out, 0o777)
        command = init_command(3)
        run_removed(engine, image, command[1:], entrypoint=["/bin/sh"], user="1000:1000",
                    environment={"JOB_COMPLETION_INDEX": "0", PROGRAM_ENV: PROGRAM, "PATH": "/only-cp"},
                    volumes={str(out): {"bind": "/copy", "mode": "rw"}, str(only_cp): {"bind": "/only-cp", "mode": "ro"}})
        assert {p.name for p in out.iterdir()} == everything
        assert all((out / name).read_bytes() == (entry.path / name).read_bytes() for name in volumes)
    finally:
        engine.images.remove(image, force=True)
