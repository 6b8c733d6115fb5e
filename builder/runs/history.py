"""Evaluation runs: the history under ``$SWCLI_HOME/runs``, looking one up, comparing two, CI gates.

Every evaluation writes a run folder (metrics.json, results.jsonl, run.json). Runs written elsewhere
(``--output DIR``, ``swcli job run -o DIR``) are recorded by a symlink in ``runs/``, so ``swcli eval list``
sees every evaluation wherever its files went.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from builder import outdir
from builder.errors import SwcliError, UsageError
from builder.store import Store

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")  # one path component, never '.' or '..'
# What a run's files may hold before they are parsed (a run folder may be pulled from a registry or planted; see
# docs/security.md). run.json: a few KB, the label names the most of it (21k ImageNet names are ~0.6 MB). metrics.json:
# per-label scores, the confusion matrix and every ROC point: 1,000 labels over 50k records is ~10 MB, so a pulled
# one may declare MAX_METRICS; a local run over 1M records and 100 labels is ~120 MB of ROC points, so reading one
# is bounded by MAX_METRICS_READ. One results line: a record's scores, ~0.4 MB for 21k labels.
MAX_RUN_JSON = outdir.MAX_RUN_JSON
MAX_METRICS = 32 << 20
MAX_METRICS_READ = outdir.MAX_METRICS
MAX_RESULT_LINE = 8 << 20


class RunError(SwcliError):
    """A run is unknown, incomplete or unreadable, or two runs cannot be compared."""


class GateFailed(SwcliError):
    """A metric is below the bound `--fail-under` asked for."""

    exit_code = 2


@dataclass(frozen=True)
class Run:
    id: str
    path: Path
    run: dict
    metrics: dict

    @property
    def summary(self) -> dict:
        return self.metrics.get("summary") or {}

    @property
    def dataset(self) -> dict:
        return self.run.get("dataset") or {}

    @property
    def label_names(self) -> dict[str, str]:
        """``{str(label value): name}`` from run.json's ``dataset.label_names``; empty when the dataset had none."""
        return self.dataset.get("label_names") or {}

    def label_title(self, label: Any) -> str:
        """How tables show a label: ``"3 cat"`` when the dataset names it, else the raw key."""
        return label_title(label, self.label_names)

    def results(self) -> Iterator[dict]:
        path = self.path / "results.jsonl"
        try:  # not through a link at the file, not from a FIFO (builder.outdir); each line bounded while read
            with io.TextIOWrapper(outdir.open_read(path, follow_folder=True), encoding="utf-8") as fh:
                for number, line in enumerate(iter(lambda: fh.readline(MAX_RESULT_LINE + 1), ""), 1):
                    if len(line) > MAX_RESULT_LINE:
                        raise RunError(f"{path}:{number}: a line longer than {MAX_RESULT_LINE} characters")
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):
                        raise RunError(f"{path}:{number}: not a JSON line") from None
                    yield check_result(f"{path}:{number}", record)
        except FileNotFoundError:
            raise RunError(f"{path} is missing") from None
        except OSError as err:
            raise RunError(f"{path} is unreadable: {err.strerror or err}") from None


def label_title(label: Any, names: dict[str, str]) -> str:
    key = str(label)
    name = names.get(key)
    return f"{key} {name}" if name and name != key else key


# ------------------------------------------------------------------------------------------------ shapes
# Every consumer (show, report, diff, gates, list) reads runs through load_run, so a file of the wrong shape
# is one RunError naming the file and the field, never a traceback deep in a table or a plot.


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string"),
                       ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(where: str, field: str, value: Any, ok: Callable[[Any], bool], want: str, optional: bool = True) -> Any:
    if (value is None and optional) or ok(value):
        return value
    raise RunError(f"{where}: field '{field}': expected {want}, got {_json_type(value)}")


def _obj(value: Any) -> bool:
    return isinstance(value, dict)


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _number_or_null(value: Any) -> bool:
    return value is None or _is_number(value)


