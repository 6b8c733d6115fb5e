"""Sharded evaluation: `eval --shard I/N` runs ppl over a deterministic 1/N slice; `eval merge` scores the union.

Shard I of N (0-based, like Kubernetes' ``JOB_COMPLETION_INDEX``) is the contiguous record range
``[floor(I*n/N), floor((I+1)*n/N))``, so any N covers every record exactly once, in order. A part holds
``results.jsonl`` and a ``run.json`` with status ``partial``; the merge checks that the parts come from one model
and one dataset, that every index 0..N-1 is there exactly once, concatenates the results in shard order and runs
``cmp`` over them. The merged results file is byte-identical to a single run's, so the metrics are too.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from builder import outdir
from builder.errors import SwcliError, UsageError
from builder.runs.folder import (RESULTS, RUN, OutputError, end_run, finished_part, merged_run, other_work,
                                 prepare_output, read_run, write_run)


class ShardSpecError(UsageError):
    """A shard spec like `3/2` or `0/0`, or an unusable JOB_COMPLETION_INDEX."""


class MergeError(SwcliError):
    """Parts that cannot be merged: different models or datasets, missing or duplicate shards."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def range(self, total: int) -> tuple[int, int]:
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def check_fits(self, total: int, dataset: str) -> None:
        """One line when ``dataset``'s ``total`` records cannot make ``count`` non-empty shards (an empty dataset
        is refused as such elsewhere). The same words for a local dataset and a registry one."""
        if self.count > total > 0:
            raise ShardSpecError(f"shard {self}: dataset {dataset} has {total} records, so at most {total} shards")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str | None, environ: dict | None = None) -> Shard | None:
    """``"I/N"``; without one, Indexed Jobs' ``JOB_COMPLETION_INDEX`` with ``JOB_COMPLETION_COUNT``; else None."""
    environ = os.environ if environ is None else environ
    if spec is None:
        if "JOB_COMPLETION_INDEX" not in environ:
            return None
        if "JOB_COMPLETION_COUNT" not in environ:
            raise ShardSpecError("JOB_COMPLETION_INDEX is set but JOB_COMPLETION_COUNT is not; set it to the Job's completions")
        spec = f"{environ['JOB_COMPLETION_INDEX']}/{environ['JOB_COMPLETION_COUNT']}"
    index, sep, count = spec.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise ShardSpecError(f"shard '{spec}' is not I/N (e.g. 0/4)") from None
    if not sep or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise ShardSpecError(f"shard '{spec}': need 0 <= I < N and N >= 1 (shards are numbered from 0)")
    return shard


def _read_run(path: Path) -> dict:
    """A part's run.json: never through a link or from a FIFO, bounded before it is parsed (builder.outdir)."""
    run = read_run(path)
    if not isinstance(run, dict):
        raise ValueError("not a JSON object")
    return run


def _load_part(path: Path) -> dict:
    path = Path(path)
    try:
        run = _read_run(path)
    except FileNotFoundError:
        raise MergeError(f"{path}: no {RUN}; not an eval --shard output") from None
    except OSError as err:
        raise MergeError(f"{err.filename or path / RUN}: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:
        raise MergeError(f"{path}/{RUN} is unreadable: {err}") from None
    if not run.get("shard"):
        raise MergeError(f"{path}: not a shard part ({RUN} has no shard)")
    if run.get("status") != "partial":
        raise MergeError(f"{path}: shard {run['shard'].get('index')} did not finish (status {run.get('status')})")
    try:
        if not outdir.check_file(path / RESULTS):
            raise MergeError(f"{path}: {RESULTS} is missing")
    except OSError as err:
        raise MergeError(f"{err.filename}: {err.strerror or err}") from None
    run["_path"] = path
    return run


def check_parts(parts: list[Path], *, model: dict | None = None) -> list[dict]:
    """The parts' run.json, sorted by shard index, after checking they belong together and are complete; with
    ``model`` (a model manifest: the model image's own), that they are runs of that model version too."""
    if not parts:
        raise MergeError("no parts given")
    runs = [_load_part(p) for p in parts]
    first = runs[0]
    if model is not None:
        theirs = first.get("model") or {}
        if (theirs.get("name"), theirs.get("version")) != (model.get("name"), model.get("version")):
            raise MergeError(f"{first['_path']} is a run of model {theirs.get('name')}:{theirs.get('version')}, "
                             f"not of this image's {model.get('name')}:{model.get('version')} (parts of an "
                             "earlier job under the same name?)")
    for run in runs[1:]:
        key = other_work(run, first)
        if key is not None:
            raise MergeError(f"{run['_path']} is from {key} {run.get(key)}, {first['_path']} from {first.get(key)}")
        if run["shard"]["count"] != first["shard"]["count"]:
            raise MergeError(f"{run['_path']} is shard {run['shard']['index']}/{run['shard']['count']}, "
                             f"{first['_path']} of {first['shard']['count']}")
    count = first["shard"]["count"]
    seen: dict[int, Path] = {}
    for run in runs:
        index = run["shard"]["index"]
        if index in seen:
            raise MergeError(f"shard {index} given twice: {seen[index]} and {run['_path']}")
        seen[index] = run["_path"]
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(map(str, missing))} of {count}")
    return sorted(runs, key=lambda r: r["shard"]["index"])


