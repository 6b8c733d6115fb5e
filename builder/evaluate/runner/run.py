"""The evaluation runner: ``ppl`` over every record, ``cmp`` over the stored results, files out.

This is the one runner: ``swcli model eval`` calls it in-process and the model image's ``eval`` command calls it
inside the container, so both give the same files. Outputs (format in ``docs/runner.md``):

- ``results.jsonl``: one line per record (index, label, result, pr, error), streamed to a temp file and renamed
  when the ppl phase ends, so a crash never leaves a file that looks complete. The temp file is flushed after
  every ppl call, so a process killed with ``kill -9`` loses at most the record (or batch) in flight, and ``--resume`` (:mod:`builder.evaluate.runner.resume`) continues from the rest;
- ``metrics.json``: what ``cmp`` returned (the ``multi_classification`` document, usually);
- ``run.json``: what ran on what, counts, timings and status. Written (status ``running``, padded to
  ``RUN_RESERVE`` bytes) before the first record, so that on a full disk the final status can still be written
  over it in place; written on failure and on Ctrl-C too.

Scoring (``cmp``, the counts fallback, ``metrics.json``, the final run.json) is :func:`score`, which a shard merge
uses too. Anything that stops a run is one line naming the record or file (:class:`OutputError` for a file that
could not be written, :class:`EvalInterrupted` for Ctrl-C, exit code 130).

The ppl phase itself is :mod:`builder.evaluate.runner.ppl_phase`. While it runs, the next records are read and checked
in a background thread (:mod:`builder.evaluate.runner.prefetch`) and ``cmp``'s libraries are imported in a helper
process (:mod:`builder.evaluate.runner.metric_worker`), so a run costs less wall time than doing the same steps in turn.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from builder import __version__, outdir
from builder.evaluate.runner.metric_worker import scoring_helper
from builder.api.model import PipelineHandler
from builder.errors import EvalError, SwcliError, USER_CODE_ERRORS, UsageError
from builder.evaluate.runner.ppl_phase import PplPhase, Progress, to_jsonable, unserialisable
from builder.evaluate.runner.ppl_workers import AUTO_MIN_RECORDS, range_of
from builder.evaluate.runner.prefetch import read_ahead
from builder.evaluate.runner.run_lock import output_lock
from builder.store import utc_now
from builder.text import json_safe

RESULTS = "results.jsonl"
METRICS = "metrics.json"
RUN = "run.json"
OUTPUTS = (RUN, METRICS, RESULTS)  # the fixed names a run writes (and resume.py's partial and temp results)
RUN_RESERVE = 4096  # bytes run.json is padded to before the run: its final text is written over it on a full disk

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


def json_text(obj: Any) -> str:
    """``obj`` as indented strict JSON (numpy values plain, NaN/inf null); raises what encoding raised."""
    try:  # one pass, unless there is a NaN/inf to replace (a metrics document is ~1 MB of ROC points)
        return json.dumps(obj, default=to_jsonable, indent=2, allow_nan=False) + "\n"
    except ValueError:
        return json.dumps(json_safe(json.loads(json.dumps(obj, default=to_jsonable))), indent=2, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a new temp file beside ``path`` and rename it over (:func:`builder.outdir.write_file`: no
    link at either name is followed); an OSError is an OutputError naming path."""
    try:
        outdir.write_file(path, text.encode("utf-8"))
    except OSError as err:
        raise OutputError(path, err) from None


def prepare_output(output_dir: Path, run: dict) -> None:
    """Create ``output_dir`` (not a link) and reserve run.json there (status as in ``run``, padded to RUN_RESERVE
    bytes); a link, FIFO or folder at the name of an output is refused."""
    try:
        outdir.make_folder(output_dir)
        for name in OUTPUTS:  # a link or FIFO planted at a name written later is refused now, before any work
            outdir.check_file(output_dir / name)
        write_atomic(output_dir / RUN, json_text(run).ljust(RUN_RESERVE))
    except outdir.UnsafeFileError as err:
        raise EvalError(f"{err.filename}: {err.strerror}") from None
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
        try:  # the reserved page(s): no new blocks needed; never through a link or into another hard link
            with open(outdir.open_in_place(path, os.O_RDWR), "w", encoding="utf-8") as fh:
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
        with io.TextIOWrapper(outdir.open_read(self.path), encoding="utf-8") as fh:  # no link, no FIFO
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
    threads: int | None = None  # torch's intra-op threads during ppl (builder.evaluate.runner.threads); None: no torch


