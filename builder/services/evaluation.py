"""The evaluation runner: ``ppl`` over every record, ``cmp`` over the stored results, files out.

This is the one runner: ``swcli model eval`` calls it in-process and the model image's ``eval`` command calls it
inside the container, so both give the same files. Outputs (format in ``docs/runner.md``):

- ``results.jsonl``: one line per record (index, label, result, pr, error), streamed to a temp file and renamed
  when the ppl phase ends, so a crash never leaves a file that looks complete. The temp file is flushed after
  every ppl call, so a process killed with ``kill -9`` loses at most the record (or batch) in flight and
  ``--resume`` (:mod:`builder.services.resume`) continues from the rest;
- ``metrics.json``: what ``cmp`` returned (the ``multi_classification`` document, usually);
- ``run.json``: what ran on what, counts, timings and status. Written (status ``running``, padded to
  ``RUN_RESERVE`` bytes) before the first record, so that on a full disk the final status can still be written
  over it in place; written on failure and on Ctrl-C too.

Scoring (``cmp``, the counts fallback, ``metrics.json``, the final run.json) is :func:`score`, which a shard merge
uses too. Anything that stops a run is one line naming the record or file (:class:`OutputError` for a file that
could not be written, :class:`EvalInterrupted` for Ctrl-C, exit code 130).

Per-record overhead is kept to a few microseconds (buffered lines pushed to the OS once per ppl call, no
progress redraw per record) because the seed's handler predicts one record per call.
"""

from __future__ import annotations

import contextlib
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
from builder.errors import EvalError, SwcliError, USER_CODE_ERRORS
from builder.store import utc_now

RESULTS = "results.jsonl"
METRICS = "metrics.json"
RUN = "run.json"
MAX_LOGGED_ERRORS = 20
PROGRESS_EVERY = 256
RUN_RESERVE = 4096  # bytes run.json is padded to before the run: its final text is written over it on a full disk

Progress = Callable[[int], None]
Finish = Callable[..., None]  # finish(status, error=None): record the end of the run in run.json


class OutputError(EvalError):
    """An output file could not be written (full disk, quota, I/O error); ``path`` names it."""

    def __init__(self, path: str | Path, err: OSError | str, note: str = ""):
        self.path = str(path)
        self.errno = getattr(err, "errno", None)
        reason = err if isinstance(err, str) else (err.strerror or str(err))
        super().__init__(f"{path}: cannot write: {reason}{note}")


class EvalInterrupted(SwcliError):
    """Ctrl-C during an evaluation or a merge: what was predicted is kept and run.json says ``interrupted``."""

    exit_code = 130


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


def unserialisable(err: Exception) -> str:
    """Why a value could not be stored as JSON: not serialisable (TypeError, ValueError for a cycle) or nested
    too deeply (RecursionError), or a ``tolist`` that raised."""
    deep = " (nested too deeply)" if isinstance(err, RecursionError) else ""
    return f"cannot be stored as JSON{deep}: {type(err).__name__}: {err}"


def json_text(obj: Any) -> str:
    """``obj`` as indented strict JSON (numpy values plain, NaN/inf null); raises what encoding raised."""
    return json.dumps(_finite(json.loads(json.dumps(obj, default=to_jsonable))), indent=2, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it over; an OSError is an OutputError naming path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)  # open() made it 0666 & ~umask, like any written file
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(path, err) from None