def check_run(where: str, run: Any) -> dict:
    if not isinstance(run, dict):
        raise RunError(f"{where}: expected a JSON object, got {_json_type(run)}")
    for key in ("started", "status"):
        _expect(where, key, run.get(key), _str, "a string")
    for key in ("model", "dataset", "records"):
        _expect(where, key, run.get(key), _obj, "an object")
    for key, value in (run.get("model") or {}).items():
        if key in ("name", "version", "source", "ref", "image"):
            _expect(where, f"model.{key}", value, _str, "a string")
    dataset = run.get("dataset") or {}
    for key in ("name", "version"):
        _expect(where, f"dataset.{key}", dataset.get(key), _str, "a string")
    names = _expect(where, "dataset.label_names", dataset.get("label_names"), _obj, "an object {label: name}")
    for key, value in (names or {}).items():
        _expect(where, f"dataset.label_names.{key}", value, _str, "a string", optional=False)
    for key, value in (run.get("records") or {}).items():
        _expect(where, f"records.{key}", value, _is_int, "an integer")
    return run


def check_metrics(where: str, metrics: Any) -> dict:
    if not isinstance(metrics, dict):
        raise RunError(f"{where}: expected a JSON object, got {_json_type(metrics)}")
    for key, value in (_expect(where, "summary", metrics.get("summary"), _obj, "an object") or {}).items():
        if isinstance(value, dict):
            for inner, number in value.items():
                _expect(where, f"summary.{key}.{inner}", number, _number_or_null, "a number")
        else:
            _expect(where, f"summary.{key}", value, _number_or_null, "a number or an object")
    for label, value in (_expect(where, "labels", metrics.get("labels"), _obj, "an object") or {}).items():
        _expect(where, f"labels.{label}", value, _obj, "an object", optional=False)
        for key, number in value.items():
            _expect(where, f"labels.{label}.{key}", number, _number_or_null, "a number")
    all_labels = _expect(where, "all_labels", metrics.get("all_labels"), lambda v: isinstance(v, list) and all(
        isinstance(x, str) or _is_number(x) for x in v), "an array of labels")
    cm = _expect(where, "confusion_matrix", metrics.get("confusion_matrix"), _obj, "an object") or {}
    counts = cm.get("counts")
    size = len(all_labels) if all_labels is not None else len(counts) if isinstance(counts, list) else 0
    _expect(where, "confusion_matrix.counts", counts, lambda v: isinstance(v, list) and len(v) == size and all(
        isinstance(row, list) and len(row) == size and all(_is_int(x) for x in row) for row in v),
        f"a {size}x{size} array of integer arrays (one row and column per label)")
    for label, curve in (_expect(where, "roc_auc", metrics.get("roc_auc"), _obj, "an object") or {}).items():
        _expect(where, f"roc_auc.{label}", curve, lambda v: isinstance(v, dict) and all(
            isinstance(v.get(k), list) and all(_is_number(x) for x in v[k]) for k in ("fpr", "tpr"))
            and len(v["fpr"]) == len(v["tpr"]), "an object with fpr and tpr arrays of numbers, of one length",
            optional=False)
        _expect(where, f"roc_auc.{label}.auc", curve.get("auc"), _is_number, "a number")
    return metrics


def check_result(where: str, record: Any) -> dict:
    """One results.jsonl line: ``{index, label, result, pr, error}``."""
    if not isinstance(record, dict):
        raise RunError(f"{where}: expected a JSON object, got {_json_type(record)}")
    _expect(where, "index", record.get("index"), _is_int, "an integer", optional=False)
    if _expect(where, "error", record.get("error"), _str, "a string or null") is None:
        missing = [key for key in ("label", "result") if key not in record]
        if missing:
            raise RunError(f"{where}: missing field '{missing[0]}' (a record without an error needs label and result)")
    return record


def _read_json(path: Path, check: Callable[[str, Any], dict], limit: int) -> dict:
    """``path`` parsed and shape-checked, its size bounded (``limit``) while it is read, before it is parsed."""
    from builder.bounded import read_json

    try:
        return check(str(path), read_json(path, limit, f"{path} is unreadable", error=RunError))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except OSError as err:
        raise RunError(f"{path} is unreadable: {err.strerror or err}") from None


