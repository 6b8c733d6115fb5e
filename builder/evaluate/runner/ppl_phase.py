"""The ppl phase of a run: feed the handler, store one JSON line per record, apply ``ignore_error``.

Lines go to a results writer (:class:`builder.runs.folder.ResultsWriter`) and are handed to the OS after every
ppl call: a process killed with ``kill -9`` loses at most the call in flight, which ``--resume`` redoes (batching
them by time lost whole shards of a fast handler's work to a kill; the writer's copy into a shared mapping of the
file costs no system call, see there). On a GPU a small net's forward takes microseconds, so swcli's own work per
record is kept to about one (``benchmarks/runner_cost.py``, docs/runner.md "Cost per record"): one loop per mode
with what it needs bound to locals, the label's text from a cache when ``handle_label`` is the SDK's own
(:func:`builder.runs.lines.label_text`), the line written by :func:`builder.runs.lines.result_line` (byte for byte
``json``'s), no progress redraw per record. Anything unusual (a failure, a value the fast path does not write)
takes the general path, which is the reference.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

from builder.api.model import PipelineHandler
from builder.errors import EvalError, USER_CODE_ERRORS
from builder.runs.folder import RESULTS
from builder.runs.lines import dump_line, label_text, labelled_line, result_line

MAX_LOGGED_ERRORS = 20
PROGRESS_EVERY = 256

Progress = Callable[[int], None]


def unserialisable(err: Exception) -> str:
    """Why a value could not be stored as JSON: not serialisable (TypeError, ValueError for a cycle) or nested
    too deeply (RecursionError), or a ``tolist`` that raised."""
    deep = " (nested too deeply)" if isinstance(err, RecursionError) else ""
    return f"cannot be stored as JSON{deep}: {type(err).__name__}: {err}"


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


class PplPhase:
    """Feeds the handler, writes one line per record to ``out``, applies ignore_error; counts what it did."""

    def __init__(self, handler: Any, dataset_name: str, dataset_version: str, out, log: Callable[[str], None],
                 max_logged: int | None = MAX_LOGGED_ERRORS):
        self.handler = handler
        self.merge_label = getattr(handler, "merge_label", True)
        self.ignore_error = getattr(handler, "ignore_error", False)
        self.kw = {"dataset_name": dataset_name, "dataset_version": dataset_version}
        self.out = out
        self.log = log
        self.max_logged = max_logged  # None: log every failure (a ppl worker's; the evaluating process caps them)
        self.reported = 0
        self.ok = 0
        self.failed = 0
        self.kept = 0  # records scored by an earlier run that --resume continues (counted in ok and failed)
        self.ppl_seconds = 0.0
        # the stored label is list(label bytes), so its text can come from a cache: no handle_label of the user's
        self.plain_label = not self.merge_label or (
            getattr(type(handler), "handle_label", None) is PipelineHandler.handle_label
            and "handle_label" not in getattr(handler, "__dict__", {}))

    def _label(self, rec) -> Any:
        if self.merge_label:
            return self.handler.handle_label(rec.label, index=rec.index, **self.kw)
        return list(rec.label)

    def _fail(self, rec, message: str) -> None:
        if not self.ignore_error:
            raise EvalError(f"record {rec.index}: {message}")
        self.failed += 1
        self.report(f"record {rec.index}: {message} (skipped: ignore_error=True)")
        self.out.write(dump_line({"index": rec.index, "label": None, "result": None, "pr": None, "error": message}))

    def report(self, message: str) -> None:
        """Log a skipped record's failure: the first ``max_logged`` of a run, then one line saying there are more."""
        self.reported += 1
        if self.max_logged is None or self.reported <= self.max_logged:
            self.log(message)
        elif self.reported == self.max_logged + 1:
            self.log(f"more records failed; see {RESULTS} for every error")

    def _store(self, rec, output: Any) -> None:
        """The general path (the reference): handle_label, the line, its failures."""
        try:
            label = self._label(rec)
        except USER_CODE_ERRORS as err:
            self._fail(rec, f"handle_label raised {type(err).__name__}: {err}")
            return
        result, pr = _split_output(output)
        try:
            line = result_line(rec.index, label, result, pr)
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

    def _stored(self, rec, output: Any) -> int:
        """Store one record's output: its line from the label cache when it can, else by the general path;
        1 when written by the fast path (the caller counts it ok), else 0 (``_store`` counted it)."""
        text = label_text(rec.label) if self.plain_label else None
        if text is not None:
            result, pr = output if isinstance(output, tuple) and len(output) == 2 else (output, None)
            try:
                line = labelled_line(rec.index, text, result, pr)
            except USER_CODE_ERRORS:
                line = None  # the general path says why, as it always did
            if line is not None:
                self.out.write(line)
                return 1
        self._store(rec, output)
        return 0

    def one(self, rec) -> None:
        t0 = time.perf_counter()
        try:
            output = self.handler.ppl(rec.data, index=rec.index, label=rec.label, **self.kw)
        except USER_CODE_ERRORS as err:
            self.ppl_seconds += time.perf_counter() - t0
            self._fail(rec, f"ppl raised {type(err).__name__}: {err}")
            return
        self.ppl_seconds += time.perf_counter() - t0
        fast = self._stored(rec, output)  # (not self.ok += ...: _store counts in self.ok itself)
        self.ok += fast

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
        stored, ok = self._stored, 0
        try:
            for rec, output in zip(recs, outputs):
                ok += stored(rec, output)
        finally:
            self.ok += ok

    def run(self, records: Iterable, size: int, progress: Progress | None) -> None:
        if size == 1 and self.plain_label:
            self._run_plain(records, progress)
            return
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
        flush()
        if progress:
            progress(done)

    def _run_plain(self, records: Iterable, progress: Progress | None) -> None:
        """:meth:`one` and a flush per record, unrolled (the hot loop of a one-record handler with the SDK's
        ``handle_label``): what it needs bound to locals, counts kept in locals and added when it ends."""
        ppl, kw, clock, write, flush = self.handler.ppl, self.kw, time.perf_counter, self.out.write, self.out.flush
        done, ok, spent = self.kept, 0, 0.0
        try:
            for rec in records:
                index, label = rec.index, rec.label
                t0 = clock()
                try:
                    output = ppl(rec.data, index=index, label=label, **kw)
                except USER_CODE_ERRORS as err:
                    spent += clock() - t0
                    self._fail(rec, f"ppl raised {type(err).__name__}: {err}")
                else:
                    spent += clock() - t0
                    text = label_text(label)
                    result, pr = output if isinstance(output, tuple) and len(output) == 2 else (output, None)
                    try:
                        line = None if text is None else labelled_line(index, text, result, pr)
                    except USER_CODE_ERRORS:
                        line = None
                    if line is None:  # a label not bytes, or values not JSON: the general path says why
                        self._store(rec, output)
                    else:
                        write(line)
                        ok += 1
                flush()
                done += 1
                if progress and done % PROGRESS_EVERY == 0:
                    progress(done)
        finally:
            self.ok += ok
            self.ppl_seconds += spent
        flush()
        if progress:
            progress(done)

    def take(self, chunk) -> None:
        """A ppl worker's answer for one chunk (:mod:`builder.evaluate.runner.ppl_workers`): its lines written, its counts
        added, its failures logged, then handed to the OS like the lines of one ppl call."""
        for line in chunk.lines:
            self.out.write(line)
        self.ok += chunk.ok
        self.failed += chunk.failed
        self.ppl_seconds += chunk.ppl_seconds
        for message in chunk.failures:
            self.report(message)
        self.out.flush()

    def run_pooled(self, pool, start: int, stop: int, size: int, progress: Progress | None) -> None:
        """Records ``[start, stop)`` predicted by ``pool``'s workers, in chunks of ``size``, written in order."""
        done = self.kept

        def emit(chunk) -> None:
            nonlocal done
            self.take(chunk)
            done += len(chunk.lines)
            if progress:
                progress(done)

        pool.run(start, stop, size, emit)
        if progress:
            progress(done)
