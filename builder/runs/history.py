"""Evaluation runs: the history under ``$SWCLI_HOME/runs``, reading one run back, looking one up, removing one.

Every evaluation writes a run folder (:mod:`builder.runs.folder`). Runs written elsewhere (``--output DIR``,
``swcli job run -o DIR``) are recorded by a symlink in ``runs/``, so ``swcli eval list`` sees every evaluation
wherever its files went. Every reader (show, report, diff, gates, list) loads a run through :func:`load_run`, whose
files are shape-checked (:mod:`builder.runs.schema`). Comparing two runs is :mod:`builder.runs.diff`, CI gates
:mod:`builder.runs.gates`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from builder import outdir
from builder.runs.folder import METRICS, RESULTS, RUN, check_run
from builder.runs.schema import RunError, check_metrics, check_result
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
        path = self.path / RESULTS
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
    return Run(run_id or path.name, path, read_run_json(path / RUN),
               _read_json(path / METRICS, check_metrics, MAX_METRICS_READ))


# --------------------------------------------------------------------------------------------- history


def run_id_problem(ref: str) -> str | None:
    if RUN_ID.fullmatch(ref):
        return None
    return (f"'{ref}' is not a run id (letters, digits, '.', '_', '+', '-'; a run folder is given as a path, "
            "e.g. ./out)")


def run_stamp(started: object = None) -> str:
    """The time part of every run id, ``YYYYmmdd-HHMMSS`` in UTC (``model eval``'s new runs and the recorded ones
    of ``--output``/``job run`` alike): ``started`` (run.json's ISO time), else now."""
    try:
        when = datetime.fromisoformat(started) if isinstance(started, str) else datetime.now(timezone.utc)
    except ValueError:
        when = datetime.now(timezone.utc)
    when = when.replace(tzinfo=when.tzinfo or timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")


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
    run = read_run_json(output_dir / RUN)
    stamp = run_stamp(run.get("started"))
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
        elif (path / RUN).exists():
            try:
                meta = read_run_json(path / RUN)
                if not (path / METRICS).exists() and meta.get("status") != "succeeded":
                    continue
                runs.append(Run(path.name, path, meta, _read_json(path / METRICS, check_metrics,
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
        if not (path / RUN).is_file():
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