def read_run_json(path: Path) -> dict:
    return _read_json(path, check_run, MAX_RUN_JSON)


def load_run(path: Path, run_id: str | None = None) -> Run:
    path = Path(path)
    return Run(run_id or path.name, path, read_run_json(path / "run.json"),
               _read_json(path / "metrics.json", check_metrics, MAX_METRICS_READ))


# --------------------------------------------------------------------------------------------- history


def run_id_problem(ref: str) -> str | None:
    if RUN_ID.fullmatch(ref):
        return None
    return (f"'{ref}' is not a run id (letters, digits, '.', '_', '+', '-'; a run folder is given as a path, "
            "e.g. ./out)")


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).lstrip("._+-") or "run"


def record_run(output_dir: Path, store: Store | None = None) -> str:
    """Link an output folder written outside the store into ``runs/``; returns the run id."""
    store = store or Store()
    output_dir = Path(output_dir).resolve()
    runs = store.runs_dir.resolve()
    if output_dir.parent == runs:
        return output_dir.name
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{err.filename or runs}: cannot record the run: {err.strerror or err}") from None
    run = read_run_json(output_dir / "run.json")
    stamp = str(run.get("started") or "").replace(":", "").replace("-", "").replace("+0000", "")[:15]
    base = _safe_id(f"{stamp}-{output_dir.name}"[:200])
    for n in range(1, 1000):
        run_id = base if n == 1 else f"{base}-{n}"
        link = runs / run_id
        if os.path.lexists(link):
            if Path(os.path.realpath(link)) == output_dir:
                return run_id  # recorded already
            continue  # another folder has this id: take the next
        try:
            os.symlink(output_dir, link)
        except OSError as err:
            raise RunError(f"{link}: cannot record the run: {err.strerror or err}") from None
        return run_id
    raise RunError(f"{runs}: too many recorded runs named {base}")


def scan_runs(store: Store | None = None) -> tuple[list[Run], list[str]]:
    """Every readable run, newest first, and one ``"path: why"`` line per entry of ``runs/`` that is not.

    A folder without run.json (an evaluation still running) and a failed run without metrics.json are not
    problems, only not listed."""
    runs, broken = _scan(store or Store())
    return runs, list(broken.values())


def _scan(store: Store) -> tuple[list[Run], dict[str, str]]:
    """Readable runs, newest first, and the unreadable ones by run id (``""`` for the folder itself)."""
    runs, problems = [], {}
    try:
        children = sorted(store.runs_dir.iterdir()) if store.runs_dir.exists() else []
    except OSError as err:
        return [], {"": f"{store.runs_dir}: cannot list: {err.strerror or err}"}
    for path in children:
        if path.name.startswith("."):
            continue  # .removing-<id>
        if run_id_problem(path.name):
            problems[path.name] = f"{path}: not a run id"
        elif path.is_symlink() and not path.exists():
            problems[path.name] = (f"{path}: the recorded folder {os.readlink(path)} is gone "
                                   f"(`swcli eval remove {path.name}` forgets it)")
        elif not path.is_dir():
            problems[path.name] = f"{path}: not a run folder"
        elif (path / "run.json").exists():
            try:
                meta = read_run_json(path / "run.json")
                if not (path / "metrics.json").exists() and meta.get("status") != "succeeded":
                    continue
                runs.append(Run(path.name, path, meta, _read_json(path / "metrics.json", check_metrics,
                                                                  MAX_METRICS_READ)))
            except RunError as err:
                problems[path.name] = str(err)
    runs.sort(key=lambda r: (str(r.run.get("started") or ""), r.id), reverse=True)
    return runs, problems


def list_runs(store: Store | None = None) -> list[Run]:
    """Every readable run, newest first; see :func:`scan_runs` for what is not."""
    return scan_runs(store)[0]


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.startswith((".", "~"))


