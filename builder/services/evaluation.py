"""The evaluation runner: ``ppl`` over every record, ``cmp`` over the stored results, files out.

This is the one runner: ``swcli model eval`` calls it in-process and the model image's ``eval`` command calls it
inside the container, so both give the same files. Outputs (format in ``docs/runner.md``):

- ``results.jsonl``: one line per record (index, label, result, pr, error), streamed to a temp file and renamed
  when the ppl phase ends, so a crash never leaves a file that looks complete;
- ``metrics.json``: what ``cmp`` returned (the ``multi_classification`` document, usually);
- ``run.json``: what ran on what, counts, timings and status; written on failure too.

Per-record overhead is kept to a few microseconds (buffered writes, no per-record flush or progress redraw)
because the seed's handler predicts one record per call.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from builder import __version__
from builder.api.model import PipelineHandler
from builder.errors import EvalError
from builder.store import utc_now, write_json_atomic

RESULTS = "results.jsonl"
METRICS = "metrics.json"
RUN = "run.json"
MAX_LOGGED_ERRORS = 20
PROGRESS_EVERY = 256

Progress = Callable[[int], None]


def to_jsonable(obj: Any) -> Any:
    """``json.dumps`` default: numpy scalars and arrays, tensors, bytes and tuples become plain JSON."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (bytes, bytearray)):
        return list(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf (e.g. ``exp`` of a large logit) with null: strict JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# one encoder for the whole run: json.dumps with non-default arguments builds a new encoder per call
_ENCODER = json.JSONEncoder(default=to_jsonable, allow_nan=False, separators=(",", ":"))
_LENIENT = json.JSONEncoder(default=to_jsonable, separators=(",", ":"))


def dump_line(record: dict) -> str:
    try:
        return _ENCODER.encode(record)
    except ValueError:  # a non-finite float somewhere: take the slow path once for this record
        return _ENCODER.encode(_finite(json.loads(_LENIENT.encode(record))))


class ResultsLoader:
    """What ``cmp`` iterates: the stored results, streamed from ``results.jsonl`` (errored records skipped).

    Re-iterable, so a ``cmp`` that walks the data twice works, and memory stays bounded by one line.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                if item.get("error") is None:
                    yield item


@dataclass
class EvalContext:
    """What the run is about; recorded in run.json and passed to ``ppl`` as keyword context."""

    dataset_name: str = ""
    dataset_version: str = ""
    model: dict = field(default_factory=dict)
    handler: str = ""
    device: str | None = None
    runtime: str = ""


@dataclass
class EvalResult:
    output_dir: Path
    metrics: Any
    run: dict

    @property
    def ok(self) -> bool:
        return self.run.get("status") in ("succeeded", "partial")


def _split_output(out: Any) -> tuple[Any, Any]:
    if isinstance(out, tuple) and len(out) == 2:
        return out
    return out, None


def _batches(records: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for rec in records:
        batch.append(rec)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Ppl:
    """The ppl phase: feeds the handler, writes one line per record, applies ignore_error."""

    def __init__(self, handler: PipelineHandler, ctx: EvalContext, out, log):
        self.handler = handler
        self.merge_label = getattr(handler, "merge_label", True)
        self.ignore_error = getattr(handler, "ignore_error", False)
        self.kw = {"dataset_name": ctx.dataset_name, "dataset_version": ctx.dataset_version}
        self.out = out
        self.log = log
        self.ok = 0
        self.failed = 0
        self.ppl_seconds = 0.0

    def _label(self, rec) -> Any:
        if self.merge_label:
            return self.handler.handle_label(rec.label, index=rec.index, **self.kw)
        return list(rec.label)

    def _fail(self, rec, err: BaseException, stage: str) -> None:
        message = f"{stage} raised {type(err).__name__}: {err}"
        if not self.ignore_error:
            raise EvalError(f"record {rec.index}: {message}")
        self.failed += 1
        if self.failed <= MAX_LOGGED_ERRORS:
            self.log(f"record {rec.index}: {message} (skipped: ignore_error=True)")
        elif self.failed == MAX_LOGGED_ERRORS + 1:
            self.log("more records failed; see results.jsonl for every error")
        self.out.write(dump_line({"index": rec.index, "label": None, "result": None, "pr": None, "error": message}))
        self.out.write("\n")

    def _store(self, rec, output: Any) -> None:
        try:
            label = self._label(rec)
        except Exception as err:
            self._fail(rec, err, "handle_label")
            return
        result, pr = _split_output(output)
        self.out.write(dump_line({"index": rec.index, "label": label, "result": result, "pr": pr, "error": None}))
        self.out.write("\n")
        self.ok += 1

    def one(self, rec) -> None:
        t0 = time.perf_counter()
        try:
            output = self.handler.ppl(rec.data, index=rec.index, label=rec.label, **self.kw)
        except Exception as err:
            self.ppl_seconds += time.perf_counter() - t0
            self._fail(rec, err, "ppl")
            return
        self.ppl_seconds += time.perf_counter() - t0
        self._store(rec, output)

    def batch(self, recs: list) -> None:
        t0 = time.perf_counter()
        try:
            outputs = self.handler.ppl(
                [r.data for r in recs], indices=[r.index for r in recs], label=[r.label for r in recs], **self.kw
            )
            if not hasattr(outputs, "__len__"):
                outputs = list(outputs)
            if len(outputs) != len(recs):
                raise EvalError(
                    f"records {recs[0].index}-{recs[-1].index}: batched ppl returned {len(outputs)} outputs for "
                    f"{len(recs)} records"
                )
        except EvalError:
            raise
        except Exception as err:
            self.ppl_seconds += time.perf_counter() - t0
            for rec in recs:
                self._fail(rec, err, "ppl (batch)")
            return
        self.ppl_seconds += time.perf_counter() - t0
        for rec, output in zip(recs, outputs):
            self._store(rec, output)


def run_evaluation(
    handler: PipelineHandler,
    records: Iterable,
    output_dir: str | Path,
    *,
    context: EvalContext | None = None,
    batch_size: int | None = None,
    total: int | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    shard: dict | None = None,
) -> EvalResult:
    """Run ``handler`` over ``records`` (objects with ``.index``, ``.data``, ``.label``) into ``output_dir``.

    With ``shard`` (``{index, count, start, stop}``) only the ppl phase runs: the output is a part for
    ``swcli eval merge`` (run.json status ``partial``), and an empty slice is fine.
    """
    ctx = context or EvalContext()
    log = log or (lambda msg: print(f"swcli: warning: {msg}", file=sys.stderr))
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".swcli-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise EvalError(f"output directory {output_dir} is not writable: {err.strerror or err}") from None
    size = _batch_size(handler, batch_size)
    if total is None and hasattr(records, "__len__"):
        total = len(records)  # type: ignore[arg-type]
    run: dict[str, Any] = {
        "kind": "eval",
        "status": "running",
        "model": ctx.model,
        "handler": ctx.handler,
        "dataset": {"name": ctx.dataset_name, "version": ctx.dataset_version},
        "runtime": ctx.runtime,
        "batch_size": size,
        "device": ctx.device,
        "records": {"total": total, "ok": 0, "failed": 0},
        "started": utc_now(),
        "swcli_version": __version__,
    }
    started = time.perf_counter()
    tmp_results = output_dir / f".{RESULTS}.tmp"
    phase = _Ppl(handler, ctx, None, log)
    try:
        with open(tmp_results, "w", encoding="utf-8", buffering=1 << 20) as out:
            phase.out = out
            done = 0
            if size == 1:
                for rec in records:
                    phase.one(rec)
                    done += 1
                    if progress and done % PROGRESS_EVERY == 0:
                        progress(done)
            else:
                for recs in _batches(records, size):
                    phase.batch(recs)
                    done += len(recs)
                    if progress:
                        progress(done)
            if progress:
                progress(done)
        os.replace(tmp_results, output_dir / RESULTS)
    except BaseException as err:
        if tmp_results.exists():  # keep what was predicted: the user may want to look at it
            os.replace(tmp_results, output_dir / f"{RESULTS}.partial")
        _finish(run, output_dir, phase, started, None, status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                error=str(err))
        raise
    run["records"].update(total=phase.ok + phase.failed, ok=phase.ok, failed=phase.failed)
    if shard is not None:
        run["shard"] = shard
        _finish(run, output_dir, phase, started, None, status="partial")
        return EvalResult(output_dir, None, run)
    if phase.ok == 0:
        _finish(run, output_dir, phase, started, None, status="failed", error="no record was predicted")
        raise EvalError(f"no record was predicted ({phase.failed} failed); nothing to score")
    cmp_started = time.perf_counter()
    try:
        metrics = handler.cmp(ResultsLoader(output_dir / RESULTS))
    except EvalError as err:
        _finish(run, output_dir, phase, started, cmp_started, status="failed", error=str(err))
        raise
    except Exception as err:
        _finish(run, output_dir, phase, started, cmp_started, status="failed", error=f"cmp raised {type(err).__name__}: {err}")
        raise EvalError(f"cmp raised {type(err).__name__}: {err}") from None
    if metrics is None:
        metrics = {"kind": "counts", "records": phase.ok + phase.failed, "ok": phase.ok, "failed": phase.failed}
    write_json_atomic(output_dir / METRICS, _finite(json.loads(json.dumps(metrics, default=to_jsonable))))
    _finish(run, output_dir, phase, started, cmp_started, status="succeeded")
    return EvalResult(output_dir, metrics, run)


def _batch_size(handler: PipelineHandler, requested: int | None) -> int:
    own = int(getattr(handler, "batch_size", 1) or 1)
    if requested is None or requested == own:
        return own
    if requested < 1:
        raise EvalError(f"--batch-size must be >= 1, got {requested}")
    if own == 1 and requested > 1:
        raise EvalError(
            f"{type(handler).__name__} takes one record per ppl call; to batch, pass batch_size=N (N > 1) to "
            "PipelineHandler.__init__ and make ppl accept a list of records"
        )
    return requested


def _finish(run: dict, output_dir: Path, phase: _Ppl, started: float, cmp_started: float | None, *, status: str,
            error: str | None = None) -> None:
    now = time.perf_counter()
    ppl_end = cmp_started if cmp_started is not None else now
    run["records"].update(ok=phase.ok, failed=phase.failed)
    run.update(
        status=status,
        finished=utc_now(),
        seconds={
            "total": round(now - started, 3),
            "ppl_phase": round(ppl_end - started, 3),
            "ppl_calls": round(phase.ppl_seconds, 3),
            "cmp": round(now - cmp_started, 3) if cmp_started is not None else None,
        },
        records_per_second=round((phase.ok + phase.failed) / (ppl_end - started), 1) if ppl_end > started else None,
    )
    if error:
        run["error"] = error
    write_json_atomic(output_dir / RUN, run)
