"""The evaluation runner: ``ppl`` over every record, ``cmp`` over the stored results, files out.

This is the one runner: ``swcli model eval`` calls it in-process and the model image's ``eval`` command calls it
inside the container, so both give the same files. Outputs (their names, run.json's shape and the writers are
:mod:`builder.runs.folder`; the format is in ``docs/runner.md``):

- ``results.jsonl``: one line per record (index, label, result, pr, error), streamed to a temp file and renamed
  when the ppl phase ends, so a crash never leaves a file that looks complete. The temp file is flushed after
  every ppl call, so a process killed with ``kill -9`` loses at most the record (or batch) in flight, and
  ``--resume`` (:mod:`builder.evaluate.runner.resume`) continues from the rest;
- ``metrics.json``: what ``cmp`` returned (the ``multi_classification`` document, usually);
- ``run.json``: what ran on what, counts, timings and status. Written (status ``running``, padded to
  ``RUN_RESERVE`` bytes) before the first record, so that on a full disk the final status can still be written
  over it in place; written on failure and on Ctrl-C too.

A run is described once, before it starts, by a :class:`RunPlan` (where its files go, what it is about, how its
records are cut and who predicts them), which the steps below read and never change. Scoring (``cmp``, the
counts fallback, ``metrics.json``, the final run.json) is :func:`score`, which a shard merge uses too. Anything
that stops a run is one line naming the record or file (:class:`~builder.runs.folder.OutputError` for a file
that could not be written, :class:`EvalInterrupted` for Ctrl-C, exit code 130).

The ppl phase itself is :mod:`builder.evaluate.runner.ppl_phase`. While it runs, the next records are read and
checked in a background thread (:mod:`builder.evaluate.runner.prefetch`) and ``cmp``'s libraries are imported in
a helper process (:mod:`builder.evaluate.runner.metric_worker`), so a run costs less wall time than doing the same
steps in turn.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from builder import outdir
from builder.api.model import PipelineHandler
from builder.errors import EvalError, SwcliError, USER_CODE_ERRORS, UsageError
from builder.evaluate.runner import resume as resuming
from builder.evaluate.runner.metric_worker import scoring_helper
from builder.evaluate.runner.ppl_phase import PplPhase, Progress, unserialisable
from builder.evaluate.runner.ppl_workers import AUTO_MIN_RECORDS
from builder.evaluate.runner.prefetch import read_ahead
from builder.evaluate.runner.records import RecordRange, range_of
from builder.evaluate.runner.run_lock import output_lock
from builder.runs.folder import (METRICS, PARTIAL, RESULTS, RUN, TMP, EvalContext, OutputError, ResultsWriter,
                                 end_run, json_text, new_run, prepare_output, write_atomic, write_run)

Finish = Callable[..., None]  # finish(status, error=None): record the end of the run in run.json


class EvalInterrupted(SwcliError):
    """Ctrl-C during an evaluation or a merge: what was predicted is kept and run.json says ``interrupted``."""

    exit_code = 130


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
        with io.TextIOWrapper(outdir.open_read(self.path), encoding="utf-8") as fh:  # no link, no FIFO
            for line in fh:
                item = json.loads(line)
                if item.get("error") is None:
                    yield item


@dataclass
class EvalResult:
    output_dir: Path
    metrics: Any
    run: dict
    note: str | None = None  # what --resume did: continued after N records, or found the run finished

    @property
    def ok(self) -> bool:
        return self.run.get("status") in ("succeeded", "partial")


@dataclass(frozen=True)
class RunPlan:
    """One run as decided before it starts; the steps of the run read it and never change it."""

    output_dir: Path
    context: EvalContext  # what the run is about (run.json)
    batch_size: int  # records per ppl call, checked against the handler's own
    total: int | None  # how many records the run has (None: an iterable of unknown length)
    shard: dict | None  # {index, count, start, stop}: only the ppl phase runs; the output is a part (status partial)
    resume: bool  # continue the run in output_dir (builder.evaluate.runner.resume); else its outputs are removed
    workers: int  # processes running ppl (builder.evaluate.runner.ppl_workers)
    workers_auto: bool  # the count was not asked for: few records left, or no fork to be had, predict in this process
    progress: Progress | None
    log: Callable[[str], None]


def run_evaluation(handler: PipelineHandler, records: Iterable, output_dir: str | Path, *,
                   context: EvalContext | None = None, batch_size: int | None = None, progress: Progress | None = None,
                   log: Callable[[str], None] | None = None, shard: dict | None = None, resume: bool = False,
                   workers: int = 1, workers_auto: bool = False) -> EvalResult:
    """Run ``handler`` over ``records`` (objects with ``.index``, ``.data``, ``.label``) into ``output_dir``.

    With ``shard`` (``{index, count, start, stop}``) only the ppl phase runs: the output is a part for
    ``swcli eval merge`` (run.json status ``partial``), and an empty slice is fine. With ``resume`` the run in
    ``output_dir`` is continued (see :mod:`builder.evaluate.runner.resume`); without, its earlier outputs are removed.
    With ``workers`` > 1 and records readable by range (a dataset reader, a record range), ``ppl`` runs in that
    many forked processes (:mod:`builder.evaluate.runner.ppl_workers`); the outputs are the same. ``workers_auto``: the
    count was not asked for, so a resume with few records left, or a fork that fails, predicts in this process.
    """
    plan = RunPlan(Path(output_dir), context or EvalContext(), resolve_batch_size(handler, batch_size),
                   len(records) if hasattr(records, "__len__") else None,  # type: ignore[arg-type]
                   shard, resume, workers, workers_auto, progress, log or _warn)
    with output_lock(plan.output_dir):  # one run at a time in a folder (builder.evaluate.runner.run_lock)
        return _Run(handler, plan).carry_out(records)


def _warn(message: str) -> None:
    print(f"swcli: warning: {message}", file=sys.stderr)


class _Run:
    """One run in its locked folder: its run.json, its ppl phase, and how it ends."""

    def __init__(self, handler: PipelineHandler, plan: RunPlan):
        self.handler, self.plan = handler, plan
        ctx = plan.context
        self.run = new_run(ctx, batch_size=plan.batch_size, workers=plan.workers, total=plan.total, shard=plan.shard)
        self.phase = PplPhase(handler, ctx.dataset_name, ctx.dataset_version, None, plan.log)
        self.started = self.cmp_started = None  # perf_counter() at the start of the ppl phase, and of cmp

    def carry_out(self, records: Iterable) -> EvalResult:
        """A finished run that ``--resume`` finds is left as it is; else the ppl phase, then scoring."""
        plan, out = self.plan, self.plan.output_dir
        previous = resuming.previous_run(out, self.run) if plan.resume else None
        if previous is not None and resuming.finished(out, previous):
            note = f"{out} holds a finished run (status {previous['status']}); nothing to resume"
            return EvalResult(out, resuming.stored_metrics(out, previous), previous, note=note)
        readable = range_of(records) if plan.workers > 1 else None  # (reader, start, stop), before pick_up moves on
        records, kept = resuming.pick_up(out, self.run, previous, records, plan.total)
        self.phase.kept, self.phase.ok, self.phase.failed = kept.lines, kept.ok, kept.failed
        total = "?" if plan.total is None else plan.total
        note = None if previous is None else f"resumed after {kept.lines} of {total} records"
        prepare_output(out, self.run)
        self.started = time.perf_counter()
        span = _still_to_predict(readable, kept.lines, AUTO_MIN_RECORDS if plan.workers_auto else 1)
        try:  # a worker closes its copy of the scoring helper's pipes (metric_worker.forget_in_child)
            pool = _start_pool(self.handler, plan, span)
        except BaseException as err:
            raise stopped(err, self.finish, "interrupted while starting the ppl workers") from None
        if pool is None:
            self.run["workers"] = 1  # nothing left to predict, records only a loop can read, or no fork to be had
        elif plan.context.threads is not None:
            self.run["threads"] = 1  # each worker's (builder.evaluate.runner.ppl_workers)
        # cmp's libraries load in a helper process while the model computes (builder.evaluate.runner.metric_worker)
        with scoring_helper(getattr(self.handler.cmp, "imports", ()) if plan.shard is None else ()):
            self._ppl_phase(records, pool, span, append=previous is not None)
            return self._end(note)

    def _ppl_phase(self, records: Iterable, pool, span: tuple | None, *, append: bool) -> None:
        """Predict into the temp results file and rename it to results.jsonl; when anything stops it, keep what was
        predicted as results.jsonl.partial, record the stop in run.json and raise it as one line."""
        out, phase = self.plan.output_dir, self.phase
        results, tmp_results = out / RESULTS, out / TMP
        try:
            phase.out = ResultsWriter(tmp_results, results, append=append)
            _predict(phase, records, self.plan, pool, span)
            phase.out.close()
            outdir.replace(tmp_results, results)
        except BaseException as err:
            if pool is not None:
                pool.close()
            if phase.out is not None:
                phase.out.abandon()
            partial = out / PARTIAL
            with contextlib.suppress(OSError):  # keep what was predicted: the user may want to look at it
                outdir.replace(tmp_results, partial)
            done = phase.ok + phase.failed
            raise stopped(err, self.finish, f"interrupted after {done} record{'s' * (done != 1)}; partial results in "
                                            f"{partial}, run.json (status interrupted) in {out / RUN}") from None

    def _end(self, note: str | None) -> EvalResult:
        """After the ppl phase: a shard part is done; a run with no record predicted failed; any other is scored."""
        phase, out = self.phase, self.plan.output_dir
        self.run["records"].update(total=phase.ok + phase.failed, ok=phase.ok, failed=phase.failed)
        if self.plan.shard is not None:
            self.finish("partial")
            return EvalResult(out, None, self.run, note)
        if phase.ok == 0:
            self.finish("failed", "no record was predicted")
            raise EvalError(f"no record was predicted ({phase.failed} failed); nothing to score")
        self.cmp_started = time.perf_counter()
        counts = {"records": phase.ok + phase.failed, "ok": phase.ok, "failed": phase.failed}
        metrics = score(self.handler, out, counts, self.finish)
        return EvalResult(out, metrics, self.run, note)

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the end of the run in run.json: status, counts, timings, the error if any."""
        phase, started, cmp_started = self.phase, self.started, self.cmp_started
        now = time.perf_counter()
        ppl_end = cmp_started if cmp_started is not None else now
        self.run["records"].update(ok=phase.ok, failed=phase.failed)
        seconds = {
            "total": round(now - started, 3),
            "ppl_phase": round(ppl_end - started, 3),
            "ppl_calls": round(phase.ppl_seconds, 3),
            "cmp": round(now - cmp_started, 3) if cmp_started is not None else None,
        }
        rate = round((phase.ok + phase.failed - phase.kept) / (ppl_end - started), 1) if ppl_end > started else None
        end_run(self.run, status, error, seconds=seconds, records_per_second=rate)
        write_run(self.plan.output_dir, self.run)


