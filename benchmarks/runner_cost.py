#!/usr/bin/env python3
"""swcli's own CPU time per record in `swcli model eval`: everything outside the handler's ppl (issue 20).

Builds a synthetic dataset of N small records (3 KB, as CIFAR-10's) and runs the real evaluation path in-process
(:func:`builder.evaluate.runner.run.run_evaluation` over a :class:`~builder.volumes.DatasetReader`, as ``swcli
model eval`` does) with a handler whose ppl costs ~nothing: it returns a result precomputed per label. Two result
shapes: ``label`` (``{"label":[3],"result":3,"pr":null}``) and ``cifar`` (the tutorial's: ``[pred]`` and one row of
ten 17-digit probabilities). CPU time is the process's (user + system, every thread) plus that of the ppl workers
(reaped, ``RUSAGE_CHILDREN``), less the handler's ppl alone (the same calls in a bare loop), so the number holds on
any machine however loaded. Per 10,000 records, in CPU-seconds (0.020 = 2 us per record):

- ``run``: the whole run (read+check, the ppl call, handle_label, the JSON line, the write, run.json...);
- ``read+check``: the reader's walk alone (index, header and payload CRCs, the record's bytes);
- ``lines``: the JSON lines alone (encoded and written through the results writer, one write per ppl call);
- ``floats``: of ``lines``, CPython's ``repr`` of the probabilities (what json.dumps pays too; the format's cost);
- ``rest``: ``run`` less the two (the ppl call, handle_label, the loop, the read-ahead thread, the workers' pipes).

Every mode's results.jsonl is checked to be byte for byte the one-process one. Sample output (2-core VM shared
with other jobs; ``--code`` a checkout of main at 6ee247e gave 0.098 / 0.077 / 0.106 / 0.086 and 0.160 / 0.126 /
0.167 / 0.152 for the same rows):

    swcli from /work/wt/runner; records 100000 x 3072 B, 2 CPUs; least of 3 runs; CPU-seconds per 10,000 records (us per record = x100)
    shape  mode                   run read+check   lines  (floats)    rest
    label  one process          0.035      0.014   0.017     0.000   0.004
    label  batch 64             0.028      0.014   0.017     0.000  -0.003
    label  --workers 2          0.045      0.014   0.017     0.000   0.014
    label  batch 64 w2          0.038      0.014   0.017     0.000   0.007
    cifar  one process          0.104      0.014   0.083     0.040   0.007
    cifar  batch 64             0.100      0.014   0.083     0.040   0.003
    cifar  --workers 2          0.147      0.014   0.083     0.040   0.050
    cifar  batch 64 w2          0.129      0.014   0.083     0.040   0.032

(``rest`` below zero: the components alone measured more than inside the run, which overlaps reading with ppl
in a thread and flushes once per batch.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# --code DIR: measure the swcli in DIR (a checkout of another commit: the "before" column), else this one
_CODE = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv[:-1] else str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, _CODE)

from builder.api.model import PipelineHandler  # noqa: E402
from builder.volumes import DatasetReader, VolumeWriter  # noqa: E402

PER = 10_000


def outputs(shape: str) -> list:
    """What ppl returns for label 0..9: the label itself, or the tutorial's ``([pred], [[10 probabilities]])``."""
    rng = random.Random(7)
    if shape == "label":
        return list(range(10))
    return [([n], [[rng.random() for _ in range(10)]]) for n in range(10)]


class Constant(PipelineHandler):
    """ppl: the precomputed output of the record's label (one record or a batch); handle_label: the SDK's own."""

    def __init__(self, table: list, batch_size: int = 1):
        super().__init__(batch_size=batch_size)
        self.table = table

    def ppl(self, data, **kw):
        if self.batch_size > 1:
            return [self.table[label[0]] for label in kw["label"]]
        return self.table[kw["label"][0]]


