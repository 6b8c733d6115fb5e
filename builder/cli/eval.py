"""`swcli eval list | show | remove | report | diff | gate`: look at evaluations, compare them, gate CI on them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

from builder.cli._output import OutputFormat, cell, console, print_json, print_table, warn

app = typer.Typer(help="Look at evaluation runs: tables, HTML reports, diffs, CI gates.", no_args_is_help=True)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


CA_CERT = typer.Option(None, "--ca-cert", help="A CA certificate (PEM) to trust for the registry, besides the system's "
                       "and /etc/docker/certs.d/<host:port>/.")


@app.command("list")
def list_(
    output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", help="table or json."),
    image: Optional[str] = typer.Option(None, "--image", metavar="REGISTRY/REPO[:TAG|@DIGEST]",
                                        help="List the evaluations attached to this model image instead."),
    ca_cert: Optional[Path] = CA_CERT,
) -> None:
    """Every recorded run, newest first (unreadable ones named on stderr); with --image, those attached to an image."""
    if image is not None:
        _list_attached(image, output, ca_cert)
        return
    from builder.runs.history import scan_runs

    runs, problems = scan_runs()
    for problem in problems:
        warn(problem)
    rows = [{"id": r.id, "started": r.run.get("started"), "model": (r.run.get("model") or {}).get("name"),
             "dataset": r.dataset.get("name"), "records": (r.run.get("records") or {}).get("ok"),
             "accuracy": r.summary.get("accuracy"), "status": r.run.get("status"), "path": str(r.path.resolve())} for r in runs]
    if output is OutputFormat.json:
        print_json(rows)
        return
    cells = [{"run": r["id"], "started": None if r["started"] is None else str(r["started"])[:16].replace("T", " "),
              "model": r["model"], "dataset": r["dataset"], "records": r["records"], "accuracy": _fmt(r["accuracy"]),
              "status": r["status"]} for r in rows]
    shown_columns = _fitting(list(cells[0]) if cells else ["run", *LIST_DROPS[::-1]], cells)
    table = Table(title_justify="left")
    # the run id is what every other command takes: never cut or wrapped; a terminal too narrow for every column
    # loses the least needed ones whole (LIST_DROPS) rather than cutting values to "…" (-o json has them all)
    for column in shown_columns:
        table.add_column(column, no_wrap=True, min_width=max((cell_len(str(cell(c[column]))) for c in cells), default=0))
    for c in cells:
        table.add_row(*(cell(c[column]) for column in shown_columns))
    console.print(table)
    if len(shown_columns) < len(LIST_DROPS) + 1:
        console.print(f"({', '.join(c for c in LIST_DROPS if c not in shown_columns)} left out to fit "
                      f"{console.width} columns; -o json has them)", markup=False)


LIST_DROPS = ("started", "records", "status", "dataset", "model", "accuracy")  # what a narrow `eval list` leaves out first


def _fitting(columns: list[str], cells: list[dict]) -> list[str]:
    """``columns`` less those of :data:`LIST_DROPS`, in that order, a table of ``cells`` cannot fit in the console's
    width with every value whole (a column is its widest value or header, plus padding and a border)."""
    widths = {c: max([cell_len(c)] + [cell_len(str(cell(row[c]))) for row in cells]) + 3 for c in columns}
    kept = list(columns)
    for column in LIST_DROPS:
        if sum(widths[c] for c in kept) + 1 <= console.width:
            break
        kept.remove(column)
    return kept


@app.command("show")
def show(
    run_ref: str = typer.Argument("latest", metavar="RUN", help="Run id, unique prefix, 'latest', or a run folder."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", help="table or json."),
    fail_under: Optional[List[str]] = typer.Option(None, "--fail-under", help="METRIC=NUMBER; exit 2 when below (repeatable: accuracy, macro-f1, roc_auc, ...)."),
) -> None:
    """Summary, per-label table and the confusion matrix of one run; with --fail-under, a CI gate."""
    from builder.runs.gates import check_gates
    from builder.runs.history import resolve_run

    run = resolve_run(run_ref)
    if output is OutputFormat.json:
        print_json({"id": run.id, "path": str(run.path.resolve()), "run": run.run, "summary": run.summary,
                    "labels": run.metrics.get("labels"), "confusion_matrix": (run.metrics.get("confusion_matrix") or {}).get("counts")})
    else:
        _show_tables(run)
    if fail_under:
        passed = check_gates(run, fail_under)
        if output is OutputFormat.table:
            console.print(f"gates passed: {'; '.join(passed)}")


def _show_tables(run) -> None:
    meta = run.run
    console.print(f"run [bold]{escape(run.id)}[/bold]: model {escape(str((meta.get('model') or {}).get('name')))} on dataset "
                  f"{escape(str(run.dataset.get('name')))}, {(meta.get('records') or {}).get('ok')} records, {escape(str(meta.get('status')))}")
    print_table("summary", ["metric", "value"],
                [(k, _fmt(v)) for k, v in run.summary.items() if not isinstance(v, dict)]
                + [(f"{k} f1", _fmt(v.get("f1-score"))) for k, v in run.summary.items() if isinstance(v, dict)])
    labels = run.metrics.get("labels") or {}
    print_table("per label", ["label", "precision", "recall", "f1-score", "support", "AUC"],
                [(run.label_title(k), _fmt(v.get("precision")), _fmt(v.get("recall")), _fmt(v.get("f1-score")), _fmt(None if v.get("support") is None else int(v["support"])),
                  _fmt(v.get("auc"))) for k, v in labels.items()])
    _confusion_table(run)


def _confusion_table(run) -> None:
    """The confusion matrix as the handler asked for it (``confusion_matrix_normalize``: the normalised matrix,
    the mode in the title), counts when it asked for none; cells coloured by their share of the row's counts."""
    from builder.runs.report import confusion_view

    cm = run.metrics.get("confusion_matrix") or {}
    view = confusion_view(cm)
    if view is None:
        return
    title, matrix, digits = view
    counts = cm["counts"]
    names = [cell(run.label_title(x)) for x in run.metrics.get("all_labels") or range(len(counts))]
    table = Table(title=f"confusion matrix, {title} (rows: true, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for i, row in enumerate(matrix):
        total = sum(counts[i]) or 1
        cells = []
        for j, value in enumerate(row):
            share = counts[i][j] / total
            style = "bold green" if i == j else ("red" if share >= 0.1 else "yellow" if share >= 0.03 else "dim")
            cells.append(f"[{style}]{value:.{digits}f}[/{style}]")
        table.add_row(names[i], *cells)
    console.print(table)


@app.command("remove")
def remove(run_ref: str = typer.Argument(..., metavar="RUN")) -> None:
    """Delete a run (a recorded outside folder is only forgotten, its files stay)."""
    from builder.runs.history import remove_run

    removed = remove_run(run_ref)
    if removed.deleted:
        console.print(f"removed run {removed.id}")
    else:
        console.print(f"forgot run {removed.id}; its files stay in {escape(str(removed.path))}")


@app.command("report")
def report(
    run_ref: str = typer.Argument("latest", metavar="RUN"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
) -> None:
    """One self-contained HTML page: summary, confusion matrices, ROC curves, per-label table, confidently wrong records."""
    from builder.runs.report import render_report
    from builder.runs.history import resolve_run

    path = render_report(resolve_run(run_ref), out)
    console.print(f"wrote {path}")


@app.command("diff")
def diff(
    run_a: str = typer.Argument(..., metavar="RUN_A"),
    run_b: str = typer.Argument(..., metavar="RUN_B"),
    output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", help="table or json."),
) -> None:
    """What changed from RUN_A to RUN_B on the same dataset: metrics, labels, records that flipped."""
    from builder.runs.diff import diff_runs
    from builder.runs.history import label_title, resolve_run

    d = diff_runs(resolve_run(run_a), resolve_run(run_b))
    if output is OutputFormat.json:
        print_json(d)
        return
    signed = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
    print_table(f"{d['a']['id']} -> {d['b']['id']}", ["metric", "a", "b", "delta"],
                [(k, _fmt(v["a"]), _fmt(v["b"]), signed(v["delta"])) for k, v in d["summary"].items()])
    print_table("per label (delta b - a)", ["label", "precision", "recall", "f1-score", "AUC"],
                [(label_title(label, d["label_names"]), *(signed(m.get(k, {}).get("delta")) for k in ("precision", "recall", "f1-score", "auc")))
                 for label, m in d["labels"].items()])
    f = d["flipped"]
    console.print(f"records wrong -> right: {f['wrong_to_right']} (e.g. {f['wrong_to_right_indices'][:10]}); "
                  f"right -> wrong: {f['right_to_wrong']} (e.g. {f['right_to_wrong_indices'][:10]})")


@app.command("gate")
def gate(
    candidate: str = typer.Argument(..., metavar="CANDIDATE", help="Run id, unique prefix, 'latest', or a run folder."),
    baseline: str = typer.Option(..., "--baseline", metavar="RUN|IMAGE_REF",
                                 help="A run, or a model image (REGISTRY/REPO:TAG or @sha256:...) whose newest "
                                      "attached evaluation on the candidate's dataset is pulled and used."),
    mins: Optional[List[str]] = typer.Option(None, "--min", metavar="METRIC=NUMBER",
                                             help="Fail when the candidate is below NUMBER (repeatable)."),
    max_drops: Optional[List[str]] = typer.Option(None, "--max-drop", metavar="METRIC=DROP",
                                                  help="Fail when the candidate is below the baseline by more than DROP (repeatable)."),
    md: Optional[Path] = typer.Option(None, "--md", metavar="FILE",
                                      help="Write a Markdown summary (CI job summary, pull request), on failure too."),
    ca_cert: Optional[Path] = CA_CERT,
) -> None:
    """A regression gate: CANDIDATE against a baseline run or image, by bounds and allowed drops; exit 2 on failure."""
    from builder.runs.attach import default_client
    from builder.runs.gate_report import gate_refs, parse_rules, write_markdown
    from builder.runs.gates import GateFailed

    result = gate_refs(candidate, baseline, parse_rules(mins or [], max_drops or []), client_for=default_client(ca_cert))
    signed = lambda v: "-" if v is None else f"{v:+.4f}"  # noqa: E731
    table = Table(title=cell(f"gate: {result.candidate} vs baseline {result.baseline}"), title_justify="left")
    for column in ("metric", "candidate", "baseline", "delta", "rule", "ok"):
        table.add_column(column, justify="right" if column in ("candidate", "baseline", "delta") else "left")
    for row in result.rows:
        table.add_row(cell(row.metric), cell(_fmt(row.candidate)), cell(_fmt(row.baseline)), cell(signed(row.delta)),
                      cell(row.rule), "[green]ok[/green]" if row.ok else "[bold red]FAIL[/bold red]")
    console.print(table)
    f = result.flipped
    console.print(f"records right -> wrong: {f['right_to_wrong']}; wrong -> right: {f['wrong_to_right']}")
    if md is not None:
        console.print(f"wrote {write_markdown(result, md)}", markup=False)
    if not result.passed:
        raise GateFailed(result.failure_line())
    console.print("gate passed")


@app.command("merge")
def merge(
    parts: List[Path] = typer.Argument(..., help="The output folders of `eval --shard I/N`, one per shard."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the merged run (default: a new run in the store)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to run cmp with (default: the one the parts name)."),
) -> None:
    """Run cmp over the union of shard parts; the metrics equal a single run's."""
    from builder.cli._summary import print_summary
    from builder.evaluate.model_eval import merge as merge_service

    out, metrics, run = merge_service(list(parts), output, model=model)
    print_summary(metrics, run)
    console.print(f"outputs: {out}")


def _list_attached(image: str, output: OutputFormat, ca_cert: Path | None) -> None:
    from builder.runs.attach import HEADLINE, attached, default_client

    rows = attached(image, client_for=default_client(ca_cert))
    if output is OutputFormat.json:
        print_json(rows)
        return
    metrics = [k for k in HEADLINE if k != "weighted-f1" and any(k in r["metrics"] for r in rows)]  # all in json
    table = Table(title=cell(f"evaluations attached to {image}"), title_justify="left")
    # the digest and the run id are what `eval pull` takes: never cut, whatever else has to wrap
    for column in ("digest", "run"):
        table.add_column(column, no_wrap=True, min_width=max((len(cell(r[column])) for r in rows), default=0))
    for column in ("dataset", *metrics, "created"):
        table.add_column(column)
    for r in rows:
        table.add_row(*(cell(v) for v in (r["digest"], r["run"], r["dataset"],
                                                  *(_fmt(r["metrics"].get(k)) for k in metrics), str(r["created"])[:19])))
    console.print(table)


@app.command("attach")
def attach(
    run_ref: str = typer.Argument(..., metavar="RUN", help="Run id, unique prefix, 'latest', or a run folder."),
    image: str = typer.Argument(..., metavar="REGISTRY/REPO[:TAG|@DIGEST]", help="The model image the run evaluated."),
    ca_cert: Optional[Path] = CA_CERT,
) -> None:
    """Push a run (metrics, run.json, results, HTML report) as an OCI artifact attached to the image it evaluated."""
    from builder.runs.attach import attach as attach_service, default_client

    done = attach_service(run_ref, image, client_for=default_client(ca_cert))
    console.print(f"attached {done.repository}@{done.digest} (subject {done.subject})", markup=False)


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., metavar="REGISTRY/REPO@DIGEST | REGISTRY/REPO[:TAG]",
                             help="An attached evaluation by digest, or the model image with --run."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Pick the evaluation of this run among the image's."),
    ca_cert: Optional[Path] = CA_CERT,
) -> None:
    """Fetch an attached evaluation into the run history (digests verified), for eval show/report/diff and gates."""
    from builder.runs.attach import default_client
    from builder.runs.attach_pull import pull as pull_service

    got = pull_service(ref, run_id=run_id, client_for=default_client(ca_cert))
    what = "pulled" if got.new else "already in the history:"
    console.print(f"{what} run {got.id} ({got.digest}) in {got.path}", markup=False)
