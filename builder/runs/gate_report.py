"""`swcli eval gate`: a candidate run against a baseline, with absolute bounds and allowed drops.

Rules name the metrics by :data:`builder.runs.gates.GATE_KEYS` (``accuracy``, ``macro-f1``, ...), as
``--fail-under`` does: ``min`` fails when the candidate is below the bound, ``max-drop`` when it is below the
baseline by more than the allowed drop (MLflow's ``MetricThreshold``: ``threshold`` and ``min_absolute_change``).
A metric either run does not have fails the rule that needs it. The two runs must have evaluated one dataset (name
and version), as for a diff, and the records that flipped between right and wrong are counted as a diff counts them.

The baseline is a run of the history, or a model image with evaluations attached in a registry
(:mod:`builder.runs.attach`): the newest one on the candidate's dataset is pulled into the history
(:mod:`builder.runs.attach_pull`, digests verified) and used. Nothing here prints: the CLI and the web console
render :class:`GateResult` (a table, :meth:`GateResult.markdown` for a CI job summary).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import SwcliError, UsageError
from builder.registry import ClientFor
from builder.runs.attach import HEADLINE
from builder.runs.gates import GATE_KEYS, metric_value
from builder.runs.history import Run, load_run, resolve_run, run_id_problem
from builder.runs.schema import RunError
from builder.store import Store

KINDS = {"min": "--min", "max-drop": "--max-drop"}
SLACK = 1e-9  # a drop equal to the allowed one passes, whatever the float subtraction rounds to


@dataclass(frozen=True)
class GateRule:
    metric: str  # a GATE_KEYS key
    kind: str  # "min" | "max-drop"
    bound: float

    def text(self) -> str:
        return f"{self.kind} {self.bound:g}"


def parse_rules(mins: list[str], max_drops: list[str], *, names: dict[str, str] = KINDS) -> list[GateRule]:
    """``["accuracy=0.6"]``, ``["accuracy=0.01"]`` as rules, mins first, each in the order given; a text that is not
    ``METRIC=NUMBER``, an unknown metric or a negative drop is a UsageError (exit 2) naming the flag (``names``: each
    kind's name in errors, the CLI's flags by default)."""
    rules = []
    for kind, texts in (("min", mins or []), ("max-drop", max_drops or [])):
        flag = names[kind]
        for text in texts:
            key, sep, number = text.partition("=")
            key = key.strip()
            try:
                bound = float(number)
            except ValueError:
                bound = math.nan
            if not sep or not key or not math.isfinite(bound):
                raise UsageError(f"{flag} takes METRIC=NUMBER, got '{text}'")
            if key not in GATE_KEYS:
                raise UsageError(f"{flag}: unknown metric '{key}'; known: {', '.join(GATE_KEYS)}")
            if kind == "max-drop" and bound < 0:
                raise UsageError(f"{flag} takes the drop allowed, a number >= 0, got '{text}'")
            rules.append(GateRule(key, kind, bound))
    return rules


@dataclass
class GateRow:
    metric: str
    candidate: float | None
    baseline: float | None
    delta: float | None  # candidate - baseline
    rule: str  # "" for a metric shown for context
    ok: bool
    floor: float | None = None  # the lowest candidate value the rule passes (min: the bound; max-drop: baseline - drop)


@dataclass
class GateResult:
    candidate: str  # run ids
    baseline: str
    rows: list[GateRow]
    flipped: dict  # diff_runs' "flipped": wrong_to_right, right_to_wrong (+ their first indices)
    dataset: str = ""  # name:version, for the summary
    candidate_model: str = ""
    baseline_model: str = ""

    @property
    def passed(self) -> bool:
        return all(row.ok for row in self.rows)

    def failures(self) -> list[GateRow]:
        return [row for row in self.rows if not row.ok]

    def failure_line(self) -> str:
        """One line naming every failing metric with its candidate and baseline values and its rule."""
        parts = [f"{row.metric}: candidate {_num(row.candidate)}, baseline {_num(row.baseline)}, {row.rule}"
                 + ("" if row.floor is None or row.rule.startswith("min") else f" (floor {_num(row.floor)})") for row in self.failures()]
        return f"run {self.candidate} fails the gate against baseline {self.baseline}: {'; '.join(parts)}"

    def markdown(self) -> str:
        """A summary for a CI job or a pull request: the verdict, the table (deltas signed, 4 decimals) and the
        flipped records. Every text from a run (ids, model and dataset names) is escaped (:func:`md_text`)."""
        verdict = "passed" if self.passed else "failed"
        mark = "✅" if self.passed else "❌"
        lines = [f"## {mark} Gate {verdict}: {md_text(self.candidate)} vs baseline {md_text(self.baseline)}", ""]
        about = [f"candidate model {md_text(self.candidate_model)}" if self.candidate_model else "",
                 f"baseline model {md_text(self.baseline_model)}" if self.baseline_model else "",
                 f"dataset {md_text(self.dataset)}" if self.dataset else ""]
        if any(about):
            lines += [", ".join(a for a in about if a), ""]
        if not self.passed:
            lines += [f"Failing: {', '.join(md_text(row.metric) for row in self.failures())}", ""]
        lines += ["| metric | candidate | baseline | delta | rule | ok |", "| --- | ---: | ---: | ---: | --- | :---: |"]
        for row in self.rows:
            lines.append(f"| {md_text(row.metric)} | {_num(row.candidate)} | {_num(row.baseline)} | "
                         f"{_signed(row.delta)} | {md_text(row.rule) or '–'} | {'✅' if row.ok else '❌'} |")
        f = self.flipped
        lines += ["", f"Records flipped: right → wrong {f.get('right_to_wrong', 0)}, "
                      f"wrong → right {f.get('wrong_to_right', 0)}.", ""]
        return "\n".join(lines)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")
_HTML = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def md_text(value: object) -> str:
    """``value`` as inert Markdown text in a table cell or a heading: line breaks and control characters become
    spaces, ``<``/``>``/``&`` HTML entities (no tag, no comment), and the characters Markdown reads (``|``, backticks,
    ``*``, ``_``, brackets, ...) backslash-escaped, so a run id or a model name cannot end a cell or inject markup."""
    text = "".join(" " if ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0 or ch in "\u2028\u2029" else ch for ch in str(value))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"[<>&]", lambda m: _HTML[m.group()], text)


def _num(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _rule_row(rule: GateRule, candidate: float | None, baseline: float | None) -> GateRow:
    delta = None if candidate is None or baseline is None else candidate - baseline
    if rule.kind == "min":
        ok, floor = candidate is not None and candidate >= rule.bound, rule.bound
    else:
        ok = delta is not None and -delta <= rule.bound + SLACK
        floor = None if baseline is None else baseline - rule.bound
    return GateRow(rule.metric, candidate, baseline, delta, rule.text(), ok, floor)


def gate(candidate: Run, baseline: Run, rules: list[GateRule]) -> GateResult:
    """Every rule checked on ``candidate`` against ``baseline`` (rows with rules first, in rule order, then the
    headline metrics either run has, for context); a RunError when the runs evaluated different datasets."""
    from builder.runs.diff import diff_runs

    flipped = diff_runs(baseline, candidate)["flipped"]  # b - a: the candidate's fixes are wrong_to_right
    values = lambda key: (metric_value(candidate.metrics, key), metric_value(baseline.metrics, key))  # noqa: E731
    rows = [_rule_row(rule, *values(rule.metric)) for rule in rules]
    ruled = {rule.metric for rule in rules}
    for key in HEADLINE:  # the headline metrics, shown without a rule for context
        c, b = values(key)
        if key not in ruled and (c is not None or b is not None):
            rows.append(GateRow(key, c, b, None if c is None or b is None else c - b, "", True))
    ds = candidate.dataset
    return GateResult(candidate.id, baseline.id, rows, flipped,
                      dataset=f"{ds.get('name')}:{str(ds.get('version'))[:12]}",
                      candidate_model=str((candidate.run.get("model") or {}).get("name") or ""),
                      baseline_model=str((baseline.run.get("model") or {}).get("name") or ""))


# ----------------------------------------------------------------------------------------------- the baseline


def is_image_ref(ref: str) -> bool:
    """Whether ``--baseline`` names a model image rather than a run: a folder on disk is a run; a run id never has
    '/'; an image ref is a whole image reference (:func:`builder.refs.image_ref_problem`) whose first component is a
    registry host ('.' or ':' in it, or ``localhost``) and which has a tag, a port or a digest (':' or '@')."""
    from builder.refs import image_ref_problem

    try:
        if Path(ref).expanduser().exists():
            return False
    except (OSError, ValueError):
        return False
    first, slash, _ = ref.partition("/")
    if not slash or run_id_problem(ref) is None:
        return False
    host = "." in first or ":" in first or first == "localhost"
    return host and (":" in ref or "@" in ref) and image_ref_problem(ref) is None


def resolve_baseline(ref: str, candidate: Run, *, store: Store | None = None,
                     client_for: ClientFor | None = None) -> Run:
    """The baseline run ``ref`` names: a run ref (:func:`~builder.runs.history.resolve_run`), or a model image
    whose newest attached evaluation on the candidate's dataset (name and version) is pulled into the history."""
    store = store or Store()
    if not is_image_ref(ref):
        return resolve_run(ref, store)
    from builder.runs.attach import attached, reference
    from builder.runs.attach_pull import pull

    name, version = candidate.dataset.get("name"), candidate.dataset.get("version")
    rows = attached(ref, client_for=client_for)
    same = [r for r in rows if (r["dataset"], r["dataset_version"]) == (str(name), str(version))]
    if not same:
        others = sorted({f"{r['dataset']}:{str(r['dataset_version'])[:12]}" for r in rows})
        raise RunError(f"no evaluation attached to {ref} is on dataset {name}:{str(version)[:12]} (candidate "
                       f"{candidate.id}'s); attached: {', '.join(others) if others else 'none'}")
    image = reference(ref)
    got = pull(f"{image.registry}/{image.repository}@{same[0]['digest']}", store=store, client_for=client_for)
    return load_run(got.path, got.id)


def gate_refs(candidate: str, baseline: str, rules: list[GateRule], *, store: Store | None = None,
              client_for: ClientFor | None = None) -> GateResult:
    """:func:`gate` of two refs: the candidate by run ref, the baseline by :func:`resolve_baseline`."""
    store = store or Store()
    run = resolve_run(candidate, store)
    return gate(run, resolve_baseline(baseline, run, store=store, client_for=client_for), rules)


def write_markdown(result: GateResult, path: Path) -> Path:
    """:meth:`GateResult.markdown` into ``path`` (its folder made when missing), written to a temp name and renamed
    (no link at either name followed: :func:`builder.outdir.write_file`)."""
    from builder import outdir

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        outdir.write_file(path, result.markdown().encode("utf-8"), follow_folder=True)
    except OSError as err:
        raise SwcliError(f"{path}: cannot write the gate summary: {err.strerror or err}") from None
    return path