def make_dataset(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    writer = VolumeWriter(folder, 512, 64 << 20)
    block = os.urandom(size + 256)
    for i in range(count):
        writer.add(block[i % 256: i % 256 + size], bytes([i % 10]))
    writer.close()
    return folder


def cpu(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reap() -> None:
    """Wait for the ppl workers the run let go, so their CPU time is counted in RUSAGE_CHILDREN."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.join()


def ppl_alone(handler: Constant, reader: DatasetReader, batch: int) -> float:
    """CPU seconds of the handler's ppl calls over the dataset's labels in a bare loop (what is not swcli's)."""
    labels = [reader[i].label for i in range(len(reader))]
    kw = {"dataset_name": "bench", "dataset_version": "v1"}
    started = cpu()
    if batch == 1:
        for i, label in enumerate(labels):
            handler.ppl(b"", index=i, label=label, **kw)
    else:
        for first in range(0, len(labels), batch):
            handler.ppl([b""] * len(labels[first:first + batch]), indices=[], label=labels[first:first + batch], **kw)
    return cpu() - started


def read_check(reader: DatasetReader) -> float:
    started = cpu()
    for _ in reader.iter_records():
        pass
    return cpu() - started


def lines_only(folder: Path, reader: DatasetReader, out: Path) -> tuple[float, float]:
    """CPU seconds to write the run's results.jsonl again (its lines, one write per line, through the results
    writer), and of that, ``repr`` of its floats."""
    from builder.runs.folder import ResultsWriter

    text = (folder / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in text]
    floats = [x for row in rows for x in _floats(row)]
    encode = _encoder()
    started = cpu()
    writer = ResultsWriter(out / ".lines.tmp", out / "lines.jsonl")
    for row in rows:
        writer.write(encode(row))
        writer.flush()
    writer.close()
    took = cpu() - started
    started = cpu()
    for x in floats:
        repr(x)
    return took, cpu() - started


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for v in value:
            yield from _floats(v)


def _encoder():
    """The runner's line encoder: the record dict to its line (whichever this checkout has)."""
    try:
        from builder.runs.lines import result_line  # after issue 20's per-record work
        return lambda row: result_line(row["index"], row["label"], row["result"], row["pr"])
    except ImportError:
        from builder.evaluate.runner.ppl_phase import dump_line
        return dump_line


def one_run(shape: str, data: Path, work: Path, batch: int, workers: int) -> dict:
    from builder.evaluate.runner.run import run_evaluation

    out = Path(tempfile.mkdtemp(prefix=f"out-{shape}-{batch}-{workers}-", dir=work))
    handler = Constant(outputs(shape), batch)
    with DatasetReader(data) as reader:
        alone = ppl_alone(handler, reader, batch)
        reap()
        own, children = cpu(), cpu(children=True)
        run_evaluation(handler, reader, out, batch_size=batch, workers=workers, log=lambda _m: None)
        reap()
        total = cpu() - own + cpu(children=True) - children
    return {"run": total - alone, "out": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=3072, help="bytes of data per record")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shapes", default="label,cifar")
    ap.add_argument("--repeat", type=int, default=3, help="report the least CPU time of this many runs of each")
    ap.add_argument("--code", help="the checkout whose builder/ to measure (default: this one)")
    ap.add_argument("--json", action="store_true", help="print the numbers as one JSON line too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="swcli-runner-cost-"))
    try:
        data = make_dataset(work / "ds", args.records, args.size)
        scale = PER / args.records
        with DatasetReader(data) as reader:
            read_check(reader)  # the page cache warm
            read = min(read_check(reader) for _ in range(args.repeat))
        print(f"swcli from {_CODE}; records {args.records} x {args.size} B, {os.cpu_count()} CPUs; least of "
              f"{args.repeat} runs; CPU-seconds per {PER:,} records (us per record = x{1e6 / PER:g})")
        print(f"{'shape':6} {'mode':18} {'run':>7} {'read+check':>10} {'lines':>7} {'(floats)':>9} {'rest':>7}")
        found = {}
        modes = [("one process", 1, 1), (f"batch {args.batch}", args.batch, 1), (f"--workers {args.workers}", 1, args.workers),
                 (f"batch {args.batch} w{args.workers}", args.batch, args.workers)]
        for shape in args.shapes.split(","):
            lines = floats = expected = None
            for mode, batch, workers in modes:
                runs = [one_run(shape, data, work, batch, workers) for _ in range(args.repeat)]
                got = min(runs, key=lambda r: r["run"])
                texts = {(r["out"] / "results.jsonl").read_bytes() for r in runs}
                expected = expected or texts.pop()
                assert texts <= {expected}, f"{shape} {mode}: results.jsonl differs from one process's"
                if lines is None:
                    with DatasetReader(data) as reader:
                        both = [lines_only(got["out"], reader, work) for _ in range(args.repeat)]
                    lines, floats = min(b[0] for b in both), min(b[1] for b in both)
                rest = got["run"] - read - lines
                found[f"{shape}/{mode}"] = round(got["run"] * scale, 4)
                print(f"{shape:6} {mode:18} {got['run'] * scale:7.3f} {read * scale:10.3f} {lines * scale:7.3f} "
                      f"{floats * scale:9.3f} {rest * scale:7.3f}", flush=True)
                for r in runs:
                    shutil.rmtree(r["out"], ignore_errors=True)
        if args.json:
            print(json.dumps(found))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s)")
    raise SystemExit(code)
