#!/usr/bin/env python3
"""Eval peak RSS against dataset size: synthetic 224x224x3 uint8 records, about 0.3 GB and 3 GB, one run each.

Builds the datasets with ``dataset build`` (a slicer that makes the records; a temp SWCLI_HOME), then runs
``evaluate`` (what ``swcli model eval`` calls) in a fresh process per dataset with a trivial handler (no model:
its ppl reads a few bytes of the record), and prints each process's peak RSS: the evaluating process's and, when
``ppl`` ran in workers (``--workers``, the default on a big enough CPU run), the largest worker's. The handler's
own footprint is the peak over a 16-record dataset (one process). Target (issue 12): at most 300 MB above it, whatever the dataset size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORD = 224 * 224 * 3

SLICER = '''
from builder.api.dataset import BuildExecutor


class Synthetic(BuildExecutor):
    """COUNT records of 224x224x3 bytes; each differs (its index in its first bytes)."""

    def _count(self, path):
        return int(open(path).read())

    def iter_data_slice(self, path):
        body = bytes(range(256)) * (%d // 256)
        for i in range(self._count(path)):
            yield i.to_bytes(8, "little") + body[8:]

    def iter_label_slice(self, path):
        for i in range(self._count(path)):
            yield bytes([i %% 10])
''' % RECORD

HANDLER = '''
from builder.api.model import PipelineHandler


class Trivial(PipelineHandler):
    def ppl(self, data, **kw):
        return data[0] % 10, None

    def handle_label(self, label, **kw):
        return label[0]
'''

CHILD = '''
import json, multiprocessing, resource, sys, time
from pathlib import Path
from builder.evaluate.model_eval import EvalOptions, evaluate
from builder.store import Store

store = Store()
entry = store.resolve("dataset", sys.argv[2])
result = evaluate(EvalOptions(model=sys.argv[1], dataset=str(entry.path), output_dir=Path(sys.argv[3]), record=False),
                  store=store)
while multiprocessing.active_children():  # the ppl workers, let go when the ppl phase ended: reaped, so counted
    time.sleep(0.01)
print(json.dumps({"records": result.run["records"]["total"], "workers": result.run["workers"],
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
'''


def project(work: Path, name: str, count: int) -> Path:
    folder = work / name
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "count.txt").write_text(str(count))
    (folder / "slicer.py").write_text(SLICER)
    (folder / "dataset.yaml").write_text(f"name: {name}\ndata_dir: data\ndata_filter: count.txt\n"
                                         "label_filter: count.txt\nprocess: slicer:Synthetic\n")
    return folder


def model(work: Path) -> Path:
    folder = work / "trivial"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER)
    (folder / "model.yaml").write_text("name: trivial\nmodel: []\nrun:\n  ppl: handler:Trivial\n")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-gb", type=float, default=0.3)
    ap.add_argument("--large-gb", type=float, default=3.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp store (it holds the datasets)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="swcli-eval-mem-"))
    env = dict(os.environ, SWCLI_HOME=str(work / "home"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    os.environ.update(SWCLI_HOME=env["SWCLI_HOME"])
    sys.path.insert(0, str(REPO))
    from builder.build.dataset import build_dataset

    handler = model(work)
    sizes = {"tiny": 16, "small": int(args.small_gb * 1e9 / RECORD), "large": int(args.large_gb * 1e9 / RECORD)}
    peaks = {}
    try:
        for name, count in sizes.items():
            started = time.perf_counter()
            build_dataset(project(work, f"synthetic-{name}", count))
            built = time.perf_counter() - started
            proc = subprocess.run([sys.executable, "-c", CHILD, str(handler), f"synthetic-{name}", str(work / f"out-{name}")],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"eval of synthetic-{name} failed:\n{proc.stderr[-2000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            peaks[name] = max(got["peak_kb"], got["workers_peak_kb"]) / 1024  # the largest process
            print(f"{name:5}: {count:6} records, {count * RECORD / 1e9:5.2f} GB (built in {built:.1f} s): "
                  f"eval peak RSS {got['peak_kb'] / 1024:7.1f} MB, {got['workers']} ppl worker(s) "
                  f"{got['workers_peak_kb'] / 1024:7.1f} MB at most each (shared pages counted in each)", flush=True)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    small, large = peaks["small"] - peaks["tiny"], peaks["large"] - peaks["tiny"]
    print(f"above the handler's own ({peaks['tiny']:.0f} MB): {args.small_gb} GB +{small:.0f} MB, "
          f"{args.large_gb} GB +{large:.0f} MB (target <= 300 MB); difference {large - small:+.0f} MB")
    print(json.dumps({k: round(v, 1) for k, v in peaks.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