def _recorded_id(path: Path, store: Store) -> str:
    """The id under which ``runs/`` knows the folder at ``path``; its own name when it is not recorded."""
    real = Path(os.path.realpath(path))
    runs_real = Path(os.path.realpath(store.runs_dir))
    if real.parent == runs_real:
        return real.name
    return next((link.name for link in _links_to(real, store)), real.name)


def _links_to(real: Path, store: Store) -> list[Path]:
    try:
        children = sorted(store.runs_dir.iterdir()) if store.runs_dir.is_dir() else []
    except OSError:
        return []
    return [p for p in children if p.is_symlink() and Path(os.path.realpath(p)) == real]


def resolve_run(ref: str, store: Store | None = None) -> Run:
    """A run by id, unique id prefix, ``latest``, or the path of a run folder."""
    store = store or Store()
    if _is_path(ref):
        path = Path(ref).expanduser()
        if not (path / "run.json").is_file():
            raise RunError(f"{path}: not a run folder (no run.json)")
        return load_run(path, _recorded_id(path, store))
    if ref != "latest":
        problem = run_id_problem(ref)
        if problem:
            raise RunError(problem)
        if (store.runs_dir / ref).exists():
            return load_run(store.runs_dir / ref)
    runs, broken = _scan(store)
    # an unreadable run is never skipped silently: `latest` or a prefix that would name it fails, naming why
    if ref == "latest":
        newest_broken = max((i for i in broken if i and run_id_problem(i) is None), default="")
        if runs and runs[0].id >= newest_broken:
            return runs[0]
        if newest_broken:
            raise RunError(f"the newest run is unreadable: {broken[newest_broken]}")
    matches = [r.id for r in runs if r.id.startswith(ref)] + [i for i in broken if i and i.startswith(ref)]
    if len(matches) == 1:
        if matches[0] in broken:
            raise RunError(broken[matches[0]])
        return next(r for r in runs if r.id == matches[0])
    if not matches:
        raise RunError(f"no run matches '{ref}'" + ("" if runs else f"; {store.runs_dir} holds no runs"))
    raise RunError(f"'{ref}' is ambiguous: {', '.join(sorted(matches)[:5])}")


@dataclass(frozen=True)
class Removed:
    id: str
    path: Path
    deleted: bool  # False: a recorded outside folder, only forgotten


