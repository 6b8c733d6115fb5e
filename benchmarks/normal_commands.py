#!/usr/bin/env python3
"""Normal commands, this checkout against others, alternated in one run: no hardening may slow them down.

For each tree (this checkout, then every ``--tree DIR``: e.g. ``git worktree add /tmp/before efaaa35``), in a store
of its own, the CIFAR example's dataset and model are built once (``--no-image`` for the model; the dataset image is
written into the store's layout with ``--no-load``). Then, ``--repeat`` rounds, each tree in turn, as a new
``python -m builder`` process of that tree:

- ``push``: the dataset image into a new, empty Debian ``docker-registry`` on 127.0.0.1 (the gzip cache is warm
  after the first round, so from then on this times the client and the registry, not the compressor);
- ``pull``: that image back into an empty store;
- ``eval``: ``model eval cifar_net --dataset cifar10`` over the 10,000 test images, in-process.

Prints each round's wall seconds and the medians. Needs ``docker-registry``, the base image in the engine
(``make base-image``) and the CIFAR data (fetched like the other benchmarks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._cifar import example_copy  # noqa: E402


def run(tree: Path, home: Path, *args: str) -> float:
    """``swcli ARGS`` from ``tree`` with ``home`` as its store: wall seconds; a failure stops the benchmark."""
    env = {**os.environ, "SWCLI_HOME": str(home), "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "builder", *args], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{tree}: swcli {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return took


def prepare(tree: Path, project: Path, work: Path) -> Path:
    home = work / f"home-{abs(hash(str(tree)))}"
    run(tree, home, "dataset", "build", str(project), "--no-load")
    run(tree, home, "model", "build", str(project), "--no-image", "--skip-gen-env")
    return home


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to compare")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs when the example has no weights yet")
    args = ap.parse_args()
    from tests.registry_servers import Registry

    project = example_copy()
    if not (project / "models" / "cifar_net.pth").is_file():
        subprocess.run([sys.executable, "-m", "code.train", "--epochs", str(args.epochs)], cwd=project, check=True,
                       capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="swcli-bench-normal-"))
    trees = [REPO, *[t.resolve() for t in args.tree]]
    homes = {tree: prepare(tree, project, work) for tree in trees}
    times: dict[tuple[Path, str], list[float]] = {}
    try:
        for round_ in range(args.repeat):
            for tree in trees:
                registry = Registry(work / f"registry-{round_}-{trees.index(tree)}")
                try:
                    ref = f"{registry.address}/swds/cifar10:bench"
                    pulled = work / f"pulled-{round_}-{trees.index(tree)}"
                    times.setdefault((tree, "push"), []).append(run(tree, homes[tree], "dataset", "push", "cifar10",
                                                                    ref))
                    times.setdefault((tree, "pull"), []).append(run(tree, pulled, "pull", ref))
                    shutil.rmtree(pulled, ignore_errors=True)
                finally:
                    registry.stop()
                out = work / f"eval-{round_}-{trees.index(tree)}"
                times.setdefault((tree, "eval"), []).append(run(tree, homes[tree], "model", "eval", "cifar_net",
                                                                "--dataset", "cifar10", "-o", str(out)))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'tree':<40} {'command':<6} {'rounds (s)':<28} median")
    for (tree, command), values in times.items():
        rounds = " ".join(f"{v:.2f}" for v in values)
        print(f"{str(tree):<40} {command:<6} {rounds:<28} {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