def _finished_index(part: Path) -> tuple[int, int] | None:
    """(index, count) of a part whose eval finished, else None: absent, still running, or failed (and retried)."""
    try:
        run = _read_run(part)
    except (OSError, ValueError, RecursionError):
        return None
    return finished_part(run)


def wait_for_parts(parts_dir: Path, timeout: float, *, poll: float = 0.5, log=None) -> list[Path]:
    """Wait until the subfolders of ``parts_dir`` hold a finished part for every index 0..N-1; return them all.

    This is what lets a merge Job be applied together with the Indexed eval Job: Kubernetes has no Job-to-Job
    ordering, so the merge waits for the parts (N is read from the first finished part) instead of failing
    while they are written. A failed part is waited on too, since the Job retries its index. After
    ``timeout`` seconds the missing indices are named.
    """
    parts_dir = Path(parts_dir)

    def look() -> tuple[int | None, set[int], list[Path]]:
        listed = parts_dir.iterdir() if parts_dir.is_dir() else ()
        parts = sorted(p for p in listed if p.is_dir() and not p.is_symlink())  # a linked "part" is not one
        finished = [f for f in map(_finished_index, parts) if f]
        return (finished[0][1] if finished else None), {i for i, _ in finished}, parts

    return wait_for_indices(look, timeout, poll=poll, log=log, where=str(parts_dir), none="no finished part",
                            waiting=f"parts in {parts_dir}", done="finished")


def wait_for_indices(look, timeout: float, *, poll: float, log, where: str, none: str, waiting: str, done: str):
    """Call ``look()`` -> (N or None, indices present, value) every ``poll`` seconds until indices 0..N-1 are all
    present, and return that value; after ``timeout`` seconds a MergeError names the missing ones (``none`` when
    there is no part at all). Progress goes to ``log`` when it changes. Shared by the volume and registry merges."""
    deadline, reported = time.monotonic() + timeout, None
    while True:
        count, present, value = look()
        missing = sorted(set(range(count)) - present) if count else None
        if missing == []:
            return value
        if time.monotonic() >= deadline:
            what = f"missing shard(s) {', '.join(map(str, missing))} of {count}" if missing else none
            raise MergeError(f"{where}: {what} after waiting {timeout:g} s")
        if log and (count, missing) != reported:
            log(f"waiting for {waiting}: " + (f"{count - len(missing)} of {count} {done}" if count
                                              else f"none {done} yet"))
            reported = (count, missing)
        time.sleep(poll)


def merge_parts(parts: list[Path], output_dir: Path, handler, *, model: dict | None = None, log=None
                ) -> tuple[object, dict]:
    """Concatenate the parts' results in shard order into ``output_dir`` and score them with ``handler.cmp``.

    Scoring is the single run's :func:`~builder.evaluate.runner.run.score`, so a merge whose cmp fails (or is
    interrupted, or finds the disk full) leaves a run.json with status failed and the error, like a single run.
    """
    from builder.evaluate.runner.run import score, stopped

    runs = check_parts(parts, model=model)
    output_dir = Path(output_dir)
    merged = merged_run(runs)
    counts = dict(merged["records"])
    prepare_output(output_dir, merged)
    started = time.perf_counter()

    def finish(status: str, error: str | None = None) -> None:
        end_run(merged, status, error, seconds={"ppl_calls": round(sum(r["seconds"]["ppl_calls"] for r in runs), 3),
                                                "slowest_shard": max(r["seconds"]["ppl_phase"] for r in runs),
                                                "cmp": round(time.perf_counter() - started, 3)})
        write_run(output_dir, merged)

    try:
        _concatenate([run["_path"] / RESULTS for run in runs], output_dir / RESULTS)
    except BaseException as err:
        raise stopped(err, finish, f"interrupted while merging {len(runs)} parts; run.json (status interrupted) in "
                                   f"{output_dir / RUN}") from None
    metrics = score(handler, output_dir, {"records": counts["total"], "ok": counts["ok"], "failed": counts["failed"]},
                    finish)
    return metrics, merged


def _concatenate(sources: list[Path], target: Path) -> None:
    """The ``sources`` one after the other as ``target``, through a new temp file renamed into place; no link is
    followed and no FIFO waited on, on either side (builder.outdir). A source that cannot be read is a MergeError
    naming it, a target that cannot be written an OutputError."""
    try:
        with outdir.open_temp(target) as out:
            for source in sources:
                try:
                    with outdir.open_read(source) as part:
                        shutil.copyfileobj(part, out, 1 << 20)
                except OSError as err:
                    raise MergeError(f"{err.filename or source}: cannot read: {err.strerror or err}") from None
    except OSError as err:
        raise OutputError(target, err) from None
