"""``--resume``: continue an interrupted evaluation from what its output folder holds.

A run is identified by its output folder. Its ``run.json`` says what ran (model, dataset, shard, batch size) and
how it ended; what was predicted so far is in one of

- ``.results.jsonl.tmp``: the file being written, left by a process killed with ``kill -9`` (or a lost node);
- ``results.jsonl.partial``: an orderly stop (Ctrl-C, a failed record, a full disk);
- ``results.jsonl``: a stop during ``cmp`` (every record was predicted).

Rules (see ``docs/resume.md``):

- A run of another model, dataset, shard or batch size is refused, naming both: its results could not be
  continued into the results of this one.
- A finished run (status ``succeeded``, or ``partial`` for a shard part, with its files present) is left as it
  is: resuming it is a no-op that says so, so a retried Kubernetes pod whose shard is done exits at once.
- The results are repaired, never trusted: the longest prefix of complete lines (ending in a newline) that are
  result objects whose indices count up from the run's first record is kept, byte for byte; the rest (a line cut
  by the kill, and everything from the first line that does not parse or is out of order) is cut off. ``ppl``
  runs only on the records after the kept ones and its lines are appended, so the final results.jsonl and
  metrics.json equal an uninterrupted run's.

The results file is written by :class:`builder.runs.folder.ResultsWriter`, flushed after every ppl call, so a kill
loses at most the record (or batch) in flight.

Records are numbered consecutively (index = first + position), as a dataset reader's are. A reader, or a
:class:`~builder.evaluate.runner.records.RecordRange`, skips the kept records without reading them; any other
iterable reads and drops them.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from builder import outdir
from builder.errors import EvalError
from builder.runs.folder import (METRICS, PARTIAL, RESULTS, RUN, TMP, OutputError, is_evaluation, other_run, read_run,
                                 resumed_run)
from builder.runs.schema import RunError, check_result

FINISHED = ("succeeded", "partial")  # partial: a shard part whose ppl phase ended, waiting for `eval merge`
MAX_LINE = 64 << 20  # a results line longer than this is cut off on --resume (its record is predicted again)


class ResumeError(EvalError):
    """``--resume`` refused: another model, dataset, shard or batch size, or an output folder it cannot read."""


@dataclass(frozen=True)
class Kept:
    """The results kept from an interrupted run: how many lines, and how many of them are ok or failed."""

    lines: int = 0
    ok: int = 0
    failed: int = 0


# ------------------------------------------------------------------------------------------ the run itself


def previous_run(output_dir: Path, run: dict) -> dict | None:
    """The run.json of the run in ``output_dir``, checked to be the run ``run`` describes; None when there is none.

    Refuses (one line naming both) a run of another model, dataset, shard or batch size, and a merged run."""
    path = output_dir / RUN
    try:
        previous = read_run(output_dir)  # not through a link, not from a FIFO, bounded
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ResumeError(f"cannot resume {output_dir}: {path} is unreadable: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:
        raise ResumeError(f"cannot resume {output_dir}: {path} is not JSON: {err}") from None
    if not is_evaluation(previous):
        raise ResumeError(f"cannot resume {output_dir}: {path} is not the run.json of an evaluation")
    if previous.get("merged_from"):
        raise ResumeError(f"cannot resume {output_dir}: it holds a merge of shard parts (`swcli eval merge` "
                          "redoes a merge); resume the parts instead")
    differs = other_run(previous, run)
    if differs is not None:
        raise ResumeError(f"cannot resume {output_dir}: it holds a run of {differs[0]}, this is {differs[1]}; --resume "
                          "continues the same model, dataset, shard and batch size (give another --output "
                          "for a new run)")
    return previous


def finished(output_dir: Path, previous: dict) -> bool:
    """The run ended (succeeded, or a shard part done) and its outputs are all there."""
    status = previous.get("status")
    return (status in FINISHED and outdir.is_file(output_dir / RESULTS)
            and (status == "partial" or outdir.is_file(output_dir / METRICS)))


def stored_metrics(output_dir: Path, previous: dict) -> Any:
    """What a finished run's metrics.json holds (None for a shard part, which has none)."""
    if previous.get("status") != "succeeded":
        return None
    path = output_dir / METRICS
    try:
        return json.loads(outdir.read_bytes(path, outdir.MAX_METRICS))
    except (OSError, ValueError, RecursionError) as err:
        raise ResumeError(f"cannot resume {output_dir}: {path} is unreadable: {getattr(err, 'strerror', None) or err}") from None