def _still_to_predict(readable: tuple | None, kept: int, least: int) -> tuple | None:
    """``(reader, start, stop)`` of the records after the ``kept`` ones, or None when fewer than ``least`` are left."""
    if readable is None or readable[2] - readable[1] - kept < least:
        return None
    return readable[0], readable[1] + kept, readable[2]


def _start_pool(handler: PipelineHandler, plan: RunPlan, span: tuple | None):
    """The ppl workers (:mod:`builder.evaluate.runner.ppl_workers`) for ``span``, or None to predict in this process.

    A progress display is paused while they fork (its thread's locks must not be copied held). When the count was
    automatic, workers that cannot start are said in the log and the run goes on in this process."""
    if span is None:
        return None
    from builder.evaluate.runner.ppl_workers import WorkerError, WorkerPool

    ctx, fallback = plan.context, plan.log if plan.workers_auto else None

    def make_phase(out, log: Callable[[str], None]) -> PplPhase:  # runs in a worker: log every failure
        return PplPhase(handler, ctx.dataset_name, ctx.dataset_version, out, log, max_logged=None)

    try:
        with getattr(plan.progress, "paused", contextlib.nullcontext)():
            pool = WorkerPool(plan.workers, make_phase, span[0], plan.batch_size)
        pool.fallback = fallback
        return pool
    except WorkerError as err:
        if fallback is None:
            raise
        fallback(f"{err}; predicting in this process instead")
        return None