def remove_run(ref: str, store: Store | None = None) -> Removed:
    """Delete a run folder inside ``runs/``; a recorded outside folder is only forgotten (its links removed).

    An exact id is removed even when its files are broken or its folder is gone, so a broken history can be
    cleaned; anything else is resolved like :func:`resolve_run`."""
    store = store or Store()
    exact = not _is_path(ref) and run_id_problem(ref) is None and os.path.lexists(store.runs_dir / ref)
    target = store.runs_dir / ref if exact else resolve_run(ref, store).path
    real = Path(os.path.realpath(target))
    runs_real = Path(os.path.realpath(store.runs_dir))
    links = _links_to(real, store)
    if exact and (store.runs_dir / ref).is_symlink() and store.runs_dir / ref not in links:
        links.append(store.runs_dir / ref)
    try:
        for link in links:
            link.unlink()
        if real.parent == runs_real and real.is_dir() and not real.is_symlink():
            doomed = real.with_name(f".removing-{real.name}")  # no half-deleted run looks complete meanwhile
            os.rename(real, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            return Removed(real.name, real, True)
    except OSError as err:
        raise RunError(f"{err.filename or real}: cannot remove: {err.strerror or err}") from None
    if not links:
        raise RunError(f"{target}: not a run in {store.runs_dir}; nothing recorded to forget "
                       "(remove deletes runs in the store and forgets recorded folders only)")
    return Removed(links[0].name, real, False)


def flat(value: Any) -> Any:
    """The seed stores one-element lists per record; comparisons want the element."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


# ------------------------------------------------------------------------------------------------- gates

GATE_KEYS = {
    "accuracy": ("accuracy", None),
    "hamming_loss": ("hamming_loss", None),
    "cohen_kappa": ("cohen_kappa_score", None),
    "roc_auc": ("roc_auc", None),
    **{f"{avg}-{m}": (f"{avg} avg", key) for avg in ("macro", "weighted")
       for m, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"))},
}


def metric_value(metrics: dict, key: str) -> float | None:
    if key not in GATE_KEYS:
        raise RunError(f"unknown metric '{key}' for --fail-under; known: {', '.join(GATE_KEYS)}")
    outer, inner = GATE_KEYS[key]
    value = (metrics.get("summary") or {}).get(outer)
    return value.get(inner) if inner and isinstance(value, dict) else value


def check_gates(run: Run, gates: list[str]) -> list[str]:
    """``["accuracy=0.6", ...]``: raises GateFailed naming every metric below its bound; returns what passed."""
    failures, passed = [], []
    for gate in gates:
        key, sep, bound = gate.partition("=")
        try:
            limit = float(bound)
        except ValueError:
            raise UsageError(f"--fail-under takes METRIC=NUMBER, got '{gate}'") from None
        if not sep:
            raise UsageError(f"--fail-under takes METRIC=NUMBER, got '{gate}'")
        value = metric_value(run.metrics, key.strip())
        (failures if value is None or value < limit else passed).append(f"{key.strip()} {value if value is None else round(value, 4)} (bound {limit})")
    if failures:
        raise GateFailed(f"run {run.id}: below the bound: {'; '.join(failures)}")
    return passed


# -------------------------------------------------------------------------------------------------- diff


def diff_runs(a: Run, b: Run, *, max_records: int = 20) -> dict:
    """Metric-by-metric and label-by-label deltas (b - a), and the records that flipped between right and wrong."""
    if (a.dataset.get("name"), a.dataset.get("version")) != (b.dataset.get("name"), b.dataset.get("version")):
        raise RunError(
            f"runs {a.id} and {b.id} evaluated different datasets "
            f"({a.dataset.get('name')}:{str(a.dataset.get('version'))[:12]} vs {b.dataset.get('name')}:{str(b.dataset.get('version'))[:12]}); "
            "a diff compares two models on the same dataset"
        )
    summary = {}
    for key in GATE_KEYS:
        va, vb = metric_value(a.metrics, key), metric_value(b.metrics, key)
        if va is not None or vb is not None:
            summary[key] = {"a": va, "b": vb, "delta": (vb - va) if va is not None and vb is not None else None}
    labels = {}
    labels_a, labels_b = a.metrics.get("labels") or {}, b.metrics.get("labels") or {}
    for label in sorted(set(labels_a) | set(labels_b), key=str):
        la, lb = labels_a.get(label, {}), labels_b.get(label, {})
        labels[label] = {m: {"a": la.get(m), "b": lb.get(m),
                             "delta": (lb[m] - la[m]) if isinstance(la.get(m), (int, float)) and isinstance(lb.get(m), (int, float)) else None}
                         for m in ("precision", "recall", "f1-score", "auc") if m in la or m in lb}
    right_a = {r["index"]: flat(r["result"]) == flat(r["label"]) for r in a.results() if r.get("error") is None}
    fixed, broken = [], []
    for r in b.results():
        if r.get("error") is not None or r["index"] not in right_a:
            continue
        now = flat(r["result"]) == flat(r["label"])
        if now and not right_a[r["index"]]:
            fixed.append(r["index"])
        elif right_a[r["index"]] and not now:
            broken.append(r["index"])
    return {
        "a": {"id": a.id, "model": a.run.get("model")},
        "b": {"id": b.id, "model": b.run.get("model")},
        "dataset": a.dataset,
        "label_names": {**b.label_names, **a.label_names},
        "summary": summary,
        "labels": labels,
        "flipped": {"wrong_to_right": len(fixed), "right_to_wrong": len(broken),
                    "wrong_to_right_indices": fixed[:max_records], "right_to_wrong_indices": broken[:max_records]},
    }
