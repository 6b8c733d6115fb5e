"""`/api/jobs...`, `/api/k8s`, `/api/gate`, `/api/overview`, `/api/registries`: what the console starts and checks.

A job names a model and a dataset by ref (a store ref, or a registry reference), never by a path: a ref that looks
like a folder is refused here, although `swcli model eval` itself accepts folders.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

from builder.console.state import Console, NotFound
from builder.errors import UsageError
from builder.refs import image_ref_problem, name_problem

WHERE = ("local", "containers", "k8s")
MAX_SHARDS = 64
METRIC_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a gate's metric name (runs.gates checks it is known)


def _ref(value: object, field: str) -> str:
    """A store ref (``name``, ``name:version``) or a registry reference; never a path or an option."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field}: a ref is required (NAME, NAME:VERSION or REGISTRY/REPO:TAG)")
    value = value.strip()
    if len(value) > 512:
        raise UsageError(f"{field}: longer than 512 characters")
    if value.startswith(("-", ".", "~", "/")) or "\\" in value or "\0" in value or ".." in value:
        raise UsageError(f"{field}: '{value[:80]}' is not a ref (paths and options are not taken here)")
    name, _, version = value.partition(":")
    if "/" not in value and not name_problem(name) and (not version or version.replace("-", "").isalnum()):
        return value
    if "/" in value and not image_ref_problem(value):
        return value
    raise UsageError(f"{field}: '{value[:80]}' is neither a store ref (NAME[:VERSION]) nor an image reference")


def _shards(value: object) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise UsageError(f"shards: a whole number from 1 to {MAX_SHARDS}, got {json.dumps(value)[:20]}")
    return value


def _namespace(value: object) -> str | None:
    """A Kubernetes namespace (a DNS-1123 label), named as the request's field, the value quoted and bounded."""
    from builder.jobs.k8s import dns_label_problem

    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 63 or dns_label_problem(value):
        raise UsageError(f"namespace: {json.dumps(value)[:80]} is not a Kubernetes namespace (a DNS-1123 label: "
                         "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)")
    return value


def body_fields(body: object, allowed: set[str]) -> dict:
    """A request body: a JSON object of known fields only (the API's POSTs all take one)."""
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise UsageError(f"unknown field '{str(unknown[0])[:40]}'; known: {', '.join(sorted(allowed))}")
    return body


def submit(console: Console, body: object) -> dict:
    """``{"model", "dataset", "where": local|containers, "shards"}`` -> ``{"id"}``."""
    body = body_fields(body, {"model", "dataset", "where", "shards"})
    model, dataset = _ref(body.get("model"), "model"), _ref(body.get("dataset"), "dataset")
    where = body.get("where") or "local"
    if where == "k8s":
        raise UsageError("where: k8s jobs are not run from here; POST /api/k8s renders their manifests")
    if where not in WHERE:
        raise UsageError(f"where: local, containers or k8s, got '{str(where)[:40]}'")
    shards = _shards(body.get("shards"))
    if where == "local" and shards != 1:
        raise UsageError("shards: a local job runs in one process; shards need where=containers")
    job = console.jobs.submit(model, dataset, where=where, shards=shards)
    return {"id": job.id, "status": job.status, "command": job.command}


def job(console: Console, job_id: str, *, log_lines: int = 30) -> dict:
    found = console.jobs.get(job_id)
    if found is None:
        raise NotFound(f"no job '{job_id[:80]}'")
    return found.view(log_lines=log_lines)


def jobs(console: Console) -> dict:
    return {"jobs": [j.view(log_lines=0) for j in console.jobs.list()]}


def cancel(console: Console, job_id: str) -> dict:
    found = console.jobs.cancel(job_id)
    if found is None:
        raise NotFound(f"no job '{job_id[:80]}'")
    return found.view(log_lines=0)


def k8s(console: Console, body: object) -> dict:
    """The manifests `swcli job k8s` writes for the same refs, with the `kubectl apply` line and warnings."""
    from builder.build.entry_image import image_for
    from builder.jobs import k8s as k8s_jobs

    body = body_fields(body, {"model", "dataset", "shards", "namespace"})
    model, dataset = _ref(body.get("model"), "model"), _ref(body.get("dataset"), "dataset")
    namespace = _namespace(body.get("namespace"))
    opts = k8s_jobs.K8sOptions(model_image=image_for("model", model, console.store),
                               dataset_image=image_for("dataset", dataset, console.store),
                               shards=_shards(body.get("shards")), namespace=namespace)
    return {"yaml": k8s_jobs.render(opts), "file": "swcli-eval.yaml", "apply": "kubectl apply -f swcli-eval.yaml",
            "images": {"model": opts.model_image, "dataset": opts.dataset_image},
            "warnings": list(k8s_jobs.image_warnings(opts))}


def _rules(body: dict, field: str) -> list[str]:
    value = body.get(field) or {}
    if not isinstance(value, dict) or len(value) > 32:
        raise UsageError(f"{field}: an object of METRIC: NUMBER (at most 32)")
    out = []
    for key, bound in value.items():
        if not METRIC_KEY.fullmatch(key):
            raise UsageError(f"{field}: {json.dumps(key)[:60]} is not a metric name")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise UsageError(f"{field}.{key}: a finite number, got {json.dumps(bound)[:20]}")
        out.append(f"{key}={bound}")
    return out


def gate(console: Console, body: object) -> dict:
    """``{"candidate": RUN, "baseline": RUN|IMAGE_REF, "min": {...}, "max_drop": {...}}``: `swcli eval gate`'s engine."""
    from builder.runs.gate_report import gate as run_gate, is_image_ref, parse_rules, resolve_baseline

    body = body_fields(body, {"candidate", "baseline", "min", "max_drop"})
    candidate = console.run(str(body.get("candidate") or ""))
    baseline_ref = body.get("baseline")
    if not isinstance(baseline_ref, str) or not baseline_ref:
        raise UsageError("baseline: a run id or a model image reference")
    if "/" in baseline_ref and is_image_ref(_ref(baseline_ref, "baseline")):  # else a run id: never a path
        baseline = resolve_baseline(baseline_ref, candidate, store=console.store, client_for=console.clients())
    else:
        baseline = console.run(baseline_ref)
    rules = parse_rules(_rules(body, "min"), _rules(body, "max_drop"), names={"min": "min", "max-drop": "max_drop"})
    result = run_gate(candidate, baseline, rules)
    return {"passed": result.passed, "candidate": result.candidate, "baseline": result.baseline,
            "rows": [dataclasses.asdict(row) for row in result.rows], "flipped": result.flipped,
            "failure": None if result.passed else result.failure_line(), "markdown": result.markdown()}


def overview(console: Console) -> dict:
    from builder.console.sources import overview as store_overview

    return store_overview(console.store)


def registries(console: Console) -> dict:
    out = []
    for view in console.registries:
        out.append({"target": view.target, **view.listing()})
    return {"registries": out}


def pull_attached(console: Console, body: object) -> dict:
    """``{"ref": "REGISTRY/REPO@sha256:..."}``: an attached evaluation into the history (digests verified)."""
    from builder.runs.attach_pull import pull

    body = body_fields(body, {"ref"})
    ref = _ref(body.get("ref"), "ref")
    if "@sha256:" not in ref:
        raise UsageError("ref: an evaluation by digest, REGISTRY/REPO@sha256:...")
    got = pull(ref, store=console.store, client_for=console.clients())
    return {"run": got.id, "new": got.new, "digest": got.digest}