def _predict(phase: PplPhase, records: Iterable, plan: RunPlan, pool, span: tuple | None) -> None:
    """The ppl phase: in this process, reading ahead in a thread, or by ``pool``'s workers, which are let go
    when it ends (their memory is not needed for cmp)."""
    size, progress = plan.batch_size, plan.progress
    if pool is None:
        with contextlib.closing(read_ahead(records)) as ahead:  # the reader thread stops before the caller
            phase.run(ahead, size, progress)                    # closes the dataset, whatever happens
        return
    from builder.evaluate.runner.ppl_workers import CHUNK, WorkerStuck

    reader, start, stop = span
    try:
        phase.run_pooled(pool, start, stop, size if size > 1 else CHUNK, progress)
    except WorkerStuck as err:  # with an automatic count, one process takes over after the chunks written
        if pool.fallback is None:
            raise
        pool.close()
        pool.fallback(f"{err.why}; records {err.resume_at}-{stop - 1} are predicted in this process instead")
        _predict(phase, RecordRange(reader, err.resume_at, stop), plan, None, None)
        return
    pool.close(wait=False)  # every chunk is in; a failure's caller stops them for good


def resolve_batch_size(handler: PipelineHandler, requested: int | None) -> int:
    own = int(getattr(handler, "batch_size", 1) or 1)
    if requested is None or requested == own:
        return own
    if requested < 1:
        raise UsageError(f"--batch-size must be >= 1, got {requested}")
    if own == 1 and requested > 1:
        raise EvalError(
            f"{type(handler).__name__} takes one record per ppl call; to batch, pass batch_size=N (N > 1) to "
            "PipelineHandler.__init__ and make ppl accept a list of records"
        )
    return requested