@dataclass
class EvalResult:
    output_dir: Path
    metrics: Any
    run: dict
    note: str | None = None  # what --resume did: continued after N records, or found the run finished

    @property
    def ok(self) -> bool:
        return self.run.get("status") in ("succeeded", "partial")


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
    workers: int = 1,
    workers_auto: bool = False,
) -> EvalResult:
    """Run ``handler`` over ``records`` (objects with ``.index``, ``.data``, ``.label``) into ``output_dir``.

    With ``shard`` (``{index, count, start, stop}``) only the ppl phase runs: the output is a part for
    ``swcli eval merge`` (run.json status ``partial``), and an empty slice is fine. With ``resume`` the run in
    ``output_dir`` is continued (see :mod:`builder.evaluate.runner.resume`); without, its earlier outputs are removed.
    With ``workers`` > 1 and records readable by range (a dataset reader, a record range), ``ppl`` runs in that
    many forked processes (:mod:`builder.evaluate.runner.ppl_workers`); the outputs are the same. ``workers_auto``: the
    count was not asked for, so a resume with few records left, or a fork that fails, predicts in this process.
    """
    from builder.evaluate.runner import resume as resuming

    ctx = context or EvalContext()
    log = log or (lambda msg: print(f"swcli: warning: {msg}", file=sys.stderr))
    output_dir = Path(output_dir)
    size = resolve_batch_size(handler, batch_size)
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
        "threads": ctx.threads,
        "workers": workers,
        "records": {"total": total, "ok": 0, "failed": 0},
        "started": utc_now(),
        "swcli_version": __version__,
    }
    if shard is not None:
        run["shard"] = shard
    with output_lock(output_dir):  # one run at a time in a folder (builder.evaluate.runner.run_lock)
        previous = resuming.previous_run(output_dir, run) if resume else None
        if previous is not None and resuming.finished(output_dir, previous):
            note = f"{output_dir} holds a finished run (status {previous['status']}); nothing to resume"
            return EvalResult(output_dir, resuming.stored_metrics(output_dir, previous), previous, note=note)
        phase = PplPhase(handler, ctx.dataset_name, ctx.dataset_version, None, log)
        readable = range_of(records) if workers > 1 else None  # (reader, start, stop), before pick_up moves on
        records, kept = resuming.pick_up(output_dir, run, previous, records, total)
        phase.kept, phase.ok, phase.failed = kept.lines, kept.ok, kept.failed
        note = None if previous is None else f"resumed after {kept.lines} of {'?' if total is None else total} records"
        prepare_output(output_dir, run)
        started = time.perf_counter()
        results, tmp_results = output_dir / RESULTS, output_dir / resuming.TMP
        times = {"cmp_started": None}

        def finish(status: str, error: str | None = None) -> None:
            _finish(run, output_dir, phase, started, times["cmp_started"], status=status, error=error)

        span = _still_to_predict(readable, kept.lines, AUTO_MIN_RECORDS if workers_auto else 1)
        try:  # a worker closes its copy of the scoring helper's pipes (builder.evaluate.runner.metric_worker.forget_in_child)
            pool = _start_pool(workers, handler, ctx, span, size, progress, log if workers_auto else None)
        except BaseException as err:
            raise stopped(err, finish, "interrupted while starting the ppl workers") from None
        if pool is None:
            run["workers"] = 1  # nothing left to predict, records only a loop can read, or no fork to be had
        elif ctx.threads is not None:
            run["threads"] = 1  # each worker's (builder.evaluate.runner.ppl_workers)
        # cmp's libraries load in a helper process while the model computes (builder.evaluate.runner.metric_worker)
        with scoring_helper(getattr(handler.cmp, "imports", ()) if shard is None else ()):
            try:
                phase.out = resuming.ResultsWriter(tmp_results, results, append=previous is not None)
                _predict(phase, records, size, progress, pool, span)
                phase.out.close()
                outdir.replace(tmp_results, results)
            except BaseException as err:
                if pool is not None:
                    pool.close()
                if phase.out is not None:
                    phase.out.abandon()
                partial = output_dir / f"{RESULTS}.partial"
                with contextlib.suppress(OSError):  # keep what was predicted: the user may want to look at it
                    outdir.replace(tmp_results, partial)
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
            counts = {"records": phase.ok + phase.failed, "ok": phase.ok, "failed": phase.failed}
            metrics = score(handler, output_dir, counts, finish)
            return EvalResult(output_dir, metrics, run, note)


def _still_to_predict(readable: tuple | None, kept: int, least: int) -> tuple | None:
    """``(reader, start, stop)`` of the records after the ``kept`` ones, or None when fewer than ``least`` are left."""
    if readable is None or readable[2] - readable[1] - kept < least:
        return None
    return readable[0], readable[1] + kept, readable[2]


def _start_pool(workers: int, handler: PipelineHandler, ctx: EvalContext, span: tuple | None, size: int,
                progress: Progress | None, fallback: Callable[[str], None] | None):
    """The ppl workers (:mod:`builder.evaluate.runner.ppl_workers`) for ``span``, or None to predict in this process.

    A progress display is paused while they fork (its thread's locks must not be copied held). With ``fallback``
    (the count was automatic), workers that cannot start are said there and the run goes on in this process."""
    if span is None:
        return None
    from builder.evaluate.runner.ppl_workers import WorkerError, WorkerPool

    def make_phase(out, log: Callable[[str], None]) -> PplPhase:  # runs in a worker: log every failure
        return PplPhase(handler, ctx.dataset_name, ctx.dataset_version, out, log, max_logged=None)

    try:
        with getattr(progress, "paused", contextlib.nullcontext)():
            pool = WorkerPool(workers, make_phase, span[0], size)
        pool.fallback = fallback
        return pool
    except WorkerError as err:
        if fallback is None:
            raise
        fallback(f"{err}; predicting in this process instead")
        return None


def _predict(phase: PplPhase, records: Iterable, size: int, progress: Progress | None, pool, span) -> None:
    """The ppl phase: in this process, reading ahead in a thread, or by ``pool``'s workers, which are let go
    when it ends (their memory is not needed for cmp)."""
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
        from builder.evaluate.runner.resume import RecordRange

        _predict(phase, RecordRange(reader, err.resume_at, stop), size, progress, None, None)
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


def _finish(run: dict, output_dir: Path, phase: PplPhase, started: float, cmp_started: float | None, *, status: str,
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
