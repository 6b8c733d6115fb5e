#!/usr/bin/env python3
"""Sharded evaluation speed-up and bytes pushed, on the CIFAR example with the torch CPU env, in one run.

1. Sharding: the 10,000 CIFAR test images, then all 60,000 (train + test batches), evaluated in containers
   through the Indexed-Job simulation (`swcli job run --shards N`: the merge container first, then N eval
   containers at once), N = 1, 2; N = 1 is the plain single-container `job run`. Prints wall time (best of
   --repeat) and speed-up, the same for the ppl phase alone, and checks that every N's metrics.json is
   byte-identical to N = 1's.
2. Registry (`--parts push` alone: only this): real `docker-registry`s on 127.0.0.1. swcli's push of the model
   image (no engine: gzip by ISA-L, cached) with an empty compress cache into an empty registry, against
   `docker push` of the same image into another empty registry; then a code-only change pushed again, the same
   image pushed to a second repository of the first registry (mounts), and a push with a warm cache into a new
   registry (nothing compressed). Blobs and bytes uploaded are counted from each registry's own access log and
   storage; "gzipped" is how many layers were compressed for that push.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
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


def bench_shards(dataset: str, counts: list[int], repeat: int) -> None:
    """Wall time of the whole job (containers, imports, merge) and of its ppl phase alone (the slowest shard)."""
    import json

    from builder.jobs.docker import run_job

    out_root = Path(tempfile.mkdtemp(prefix="swcli-bench-shards-"))
    atexit.register(shutil.rmtree, out_root, True)
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


def docker_push(ref: str) -> None:
    """`docker push` through the engine's API (docker-py), checking every event for an in-band error."""
    from builder.images.engine import connect

    for event in connect(timeout=600).api.push(ref, stream=True, decode=True):
        if "error" in event or "errorDetail" in event:
            raise SystemExit(f"docker push {ref} failed: {event}")


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def bench_push(project: Path) -> None:
    """One table: swcli push (no engine) against `docker push` of the same image, then the pushes that follow."""
    from builder.store import Store
    from builder.images.compress import cache_dir
    from builder.images.engine import connect
    from builder.images.image import read_image
    from docker.errors import ImageNotFound
    from tests.registry_servers import Registry, uploads

    registries = [Registry(Path(tempfile.mkdtemp(prefix=f"swcli-bench-registry-{n}-"))) for n in range(3)]
    ours, theirs, fresh = registries
    image = read_image(Store().layout, "swmp/cifar_net:latest")
    size = sum(layer.size for layer in image.layers)
    rows = []
    print(f"\nCIFAR model image: {len(image.layers)} layers, {size / 1e6:,.0f} MB uncompressed; {os.cpu_count()} cores")
    print(f"{'push':45s} {'seconds':>8s} {'blobs up':>9s} {'bytes up':>14s} {'gzipped':>8s}")

    def show(row) -> None:
        label, elapsed, blobs, sent, made = row
        print(f"{label:45s} {elapsed:8.2f} {blobs:9d} {sent:14,d} {'-' if made is None else made:>8}", flush=True)

    def push(label: str, registry: Registry, repo: str, tag: str) -> None:
        since = len(registry.log.read_text())
        records = {p.name: p.stat().st_mtime_ns for p in cache_dir().glob("*.json")}
        elapsed = timed(swcli, "model", "push", "cifar_net", f"{registry.address}/{repo}:{tag}")
        time.sleep(0.5)  # the access log line is written as the request completes
        blobs, sent = uploads(registry.root, registry.log, since)
        made = sum(1 for p in cache_dir().glob("*.json") if records.get(p.name) != p.stat().st_mtime_ns)
        rows.append((label, elapsed, blobs, sent, made))
        show(rows[-1])

    try:
        shutil.rmtree(cache_dir(), ignore_errors=True)  # cold: nothing compressed yet
        push("swcli push, cold (empty cache, empty registry)", ours, "bench/cifar_net", "v1")
        engine_ref = f"{theirs.address}/bench/cifar_net:v1"
        connect().images.get(image.image_id).tag(engine_ref)  # the engine holds it under its config digest
        since = len(theirs.log.read_text())
        elapsed = timed(docker_push, engine_ref)
        time.sleep(0.5)
        rows.append(("docker push, same image, empty registry", elapsed, *uploads(theirs.root, theirs.log, since),
                     None))
        show(rows[-1])
        with contextlib.suppress(ImageNotFound):  # the engine is shared: another's clean-up may have come first
            connect().images.remove(engine_ref)
        with open(project / "code" / "ppl.py", "a") as fh:
            fh.write("\n# code-only change\n")
        swcli("model", "build", project, "--skip-gen-env", "--runtime", "bench-env", "--no-load")
        push("swcli push, code-only change", ours, "bench/cifar_net", "v2")
        push("swcli push, second repo, same registry", ours, "other/cifar_net", "v2")
        push("swcli push, warm cache, new registry", fresh, "bench/cifar_net", "v2")
    finally:
        for registry in registries:
            registry.stop()
            shutil.rmtree(registry.root, ignore_errors=True)  # each holds ~440 MB of blobs
    print(f"swcli cold / docker push: {rows[0][1] / rows[1][1]:.2f}x (target <= 0.5x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(sys.prefix), help="the env to ship (default: this one)")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1, help="training epochs when the example has no weights yet")
    ap.add_argument("--parts", nargs="+", choices=("shards", "push"), default=["shards", "push"])
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
    from docker.errors import ImageNotFound

    for image in client.images.list():
        for tag in image.tags:
            with contextlib.suppress(ImageNotFound):  # the engine is shared: a tag may be gone already
                if tag not in before:
                    client.images.remove(tag, noprune=True)
                elif before[tag] != image.id:
                    client.images.get(before[tag]).tag(*tag.rsplit(":", 1))


def run(args) -> None:
    project = example_copy()
    try:
        _run(args, project)
    finally:
        shutil.rmtree(project.parent, ignore_errors=True)  # the example copy with its CIFAR data: ~1.6 GB


def _run(args, project: Path) -> None:
    if not (project / "models" / "cifar_net.pth").exists():
        subprocess.run([sys.executable, "-m", "code.train", "--epochs", str(args.epochs)], cwd=project, check=True,
                       stdout=subprocess.DEVNULL)
    swcli("runtime", "build", "--name", "bench-env", "--venv", args.venv)
    if "shards" not in args.parts:
        swcli("model", "build", project, "--skip-gen-env", "--runtime", "bench-env")
        bench_push(project)
        return
    swcli("dataset", "build", project)
    spec = project / "dataset.yaml"  # the same slicer over every batch file: 50,000 train + 10,000 test records
    text = spec.read_text().replace("name: cifar10", "name: cifar10-all")
    spec.write_text(text.replace('data_filter: "test_batch"', 'data_filter: "*_batch*"').replace('label_filter: "test_batch"', 'label_filter: "*_batch*"'))
    swcli("dataset", "build", project)
    swcli("model", "build", project, "--skip-gen-env", "--runtime", "bench-env")
    for dataset in ("cifar10", "cifar10-all"):
        bench_shards(dataset, args.shards, args.repeat)
    if "push" in args.parts:
        bench_push(project)


if __name__ == "__main__":
    raise SystemExit(main())