def prepare_output(output_dir: Path, run: dict) -> None:
    """Create ``output_dir`` and reserve run.json there (status as in ``run``, padded to RUN_RESERVE bytes)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(output_dir / RUN, json_text(run).ljust(RUN_RESERVE))
    except (OSError, OutputError) as err:
        reason = err.strerror if isinstance(err, OSError) else str(err).rpartition("cannot write: ")[2]
        raise EvalError(f"output directory {output_dir} is not writable: {reason or err}") from None


def write_run(output_dir: Path, run: dict) -> None:
    """Write run.json; when the disk has no room for a temp copy, over the reserved file in place."""
    path = output_dir / RUN
    text = json_text(run)
    try:
        write_atomic(path, text)
    except OutputError as err:
        try:
            with open(path, "r+", encoding="utf-8") as fh:  # the reserved page(s): no new blocks needed
                fh.write(text)
                fh.truncate()
        except OSError:
            raise err from None


def stopped(err: BaseException, finish: Finish, interrupted: str) -> BaseException:
    """Record why a run or merge stopped in run.json; return the exception to raise.

    Ctrl-C becomes :class:`EvalInterrupted` (status ``interrupted``, its message the ``interrupted`` text),
    anything else status ``failed`` with the error. When run.json cannot be written either, the one line says so too.
    """
    if isinstance(err, KeyboardInterrupt):
        raised: BaseException = EvalInterrupted(interrupted)
        status, error = "interrupted", interrupted
    else:
        raised, status = err, "failed"
        error = str(err) if isinstance(err, SwcliError) else f"{type(err).__name__}: {err}"
    try:
        finish(status, error)
    except OutputError as run_err:
        if isinstance(raised, SwcliError):
            raised.message = f"{raised.message}; and {run_err}"
    return raised


def score(handler: PipelineHandler, output_dir: Path, counts: dict, finish: Finish) -> Any:
    """The scoring step of a run and of a shard merge: ``cmp`` over results.jsonl (``counts`` as the metrics when
    cmp is not overridden), metrics.json, then ``finish("succeeded")``. A cmp that raises or returns what JSON
    cannot hold, a metrics.json that cannot be written, or Ctrl-C: run.json records it and the one-line error is
    raised."""
    path = output_dir / METRICS
    try:
        try:
            metrics = handler.cmp(ResultsLoader(output_dir / RESULTS))
        except SwcliError:
            raise
        except USER_CODE_ERRORS as err:
            raise EvalError(f"cmp raised {type(err).__name__}: {err}") from None
        if metrics is None:
            metrics = {"kind": "counts", **counts}
        try:
            text = json_text(metrics)
        except USER_CODE_ERRORS as err:
            raise EvalError(f"{path}: what cmp returned {unserialisable(err)}") from None
        write_atomic(path, text)
    except BaseException as err:
        raise stopped(err, finish, f"interrupted while cmp scored {counts['records']} records; the results are in "
                                   f"{output_dir / RESULTS}, run.json (status interrupted) in {output_dir / RUN}") from None
    finish("succeeded")
    return metrics


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
    label_names: dict | None = None  # the dataset manifest's {label value: name}, copied into run["dataset"]


@dataclass
class EvalResult:
    output_dir: Path
    metrics: Any
    run: dict
    note: str | None = None  # what --resume did: continued after N records, or found the run finished

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
        self.kept = 0  # records scored by an earlier run that --resume continues (counted in ok and failed)
        self.ppl_seconds = 0.0

    def _label(self, rec) -> Any:
        if self.merge_label:
            return self.handler.handle_label(rec.label, index=rec.index, **self.kw)
        return list(rec.label)

    def _fail(self, rec, message: str) -> None:
        if not self.ignore_error:
            raise EvalError(f"record {rec.index}: {message}")
        self.failed += 1
        if self.failed <= MAX_LOGGED_ERRORS:
            self.log(f"record {rec.index}: {message} (skipped: ignore_error=True)")
        elif self.failed == MAX_LOGGED_ERRORS + 1:
            self.log("more records failed; see results.jsonl for every error")
        self.out.write(dump_line({"index": rec.index, "label": None, "result": None, "pr": None, "error": message}))

    def _store(self, rec, output: Any) -> None:
        try:
            label = self._label(rec)
        except USER_CODE_ERRORS as err:
            self._fail(rec, f"handle_label raised {type(err).__name__}: {err}")
            return
        result, pr = _split_output(output)
        try:
            line = dump_line({"index": rec.index, "label": label, "result": result, "pr": pr, "error": None})
        except USER_CODE_ERRORS as err:  # TypeError, ValueError (a cycle), RecursionError, a tolist() that raised...
            self._fail(rec, self._unstorable(label, err))
            return
        self.out.write(line)
        self.ok += 1

    def _unstorable(self, label: Any, err: Exception) -> str:
        try:
            dump_line({"label": label})
        except USER_CODE_ERRORS as label_err:
            return f"what handle_label returned {unserialisable(label_err)}"
        return f"what ppl returned {unserialisable(err)}"

    def one(self, rec) -> None:
        t0 = time.perf_counter()
        try:
            output = self.handler.ppl(rec.data, index=rec.index, label=rec.label, **self.kw)
        except USER_CODE_ERRORS as err:
            self.ppl_seconds += time.perf_counter() - t0
            self._fail(rec, f"ppl raised {type(err).__name__}: {err}")
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
        except USER_CODE_ERRORS as err:
            self.ppl_seconds += time.perf_counter() - t0
            for rec in recs:
                self._fail(rec, f"ppl (batch) raised {type(err).__name__}: {err}")
            return
        self.ppl_seconds += time.perf_counter() - t0
        for rec, output in zip(recs, outputs):
            self._store(rec, output)

    def run(self, records: Iterable, size: int, progress: Progress | None) -> None:
        done = self.kept
        flush = self.out.flush
        if size == 1:
            for rec in records:
                self.one(rec)
                flush()
                done += 1
                if progress and done % PROGRESS_EVERY == 0:
                    progress(done)
        else:
            for recs in _batches(records, size):
                self.batch(recs)
                flush()
                done += len(recs)
                if progress:
                    progress(done)
        if progress:
            progress(done)


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
    resume: bool = False,
) -> EvalResult:
    """Run ``handler`` over ``records`` (objects with ``.index``, ``.data``, ``.label``) into ``output_dir``.

    With ``shard`` (``{index, count, start, stop}``) only the ppl phase runs: the output is a part for
    ``swcli eval merge`` (run.json status ``partial``), and an empty slice is fine. With ``resume`` the run in
    ``output_dir`` is continued (see :mod:`builder.services.resume`); without, its earlier outputs are removed.
    """
    from builder.services import resume as resuming

    ctx = context or EvalContext()
    log = log or (lambda msg: print(f"swcli: warning: {msg}", file=sys.stderr))
    output_dir = Path(output_dir)
    size = _batch_size(handler, batch_size)
    if total is None and hasattr(records, "__len__"):
        total = len(records)  # type: ignore[arg-type]
    dataset = {"name": ctx.dataset_name, "version": ctx.dataset_version}
    if ctx.label_names:
        dataset["label_names"] = dict(ctx.label_names)
    run: dict[str, Any] = {
        "kind": "eval",
        "status": "running",
        "model": ctx.model,
        "handler": ctx.handler,
        "dataset": dataset,
        "runtime": ctx.runtime,
        "batch_size": size,
        "device": ctx.device,
        "records": {"total": total, "ok": 0, "failed": 0},
        "started": utc_now(),
        "swcli_version": __version__,
    }
    if shard is not None:
        run["shard"] = shard
    previous = resuming.previous_run(output_dir, run) if resume else None
    if previous is not None and resuming.finished(output_dir, previous):
        return EvalResult(output_dir, resuming.stored_metrics(output_dir, previous), previous,
                          note=f"{output_dir} holds a finished run (status {previous['status']}); nothing to resume")
    phase = _Ppl(handler, ctx, None, log)
    records, kept = resuming.pick_up(output_dir, run, previous, records, total)
    phase.kept, phase.ok, phase.failed = kept.lines, kept.ok, kept.failed
    note = None if previous is None else f"resumed after {kept.lines} of {'?' if total is None else total} records"
    prepare_output(output_dir, run)
    started = time.perf_counter()
    results, tmp_results = output_dir / RESULTS, output_dir / resuming.TMP
    times = {"cmp_started": None}

    def finish(status: str, error: str | None = None) -> None:
        _finish(run, output_dir, phase, started, times["cmp_started"], status=status, error=error)

    try:
        phase.out = resuming.ResultsWriter(tmp_results, results, append=previous is not None)
        phase.run(records, size, progress)
        phase.out.close()
        os.replace(tmp_results, results)
    except BaseException as err:
        if phase.out is not None:
            phase.out.abandon()
        partial = output_dir / f"{RESULTS}.partial"
        with contextlib.suppress(OSError):  # keep what was predicted: the user may want to look at it
            os.replace(tmp_results, partial)
        done = phase.ok + phase.failed
        raise stopped(err, finish, f"interrupted after {done} record{'s' * (done != 1)}; partial results in "
                                   f"{partial}, run.json (status interrupted) in {output_dir / RUN}") from None
    run["records"].update(total=phase.ok + phase.failed, ok=phase.ok, failed=phase.failed)
    if shard is not None:
        finish("partial")
        return EvalResult(output_dir, None, run, note)
    if phase.ok == 0:
        finish("failed", "no record was predicted")
        raise EvalError(f"no record was predicted ({phase.failed} failed); nothing to score")
    times["cmp_started"] = time.perf_counter()
    metrics = score(handler, output_dir, {"records": phase.ok + phase.failed, "ok": phase.ok, "failed": phase.failed},
                    finish)
    return EvalResult(output_dir, metrics, run, note)


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
        records_per_second=round((phase.ok + phase.failed - phase.kept) / (ppl_end - started), 1)
        if ppl_end > started else None,
    )
    if error:
        run["error"] = error
    write_run(output_dir, run)
