"""The run folder: the names of its files, run.json's shape, and the writers of its files.

An evaluation writes one folder (format in ``docs/runner.md``): ``run.json`` (what ran on what, counts, timings,
status), ``results.jsonl`` (one line per record) and ``metrics.json`` (what ``cmp`` returned). While the ppl phase
runs the results go to a hidden temp file; a run that stops in order leaves them as ``results.jsonl.partial``.

This module is the one place those names are spelled, where run.json is built (a run, a merge of shard parts),
reshaped (its end, a resume), compared (a resume, the parts of a merge) and checked, and where the files are
written: atomically, run.json over its reserved bytes when the disk is full, results one line at a time. The
runner (:mod:`builder.evaluate.runner`) writes folders; history, reports, attach and the jobs read them back.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import __version__, outdir
from builder.errors import EvalError
from builder.runs.mapped import MappedAppend
from builder.runs.schema import RunError, expect, is_int, is_object, is_str, json_type
from builder.store import utc_now
from builder.text import json_safe

RUN = "run.json"
RESULTS = "results.jsonl"
METRICS = "metrics.json"
PARTIAL = f"{RESULTS}.partial"  # the results of a run that stopped in order (Ctrl-C, a failed record, a full disk)
TMP = f".{RESULTS}.tmp"  # the results being written; what a killed run leaves for --resume
OUTPUTS = (RUN, METRICS, RESULTS)  # the fixed names a run writes
RUN_RESERVE = 4096  # bytes run.json is padded to before the run: its final text is written over it on a full disk


class OutputError(EvalError):
    """An output file could not be written (full disk, quota, I/O error); ``path`` names it."""

    def __init__(self, path: str | Path, err: OSError | str, note: str = ""):
        self.path = str(path)
        self.errno = getattr(err, "errno", None)
        reason = err if isinstance(err, str) else (err.strerror or str(err))
        super().__init__(f"{path}: cannot write: {reason}{note}")


# ------------------------------------------------------------------------------------------- run.json's shape


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


def new_run(context: EvalContext, *, batch_size: int, workers: int, total: int | None, shard: dict | None) -> dict:
    """The run.json of an evaluation about to start (status ``running``)."""
    dataset = {"name": context.dataset_name, "version": context.dataset_version}
    if context.label_names:
        dataset["label_names"] = dict(context.label_names)
    run: dict[str, Any] = {
        "kind": "eval",
        "status": "running",
        "model": context.model,
        "handler": context.handler,
        "dataset": dataset,
        "runtime": context.runtime,
        "batch_size": batch_size,
        "device": context.device,
        "threads": context.threads,
        "workers": workers,
        "records": {"total": total, "ok": 0, "failed": 0},
        "started": utc_now(),
        "swcli_version": __version__,
    }
    if shard is not None:
        run["shard"] = shard
    return run


def merged_run(parts: list[dict]) -> dict:
    """The run.json of a merge of shard ``parts`` (their run.json, in shard order, each with its ``_path``) about
    to be scored: the first part's description, every part's counts, the earliest start."""
    ok = sum(r["records"]["ok"] for r in parts)
    failed = sum(r["records"]["failed"] for r in parts)
    merged = {k: v for k, v in parts[0].items() if k not in ("_path", "shard", "seconds", "records", "records_per_second",
                                                              "started", "finished", "status", "error")}
    merged.update(status="running", merged_from=[{"path": str(r["_path"]), **r["shard"]} for r in parts],
                  records={"total": ok + failed, "ok": ok, "failed": failed},
                  started=min(r["started"] for r in parts), swcli_version=__version__)
    return merged


def end_run(run: dict, status: str, error: str | None = None, **timings: Any) -> None:
    """Record in ``run`` how it ended: ``status``, the time, ``timings`` (seconds, rates), the error if any."""
    run.update(status=status, finished=utc_now(), **timings)
    if error:
        run["error"] = error


def resumed_run(run: dict, previous: dict, kept: int) -> None:
    """The run.json of a resumed run keeps the first start (so the run keeps its id in ``runs/``) and lists every
    resume, with the ``kept`` results it continued after."""
    run["started"] = previous["started"]
    earlier = previous.get("resumed") if isinstance(previous.get("resumed"), list) else []
    run["resumed"] = [*earlier, {"at": utc_now(), "after_records": kept}]


def check_run(where: str, run: Any) -> dict:
    """run.json as every reader uses it (:mod:`builder.runs.schema`); one RunError naming the field if not."""
    if not isinstance(run, dict):
        raise RunError(f"{where}: expected a JSON object, got {json_type(run)}")
    for key in ("started", "status"):
        expect(where, key, run.get(key), is_str, "a string")
    for key in ("model", "dataset", "records"):
        expect(where, key, run.get(key), is_object, "an object")
    for key, value in (run.get("model") or {}).items():
        if key in ("name", "version", "source", "ref", "image"):
            expect(where, f"model.{key}", value, is_str, "a string")
    dataset = run.get("dataset") or {}
    for key in ("name", "version"):
        expect(where, f"dataset.{key}", dataset.get(key), is_str, "a string")
    names = expect(where, "dataset.label_names", dataset.get("label_names"), is_object, "an object {label: name}")
    for key, value in (names or {}).items():
        expect(where, f"dataset.label_names.{key}", value, is_str, "a string", optional=False)
    for key, value in (run.get("records") or {}).items():
        expect(where, f"records.{key}", value, is_int, "an integer")
    return run


def is_evaluation(run: Any) -> bool:
    """``run`` is the run.json of an evaluation (a run or a merge) as the runner writes it."""
    return isinstance(run, dict) and run.get("kind") == "eval" and isinstance(run.get("started"), str)


def finished_part(run: dict) -> tuple[int, int] | None:
    """(index, count) of a shard part whose ppl phase ended (status ``partial``), else None."""
    shard = run.get("shard") or {}
    if run.get("status") != "partial" or not isinstance(shard.get("index"), int):
        return None
    return shard["index"], shard["count"]


# ------------------------------------------------------------------------------------------- comparing two


def _model(model: Any) -> str:
    model = model if isinstance(model, dict) else {}
    if model.get("version"):
        return f"model {model.get('name')}:{model['version']}"
    return f"model {model.get('name')} (source {model.get('source')})"


def _dataset(dataset: Any) -> str:
    dataset = dataset if isinstance(dataset, dict) else {}
    return f"dataset {dataset.get('name')}:{dataset.get('version')}"


def _shard(shard: Any) -> str:
    if not isinstance(shard, dict):
        return "the whole dataset"
    return f"shard {shard.get('index')}/{shard.get('count')} (records {shard.get('start')}..{shard.get('stop')})"


def _batch(size: Any) -> str:
    return f"batch size {size}"


_IDENTITY = (("model", _model), ("dataset", _dataset), ("shard", _shard), ("batch_size", _batch))


def other_run(old: dict, new: dict) -> tuple[str, str] | None:
    """How run.json ``old`` and ``new`` differ in what a resume must keep (model, dataset, shard, batch size),
    each as words (``"model m:v1"``), or None when they are runs of the same."""
    for key, show in _IDENTITY:
        before, now = show(old.get(key)), show(new.get(key))
        if before != now:
            return before, now
    return None


def other_work(run: dict, first: dict) -> str | None:
    """The first of model, dataset and handler that two shard parts' run.json disagree on, else None."""
    return next((key for key in ("model", "dataset", "handler") if run.get(key) != first.get(key)), None)


