#!/usr/bin/env python3
"""`swcli model eval` against a hand-written script doing the same work, wall time, side by side in one run.

The script (``SCRIPT`` below, run as its own process) is what a user would write without swcli: import torch,
load the seed's one-record handler from the model, read CIFAR-10's ``test_batch`` pickle, call ``ppl`` and
``handle_label`` per record, score with the handler's ``cmp`` (the same scikit-learn metrics) and write the
results and metrics as JSON. swcli runs as the CLI (``swcli model eval MODEL --dataset DATASET``), a new process
each time, over the same 10,000 records. Runs alternate (script, swcli, script, ...) so both see the same load.

``--baseline DIR`` adds a third contender: swcli from another checkout (e.g. ``git worktree add /tmp/base main``),
run in the same rotation, for before/after figures under the same load.

Target (issue 12): swcli at least 15% faster, i.e. its median wall time <= 0.85 x the script's.
Uses the store's ``cifar_net`` model and ``cifar10`` dataset (``make demo`` leaves them there); ``--model`` and
``--dataset`` name others. Checks that both computed the same accuracy.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCRIPT = r'''
import json, pickle, sys, time
started = time.perf_counter()
import torch  # noqa: F401  (what the handler needs; imported first, as a script would)

model_src, test_batch, out = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, model_src)
from code.ppl import CIFAR10Inference

handler = CIFAR10Inference()
with open(test_batch, "rb") as fh:
    batch = pickle.load(fh, encoding="bytes")
data, labels = batch[b"data"], batch[b"labels"]
results = []
for i in range(len(labels)):
    result, pr = handler.ppl(data[i].tobytes(), index=i)
    results.append({"index": i, "label": handler.handle_label(bytes([labels[i]])), "result": result, "pr": pr})
with open(out + "/results.json", "w") as fh:
    json.dump(results, fh)
metrics = handler.cmp(results)
with open(out + "/metrics.json", "w") as fh:
    json.dump(metrics, fh, indent=2)
print(json.dumps({"accuracy": metrics["summary"]["accuracy"], "seconds": time.perf_counter() - started}))
'''


def store_paths(model: str, dataset: str) -> tuple[Path, Path]:
    """The model's source folder in the store and the test_batch its dataset was built from."""
    from benchmarks._cifar import ensure_batches
    from builder.store import Store

    store = Store()
    entry = store.resolve("model", model)
    store.resolve("dataset", dataset)  # fails early, naming it, when `make demo` has not run
    return entry.path / "src", ensure_batches() / "test_batch"


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    """Wall time of ``cmd`` run in ``cwd`` (not this checkout: ``python -c`` would import builder from there)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_net")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each, alternating; medians are compared")
    ap.add_argument("--baseline", type=Path, help="also time swcli from this checkout (before/after)")
    args = ap.parse_args()
    model_src, test_batch = store_paths(args.model, args.dataset)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    contenders = {"swcli": env}
    if args.baseline:
        contenders["baseline"] = dict(env, PYTHONPATH=str(args.baseline.resolve()))
    work = Path(tempfile.mkdtemp(prefix="swcli-vs-script-"))
    atexit.register(shutil.rmtree, work, True)  # 2 x --repeat result folders
    script = work / "script.py"
    script.write_text(SCRIPT)
    swcli = [sys.executable, "-c", "import sys; from builder.cli import main; sys.exit(main())"]
    times: dict[str, list[float]] = {"script": [], **{name: [] for name in contenders}}
    accuracy = {}
    for n in range(args.repeat):
        out = work / f"script-{n}"
        out.mkdir()
        wall, stdout = timed([sys.executable, str(script), str(model_src), str(test_batch), str(out)], env, work)
        times["script"].append(wall)
        accuracy["script"] = json.loads(stdout.strip().splitlines()[-1])["accuracy"]
        line = f"run {n + 1}: script {times['script'][-1]:.2f} s"
        for name, contender_env in contenders.items():
            out = work / f"{name}-{n}"
            wall, _ = timed([*swcli, "model", "eval", args.model, "--dataset", args.dataset, "--output", str(out)],
                            contender_env, work)
            times[name].append(wall)
            run = json.loads((out / "run.json").read_text())
            accuracy[name] = json.loads((out / "metrics.json").read_text())["summary"]["accuracy"]
            line += (f", {name} {wall:.2f} s (ppl phase {run['seconds']['ppl_phase']} s, ppl calls "
                     f"{run['seconds']['ppl_calls']} s, cmp {run['seconds']['cmp']} s)")
        print(line, flush=True)
    if len(set(accuracy.values())) != 1:
        raise SystemExit(f"the contenders disagree: accuracy {accuracy}")
    script_s, swcli_s = statistics.median(times["script"]), statistics.median(times["swcli"])
    print(f"hand-written script: median {script_s:.2f} s (min {min(times['script']):.2f})")
    print(f"swcli model eval:    median {swcli_s:.2f} s (min {min(times['swcli']):.2f})  "
          f"{1 - swcli_s / script_s:.1%} faster (target >= 15%)")
    if args.baseline:
        base_s = statistics.median(times["baseline"])
        print(f"baseline swcli:      median {base_s:.2f} s (min {min(times['baseline']):.2f})  "
              f"{1 - base_s / script_s:.1%} faster than the script")
    print(json.dumps({"script_s": round(script_s, 3), "swcli_s": round(swcli_s, 3),
                      "faster": round(1 - swcli_s / script_s, 3), "accuracy": accuracy["swcli"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
