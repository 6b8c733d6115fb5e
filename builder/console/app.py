"""The console's ASGI app: routes to the JSON API (:mod:`api_runs`, :mod:`api_jobs`), the pages (:mod:`pages`), the
static files, all behind :class:`~builder.console.security.Guard`.

Each route's docstring is its OpenAPI description, as YAML (``GET /api/openapi.json``: Starlette's schema generator).
Errors are one JSON line, ``{"error": "..."}``, with the status :func:`~builder.console.state.status_of` gives.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.schemas import SchemaGenerator
from starlette.staticfiles import StaticFiles

from builder.console import api_jobs, api_runs, pages
from builder.console.security import Guard
from builder.console.state import Console, NotFound, status_of
from builder.errors import SwcliError, UsageError

MAX_BODY = 64 << 10  # a JSON request body
EVENT_PERIOD = 0.25  # seconds between a job's progress events (the page updates 4 times a second)

SCHEMA = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "swcli console API", "version": "1"}})


def error(err: Exception) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(err).split())}, status_code=status_of(err))


async def call(fn, *args, **kwargs) -> Response:
    try:
        result = await run_in_threadpool(fn, *args, **kwargs)
    except SwcliError as err:
        return error(err)
    return result if isinstance(result, Response) else JSONResponse(result)


async def body_of(request: Request) -> object:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UsageError("send the body as application/json")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise UsageError(f"the request body is larger than {MAX_BODY} bytes")
    try:
        return json.loads(bytes(raw))
    except (ValueError, RecursionError):
        raise UsageError("the request body is not JSON") from None


def _c(request: Request) -> Console:
    return request.app.state.console


async def list_runs(request: Request):
    """
    summary: 'Every evaluation in the history, newest first, with its headline metrics.'
    responses: {200: {description: '{"runs": [{"id", "model", "dataset", "status", "started", "metrics"}], "problems": []}'}}
    """
    return await call(api_runs.runs, _c(request))


async def get_run(request: Request):
    """
    summary: 'One run - run.json, summary, per-label metrics, the confusion counts.'
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    """
    return await call(api_runs.run, _c(request), request.path_params["id"])


async def get_records(request: Request):
    """
    summary: 'One page of a run''s records.'
    parameters:
      - {name: id, in: path, required: true, schema: {type: string}}
      - {name: true, in: query, schema: {type: string}, description: true label key}
      - {name: pred, in: query, schema: {type: string}, description: predicted label key}
      - {name: correct, in: query, schema: {type: string, enum: [right, wrong]}}
      - {name: sort, in: query, schema: {type: string, enum: [index, confidence, -confidence]}}
      - {name: offset, in: query, schema: {type: integer}}
      - {name: limit, in: query, schema: {type: integer, maximum: 500}}
    """
    return await call(api_runs.records, _c(request), request.path_params["id"], dict(request.query_params))


async def get_thumb(request: Request):
    """
    summary: 'A record''s picture (PNG, or the record''s own JPEG/PNG bytes).'
    """
    def thumb():
        data, media = api_runs.thumbnail(_c(request), request.path_params["id"], request.path_params["index"])
        return Response(data, media_type=media)
    return await call(thumb)


async def get_file(request: Request):
    """
    summary: 'Download metrics.json or results.jsonl of a run.'
    """
    return await call(pages.run_file, _c(request), request.path_params["id"], request.path_params["name"])


async def compare(request: Request):
    """
    summary: 'Two or more runs on one dataset against a pinned baseline.'
    parameters: [{name: runs, in: query, required: true, schema: {type: array, items: {type: string}}}, {name: baseline, in: query, schema: {type: string}}]
    """
    q = request.query_params
    return await call(api_runs.compare, _c(request), q.getlist("runs"), q.get("baseline"))


async def flipped(request: Request):
    """
    summary: 'The records right in run a and wrong in run b (kind=right_to_wrong), or the other way.'
    """
    q = request.query_params
    return await call(api_runs.flipped, _c(request), q.get("a", ""), q.get("b", ""), q.get("kind", "right_to_wrong"), dict(q))


async def post_json(fn, request: Request, *args):
    try:
        body = await body_of(request)
    except SwcliError as err:
        return error(err)
    return await call(fn, _c(request), *args, body)


async def attach(request: Request):
    """
    summary: 'Attach a run to its model image in a registry, as `swcli eval attach` does.'
    requestBody: {content: {application/json: {schema: {type: object, properties: {image: {type: string}}}}}}
    """
    return await post_json(api_runs.attach, request, request.path_params["id"])


async def create_job(request: Request):
    """
    summary: 'Start a job - `{"model": REF, "dataset": REF, "where": "local"|"containers", "shards": N}`; answers `{"id"}`.'
    requestBody: {content: {application/json: {schema: {type: object, required: [model, dataset], properties: {model: {type: string}, dataset: {type: string}, where: {type: string, enum: [local, containers]}, shards: {type: integer}}}}}}
    """
    return await post_json(api_jobs.submit, request)


async def list_jobs(request: Request):
    """
    summary: 'The jobs this console started, newest first.'
    """
    return await call(api_jobs.jobs, _c(request))


async def get_job(request: Request):
    """
    summary: 'A job - status (queued, running, succeeded, failed, cancelled), progress, its run when done, the last log lines.'
    """
    return await call(api_jobs.job, _c(request), request.path_params["id"])


async def cancel_job(request: Request):
    """
    summary: 'Cancel a queued or running job (the process gets Ctrl-C, as in a terminal).'
    """
    return await call(api_jobs.cancel, _c(request), request.path_params["id"])


async def job_events(request: Request):
    """
    summary: 'Server-Sent Events - the job every 0.25 s until it ends.'
    """
    job_id = request.path_params["id"]
    job = _c(request).jobs.get(job_id)
    if job is None:
        return error(NotFound(f"no job '{job_id[:80]}'"))

    async def events():
        while True:
            view = job.view(log_lines=30)
            yield f"data: {json.dumps(view)}\n\n"
            if view["status"] not in ("queued", "running") or await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_PERIOD)
    return StreamingResponse(events(), media_type="text/event-stream")


async def k8s(request: Request):
    """
    summary: 'The Kubernetes manifests of `swcli job k8s` for a model and a dataset, with the kubectl line and warnings.'
    """
    return await post_json(api_jobs.k8s, request)


async def gate(request: Request):
    """
    summary: 'The regression gate of `swcli eval gate` - `{"candidate", "baseline", "min": {METRIC: N}, "max_drop": {METRIC: N}}`.'
    """
    return await post_json(api_jobs.gate, request)


async def overview(request: Request):
    """
    summary: 'Models, datasets and runtimes of the store, with versions, sizes, image digests and pushes.'
    """
    return await call(api_jobs.overview, _c(request))


async def registries(request: Request):
    """
    summary: 'Each --registry - its repositories, tags and digests, and the evaluations attached to them.'
    """
    return await call(api_jobs.registries, _c(request))


async def pull_attached(request: Request):
    """
    summary: 'Fetch an attached evaluation into the history (`{"ref": "REGISTRY/REPO@sha256:..."}`), as `swcli eval pull`.'
    """
    return await post_json(api_jobs.pull_attached, request)


async def openapi(request: Request):
    return JSONResponse(SCHEMA.get_schema(API))


API = [
    Route("/api/runs", list_runs), Route("/api/runs/{id}", get_run), Route("/api/runs/{id}/records", get_records),
    Route("/api/runs/{id}/records/{index:int}/thumb", get_thumb),
    Route("/api/runs/{id}/files/{name}", get_file), Route("/api/runs/{id}/attach", attach, methods=["POST"]),
    Route("/api/compare", compare), Route("/api/compare/flipped", flipped),
    Route("/api/jobs", list_jobs), Route("/api/jobs", create_job, methods=["POST"]),
    Route("/api/jobs/{id}", get_job), Route("/api/jobs/{id}/cancel", cancel_job, methods=["POST"]),
    Route("/api/jobs/{id}/events", job_events), Route("/api/k8s", k8s, methods=["POST"]),
    Route("/api/gate", gate, methods=["POST"]), Route("/api/overview", overview),
    Route("/api/registries", registries), Route("/api/attached/pull", pull_attached, methods=["POST"]),
    Route("/api/openapi.json", openapi, include_in_schema=False),
]


def build_app(console: Console, port: int) -> Guard:
    """The app for ``console``, guarded for a server on ``port``."""
    static = StaticFiles(directory=str(resources.files("builder.console") / "static"))
    app = Starlette(routes=[*API, *pages.ROUTES, Mount("/static", static, name="static")])
    app.state.console = console
    console.api_paths = SCHEMA.get_schema(API).get("paths", {})  # the /api page lists them
    return Guard(app, console.secrets, port)