# ------------------------------------------------------------------------------------------- reading, writing


def read_run(folder: Path) -> Any:
    """The run.json of ``folder`` parsed: never through a link or from a FIFO, bounded before it is parsed
    (:mod:`builder.outdir`). Raises what reading (OSError) and parsing (ValueError, RecursionError) raised."""
    return json.loads(outdir.read_bytes(Path(folder) / RUN, outdir.MAX_RUN_JSON))


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


class ResultsWriter:
    """results.jsonl being written (to a temp file, appended to on a resume); an OSError (full disk...) is an
    OutputError naming ``shown``. :meth:`write` keeps a line, :meth:`flush` hands the lines kept to the OS; the
    runner flushes after every ppl call. The lines are copied into a shared mapping of the file
    (:class:`builder.runs.mapped.MappedAppend`): no system call per flush, and a killed process loses none of them.

    The temp file has a fixed name (a killed run's is what ``--resume`` continues), so it is created ``O_EXCL``
    without following a link, and appended to only when it is a regular file with no other hard link
    (:mod:`builder.outdir`)."""

    def __init__(self, path: Path, shown: Path, *, append: bool = False):
        self.path, self.shown = path, shown
        try:
            self._fd = (outdir.open_in_place(path, os.O_RDWR | os.O_CREAT) if append
                        else outdir.create_new(path, os.O_RDWR))
        except OSError as err:
            raise OutputError(shown, err) from None
        self._file = MappedAppend(self._fd, os.lseek(self._fd, 0, os.SEEK_END))
        self._lines: list[str] = []
        self.write = self._lines.append  # write(line): kept until the next flush

    def _failed(self, err: OSError) -> OutputError:
        return OutputError(self.shown, err, f" (what was written is kept as {self.shown}.partial)")

    def flush(self) -> None:
        """Hand the lines written so far to the OS: a killed process loses none of them (no fsync: a crash of the
        machine may)."""
        lines = self._lines
        if lines:
            text = f"{lines[0]}\n" if len(lines) == 1 else "\n".join(lines) + "\n"
            lines.clear()
            try:
                self._file.put(text.encode())
            except OSError as err:
                raise self._failed(err) from None

    def close(self) -> None:
        try:
            self.flush()
            self._file.close()
        except OSError as err:
            raise self._failed(err) from None
        finally:
            self._end()

    def abandon(self) -> None:
        """Keep what was written (the lines of the call that stopped too), as far as the disk lets."""
        with contextlib.suppress(OSError, OutputError):  # the error that stopped the run is the one to report
            self.flush()
        with contextlib.suppress(OSError):
            self._file.close()
        self._end()

    def _end(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