# ---------------------------------------------------------------------------------------------- results


def pick_up(output_dir: Path, run: dict, previous: dict | None, records: Iterable, total: int | None
            ) -> tuple[Iterable, Kept]:
    """Before the ppl phase: a fresh run (``previous`` None) clears the folder's earlier outputs; a resumed one
    recovers the results kept, records the resume in ``run`` and gets the records still to predict."""
    if previous is None:
        clear(output_dir)
        return records, Kept()
    first = run["shard"]["start"] if run.get("shard") else 0
    kept = recover(output_dir, first, total)
    resumed_run(run, previous, kept.lines)
    return remaining(records, first, kept.lines), kept



def clear(output_dir: Path) -> None:
    """Remove results and metrics of an earlier run before a fresh one, so no later --resume can trust them."""
    if not output_dir.is_dir():
        return  # a new folder, or one prepare_output will say it cannot create
    for name in (PARTIAL, RESULTS, METRICS, TMP):
        path = output_dir / name
        try:
            outdir.check_file(path)  # a link, FIFO or folder planted there is refused, not quietly removed
            outdir.unlink(path)
        except OSError as err:
            raise OutputError(path, err, " (an earlier run's file, removed before a new run)") from None


def recover(output_dir: Path, first: int, total: int | None) -> Kept:
    """Gather what was predicted into ``.results.jsonl.tmp``, cut it to the lines that can be trusted, count them.

    ``first`` is the index of the run's first record, ``total`` how many records the run has (None: unknown)."""
    tmp = output_dir / TMP
    try:  # each name a regular file or absent: a planted link, FIFO or folder is refused before anything moves
        found = [p for p in (tmp, output_dir / PARTIAL, output_dir / RESULTS) if outdir.check_file(p, single=True)]
        if not found:
            return Kept()
        if found[0] != tmp:
            outdir.replace(found[0], tmp)
        for older in found[1:]:  # a newer copy exists (see the module docstring): these are stale
            outdir.unlink(older)
        lines = ok = size = 0
        with open(outdir.open_in_place(tmp, os.O_RDWR), "r+b") as fh:  # cut in place: one link, no other file
            while raw := fh.readline(MAX_LINE + 1):
                if (total is not None and lines >= total) or not raw.endswith(b"\n"):
                    break  # a line cut by the kill, or longer than any result swcli writes
                record = _result(raw, first + lines)
                if record is None:
                    break
                lines += 1
                size += len(raw)
                ok += record.get("error") is None
            fh.truncate(size)
    except OSError as err:
        raise ResumeError(f"cannot resume {output_dir}: {err.filename or tmp}: {err.strerror or err}") from None
    return Kept(lines, ok, lines - ok)


def _result(raw: bytes, index: int) -> dict | None:
    """The results line ``raw`` as a record when it is one, with index ``index``; else None."""
    try:
        record = check_result("", json.loads(raw))
    except (ValueError, RecursionError, RunError):  # UnicodeDecodeError is a ValueError
        return None
    return record if record["index"] == index else None


def remaining(records: Iterable, first: int, kept: int) -> Iterable:
    """``records`` after the first ``kept`` of them."""
    if kept == 0:
        return records
    if hasattr(records, "iter_records"):  # a DatasetReader or a RecordRange: jump there
        return records.iter_records(first + kept)
    return _after(records, kept, first + kept)


def _after(records: Iterable, kept: int, expected: int) -> Iterator:
    it = iter(records)
    collections.deque(itertools.islice(it, kept), maxlen=0)
    head = next(it, None)
    if head is None:
        return
    if head.index != expected:
        raise ResumeError(f"record {head.index} follows the {kept} kept results, expected record {expected}: "
                          "the records are not numbered consecutively, so this run cannot be resumed")
    yield head
    yield from it
