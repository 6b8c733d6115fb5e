"""The console's pages: server-rendered HTML (Jinja, autoescape on, StrictUndefined) over the same functions the API
serves, plus the run-file downloads. Charts are SVG drawn on the server (:mod:`builder.console.charts`); the one
script, ``static/console.js``, fetches the API for what changes on the page (records, job progress, forms).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from builder.console import api_jobs, api_runs
from builder.console.state import Console, NotFound, status_of
from builder.errors import SwcliError

FILES = {"metrics.json": "application/json", "results.jsonl": "application/x-ndjson", "run.json": "application/json"}
CM_MODES = ("counts", "true", "pred", "all")


@lru_cache(maxsize=1)
def _env():
    import jinja2

    folder = resources.files("builder.console") / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=4: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["signed"] = lambda v: "-" if v is None else f"{v:+.4f}"
    return env


def warm(console: Console) -> None:
    """What the first page would otherwise pay for: every template compiled, the evaluations table's rows read."""
    env = _env()
    for name in env.list_templates(filter_func=lambda n: n.endswith(".html")):
        env.get_template(name)
    console.runs.rows()


def render(console: Console, template: str, title: str, **context) -> HTMLResponse:
    from markupsafe import Markup

    svg = {k: Markup(v) for k, v in context.pop("svg", {}).items()}  # drawn by charts.py, every text in it escaped
    html = _env().get_template(template).render(title=title, csrf=console.secrets.csrf, svg=svg, **context)
    return HTMLResponse(html)


def run_file(console: Console, run_id: str, name: str) -> Response:
    """A run's metrics.json, results.jsonl or run.json as a download, read without following a link at the file."""
    from builder import outdir

    if name not in FILES:
        raise NotFound(f"a run has no file '{name[:40]}' to download (metrics.json, results.jsonl, run.json)")
    run = console.run(run_id)
    try:
        fh = outdir.open_read(run.path / name, follow_folder=True)
    except (OSError, SwcliError) as err:
        raise NotFound(f"{run.id}/{name}: {err}") from None

    def chunks():
        with fh:
            while block := fh.read(1 << 20):
                yield block

    return StreamingResponse(chunks(), media_type=FILES[name],
                             headers={"content-disposition": f'attachment; filename="{run.id}-{name}"'})


def overview(console: Console) -> HTMLResponse:
    return render(console, "overview.html", "Overview", store=api_jobs.overview(console), root=str(console.store.root),
                  registries=api_jobs.registries(console)["registries"])


def runs(console: Console) -> HTMLResponse:
    data = api_runs.runs(console)
    registries = api_jobs.registries(console)["registries"]
    attached = [{**e, "target": r["target"]} for r in registries for e in r["evaluations"]]
    problems = [f"{r['target']}: {p}" for r in registries for p in r["problems"]]
    return render(console, "runs.html", "Evaluations", runs=data["runs"], problems=data["problems"], attached=attached,
                  registry_problems=problems)


def run(console: Console, run_id: str, mode: str | None) -> HTMLResponse:
    from builder.console import charts
    from builder.console.sources import attach_target

    data = api_runs.run(console, run_id)
    r = console.run(run_id)
    asked = data["confusion_matrix"]["normalize"] or "counts"
    shown = mode if mode in CM_MODES else asked
    svg = {m: charts.confusion_svg(r.metrics, r.label_names, m) for m in CM_MODES}
    svg["roc"] = charts.roc_svg(r.metrics, r.label_names)
    return render(console, "run.html", f"Run {run_id}", r=data, svg=svg, cm_shown=shown, cm_asked=asked,
                  cm_modes=CM_MODES, attach_to=attach_target(r, console.store),
                  labels=[{"key": str(k), "title": r.label_title(k)} for k in (data["all_labels"] or data["labels"])])


def compare(console: Console, ids: list[str], baseline: str | None) -> HTMLResponse:
    from builder.console import charts

    data = api_runs.compare(console, ids, baseline)
    names = data["label_names"]
    from builder.runs.history import label_title

    bars = {}
    for other in data["runs"]:
        rows = [(label_title(label, names), deltas.get(other["id"], {}).get("f1-score"))
                for label, deltas in data["labels"].items()]
        bars[other["id"]] = charts.delta_bars_svg(rows)
    return render(console, "compare.html", "Compare", d=data, svg={f"bars-{k}": v for k, v in bars.items()},
                  label_title=lambda k: label_title(k, names))


def new_job(console: Console) -> HTMLResponse:
    store = console.store
    return render(console, "job_new.html", "Create a job", models=store.list("model"), datasets=store.list("dataset"))


def job(console: Console, job_id: str) -> HTMLResponse:
    return render(console, "job.html", f"Job {job_id}", job=api_jobs.job(console, job_id, log_lines=50))


def jobs(console: Console) -> HTMLResponse:
    return render(console, "jobs.html", "Jobs", jobs=api_jobs.jobs(console)["jobs"])


def gate(console: Console) -> HTMLResponse:
    from builder.runs.gates import GATE_KEYS

    return render(console, "gate.html", "Gate", runs=api_runs.runs(console)["runs"], keys=list(GATE_KEYS))


def api_docs(console: Console) -> HTMLResponse:
    return render(console, "api.html", "API", paths=console.api_paths)


def _page(fn, *names, query=None):
    async def endpoint(request: Request):
        console = request.app.state.console
        args = [request.path_params[n] for n in names]
        if query:
            q = request.query_params
            args += [q.getlist(k) if k == "runs" else q.get(k) for k in query]
        try:
            return await run_in_threadpool(fn, console, *args)
        except SwcliError as err:
            page = render(console, "error.html", "Error", message=" ".join(str(err).split()))
            page.status_code = status_of(err)
            return page
    return endpoint


ROUTES = [
    Route("/", _page(overview)), Route("/runs", _page(runs)), Route("/runs/{id}", _page(run, "id", query=["cm"])),
    Route("/compare", _page(compare, query=["runs", "baseline"])), Route("/jobs", _page(jobs)),
    Route("/jobs/new", _page(new_job)), Route("/jobs/{id}", _page(job, "id")), Route("/gate", _page(gate)),
    Route("/api", _page(api_docs)), Route("/favicon.ico", lambda request: RedirectResponse("/static/icon.svg")),
]
