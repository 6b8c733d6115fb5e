#!/usr/bin/env python3
"""Sharded evaluation speed-up and bytes pushed, on the CIFAR example with the torch CPU env, in one run.

1. Sharding: the 10,000 CIFAR test images, then all 60,000 (train + test batches), evaluated in containers
   through the Indexed-Job simulation (`swcli job run --shards N`: the merge container first, then N eval
   containers at once), N = 1, 2; N = 1 is the plain single-container `job run`. Prints wall time (best of
   --repeat) and speed-up, the same for the ppl phase alone, and checks that every N's metrics.json is
   byte-identical to N = 1's.
2. Registry: a real `docker-registry` on 127.0.0.1; push the model image once (every layer), change one line of
   code, rebuild and push again. Prints the compressed bytes uploaded each time, summed from the blobs the
   registry's own access log says were uploaded, and the seconds each push took.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cifar import example_copy  # noqa: E402


def swcli(*args: str) -> None:
    """Run one CLI command in this process, as a user would; stop the benchmark on a failure."""
    from builder.cli import main

    code = main([str(a) for a in args])
    if code:
        raise SystemExit(f"swcli {' '.join(map(str, args))} exited {code}")


def uploaded_bytes(registry_root: Path, log: Path, since: int) -> tuple[int, int]:
    """(blobs, bytes) uploaded after byte ``since`` of the access log: each PUT ...?digest= completes one blob."""
    digests = re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ]+digest=sha256%3A([0-9a-f]{64})', log.read_text()[since:])
    store = registry_root / "blobs" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return len(digests), sum((store / d[:2] / d / "data").stat().st_size for d in digests)


def bench_shards(dataset: str, counts: list[int], repeat: int) -> None:
    """Wall time of the whole job (containers, imports, merge) and of its ppl phase alone (the slowest shard)."""
    import json

    from builder.services.job import run_job

    out_root = Path(tempfile.mkdtemp(prefix="swcli-bench-shards-"))
    best: dict[int, tuple[float, float]] = {}
    for count in counts:
        for attempt in range(repeat):
            out = out_root / f"n{count}-{attempt}"
            started = time.perf_counter()
            code = run_job("cifar_net", dataset, out, shards=count, log=lambda line: None)
            elapsed = time.perf_counter() - started
            if code:
                raise SystemExit(f"job run --shards {count} exited {code}")
            seconds = json.loads((out / "run.json").read_text())["seconds"]
            ppl = seconds.get("slowest_shard", seconds.get("ppl_phase"))
            best[count] = min(best.get(count, (elapsed, ppl)), (elapsed, ppl))
        same = (out_root / f"n{count}-0" / "metrics.json").read_bytes() == (out_root / f"n{counts[0]}-0" / "metrics.json").read_bytes()
        wall, ppl = best[count]
        print(f"{dataset} shards N={count}: {wall:6.2f} s wall (best of {repeat}), speed-up x{best[counts[0]][0] / wall:.2f};"
              f"  ppl phase {ppl:5.2f} s, speed-up x{best[counts[0]][1] / ppl:.2f};"
              f"  metrics.json identical to N={counts[0]}: {same}")

    metrics = json.loads((out_root / f"n{counts[0]}-0" / "metrics.json").read_text())
    print(f"  ({metrics['record_count']:,} records, accuracy {metrics['summary']['accuracy']:.4f}; {os.cpu_count()} cores; "
          f"each of N shards gets {os.cpu_count()}//N threads)")


def bench_push(project: Path) -> None:
    from tests.registry_servers import Registry

    registry = Registry(Path(tempfile.mkdtemp(prefix="swcli-bench-registry-")))
    try:
        target = f"{registry.address}/bench/cifar_net"
        for label, tag in (("full push (empty registry)", "v1"), ("code-only change", "v2")):
            if tag == "v2":
                with open(project / "code" / "ppl.py", "a") as fh:
                    fh.write("\n# code-only change\n")
                swcli("model", "build", project, "--skip-gen-env", "--runtime", "bench-env")
            since = len(registry.log.read_text())
            started = time.perf_counter()
            swcli("model", "push", "cifar_net", f"{target}:{tag}")
            elapsed = time.perf_counter() - started
            time.sleep(0.5)  # the access log line is written as the request completes
            blobs, size = uploaded_bytes(registry.root, registry.log, since)
            print(f"push, {label:27s}: {blobs:2d} blobs, {size:>12,} bytes compressed, {elapsed:6.1f} s")
    finally:
        registry.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(sys.prefix), help="the env to ship (default: this one)")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs when the example has no weights yet")
    args = ap.parse_args()
    from builder.images.engine import connect

    client = connect()
    tags_before = {tag: image.id for image in client.images.list() for tag in image.tags}
    try:
        run(args)
    finally:
        restore_tags(client, tags_before)
    return 0


def restore_tags(client, before: dict[str, str]) -> None:
    """Leave the engine's tags as they were: drop the ones the benchmark made, point moved ones (`:latest`) back."""
    for image in client.images.list():
        for tag in image.tags:
            if tag not in before:
                client.images.remove(tag, noprune=True)
            elif before[tag] != image.id:
                client.images.get(before[tag]).tag(*tag.rsplit(":", 1))


def run(args) -> None:
    project = example_copy()
    if not (project / "models" / "cifar_net.pth").exists():
        subprocess.run([sys.executable, "-m", "code.train", "--epochs", str(args.epochs)], cwd=project, check=True,
                       stdout=subprocess.DEVNULL)
    swcli("runtime", "build", "--name", "bench-env", "--venv", args.venv)
    swcli("dataset", "build", project)
    spec = project / "dataset.yaml"  # the same slicer over every batch file: 50,000 train + 10,000 test records
    text = spec.read_text().replace("name: cifar10", "name: cifar10-all")
    spec.write_text(text.replace('data_filter: "test_batch"', 'data_filter: "*_batch*"').replace('label_filter: "test_batch"', 'label_filter: "*_batch*"'))
    swcli("dataset", "build", project)
    swcli("model", "build", project, "--skip-gen-env", "--runtime", "bench-env")
    for dataset in ("cifar10", "cifar10-all"):
        bench_shards(dataset, args.shards, args.repeat)
    bench_push(project)


if __name__ == "__main__":
    raise SystemExit(main())
