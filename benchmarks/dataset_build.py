#!/usr/bin/env python3
"""How fast `swcli dataset build` turns the real CIFAR-10 test batch into shards (target: under 2 s).

Uses the example's own dataset.yaml and the seed's CIFAR10Slicer (one record per image), in a temp store.
Prints records, MB in and out, seconds (best of --repeat) and MB/s, then the read-back speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cifar import example_copy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    project = example_copy()
    from builder.build.dataset import build_dataset
    from builder.volumes import DatasetReader
    from builder.store import Store

    times = []
    for _ in range(args.repeat):
        store = Store()
        for entry in store.list("dataset"):
            store.remove("dataset", str(entry.path))
        started = time.perf_counter()
        result = build_dataset(project)
        times.append(time.perf_counter() - started)
    m = result.entry.manifest
    data_mb = m["totals"]["data_bytes"] / 1e6
    best = min(times)
    print(f"dataset build: {m['records']} records, {data_mb:.1f} MB of data -> {m['totals']['shards']} shards "
          f"({m['totals']['shard_bytes'] / 1e6:.1f} MB at {m['attr']['alignment_size']}-byte alignment)")
    print(f"  best {best:.3f} s of {args.repeat} (all: {', '.join(f'{t:.3f}' for t in times)}), {data_mb / best:.0f} MB/s"
          f"  target < 2 s: {'OK' if best < 2 else 'MISSED'}")
    started = time.perf_counter()
    with DatasetReader(result.entry.path) as reader:
        total = sum(len(r.data) for r in reader)
    read = time.perf_counter() - started
    print(f"  read back with checksums: {read:.3f} s, {total / 1e6 / read:.0f} MB/s")
    shutil.rmtree(project.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
