"""Evaluations attached to the model image they measured: `swcli eval attach`, `eval list --image`, `eval pull`.

An attached evaluation is an OCI artifact manifest (distribution-spec 1.1) in the model image's repository:
``artifactType`` :data:`ARTIFACT_TYPE`, the empty config, one layer per run file (metrics.json, run.json,
results.jsonl, report.html; each named by its ``org.opencontainers.image.title``), ``subject`` the model image's
manifest, and annotations carrying what a listing shows (run id, dataset, headline metrics, created), so listing
needs no blob. Every field comes from the run's own files, never from the clock: the same run attached twice is the
same artifact digest. The registry's referrers API lists them, or the ``sha256-<hex>`` fallback tag index.

A pulled evaluation is checked like a local run (the same shape checks as :mod:`builder.services.runs`), staged in
a hidden folder under ``runs/`` and renamed into place whole, so ``eval show/report/diff`` and ``--fail-under``
work on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.errors import EvalError, RegistryError
from builder.images.oci import MEDIA_MANIFEST, canonical_json
from builder.services.runs import Run, RunError, metric_value, resolve_run, run_id_problem
from builder.store import Store

ARTIFACT_TYPE = "application/vnd.swcli.evaluation.v1+json"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_DESCRIPTOR = {"mediaType": MEDIA_EMPTY, "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(), "size": 2,
                    "data": "e30="}
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
# the run files an artifact carries, by layer title (exactly these names: a title is never a path)
FILES = {"metrics.json": "application/vnd.swcli.evaluation.metrics.v1+json",
         "run.json": "application/vnd.swcli.evaluation.run.v1+json",
         "results.jsonl": "application/x-ndjson",
         "report.html": "text/html"}
REQUIRED = ("metrics.json", "run.json", "results.jsonl")
HEADLINE = ("accuracy", "macro-f1", "weighted-f1", "roc_auc")  # GATE_KEYS names, as `--fail-under` spells them
A = "io.swcli.evaluation."  # annotation prefix
MAX_CONFIG = 4 << 20  # an image config larger than this is not one of ours
MODEL_MEDIA = {MEDIA_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}

ClientFor = Callable[[str], object]  # registry host -> RegistryClient


def default_client(ca_cert: Path | None = None) -> ClientFor:
    def make(registry: str):
        from builder.registry.client import RegistryClient

        return RegistryClient(registry, ca_cert=ca_cert)

    return make


def _reference(text: str):
    from builder.registry.reference import Reference

    return Reference.parse(text)


# --------------------------------------------------------------------------------------------------- attach


@dataclass(frozen=True)
class Attached:
    digest: str  # the artifact manifest's
    subject: str  # the model image manifest's
    repository: str  # REGISTRY/REPO


def model_of(client, ref) -> tuple[dict, dict]:
    """The model image ``ref`` names: (its manifest descriptor, its config's labels); refuses anything else."""
    manifest = client.get_manifest(ref.repository, ref.ref)
    where = f"{ref.registry}/{ref.repository}@{manifest.digest}"
    if manifest.media_type not in MODEL_MEDIA:
        raise EvalError(f"{where} is a {manifest.media_type}, not an image manifest; name the model image itself "
                        "(one platform's manifest, by tag or digest)")
    try:
        config = json.loads(manifest.data)["config"]
        digest, size = str(config["digest"]), int(config["size"])
    except (ValueError, KeyError, TypeError) as err:
        raise RegistryError(f"{where}: the manifest has no readable config descriptor ({err})") from None
    if size > MAX_CONFIG:
        raise EvalError(f"{where}: its config is {size} bytes; not a swcli model image")
    buf = io.BytesIO()
    client.fetch_blob(ref.repository, digest, buf, size=size)
    try:
        labels = json.loads(buf.getvalue()).get("config", {}).get("Labels") or {}
    except (ValueError, AttributeError) as err:
        raise RegistryError(f"{where}: config {digest} is not an image config ({err})") from None
    if labels.get("io.swcli.kind") != "model":
        raise EvalError(f"{where} is not a swcli model image (label io.swcli.kind is {labels.get('io.swcli.kind')!r})")
    descriptor = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.data)}
    return {**descriptor, "config": digest}, labels


def check_same_model(run: Run, model: dict, labels: dict, where: str) -> None:
    """Refuse, naming both digests, unless the run evaluated exactly this image (by image id when the run recorded
    one, else by the model version, itself a digest of the code and weights the image carries)."""
    recorded = run.run.get("model") or {}
    if recorded.get("image"):
        if recorded["image"] != model["config"]:
            raise EvalError(f"run {run.id} evaluated image {recorded['image']}, not {where} (image {model['config']}); "
                            "attach a run of that image")
        return
    version, name = recorded.get("version"), recorded.get("name")
    if not version:
        raise EvalError(f"run {run.id} evaluated a source folder, not a built model; only a run of a store model or a "
                        "model image can be attached")
    if (name, version) != (labels.get("io.swcli.name"), labels.get("io.swcli.version")):
        raise EvalError(f"run {run.id} evaluated model {name}:{version}, not {where} (image {model['config']}, "
                        f"model {labels.get('io.swcli.name')}:{labels.get('io.swcli.version')}); attach a run of that model")


def annotations(run: Run, subject: dict) -> dict[str, str]:
    """What `eval list --image` shows, as strings; ``created`` is the run's own time, so attaching is repeatable."""
    out = {CREATED: str(run.run.get("finished") or run.run.get("started")), f"{A}run": run.id,
           f"{A}dataset": str(run.dataset.get("name")), f"{A}dataset.version": str(run.dataset.get("version")),
           f"{A}model": str((run.run.get("model") or {}).get("name")), f"{A}image": subject["config"],
           f"{A}records": str((run.run.get("records") or {}).get("ok"))}
    for key in HEADLINE:
        value = metric_value(run.metrics, key)
        if isinstance(value, (int, float)):
            out[f"{A}metric.{key}"] = repr(float(value))
    return out


def _run_files(run: Run, scratch: Path) -> dict[str, Path]:
    """The files to attach by title; the HTML report is rendered (into ``scratch``) when the run holds none."""
    if run.run.get("status") != "succeeded":
        raise EvalError(f"run {run.id} is {run.run.get('status')}; only a succeeded run can be attached")
    files = {name: run.path / name for name in FILES}
    for name in REQUIRED:
        if not files[name].is_file():
            raise RunError(f"{files[name]} is missing; run {run.id} is incomplete")
    if not files["report.html"].is_file():
        from builder.report import render_report

        files["report.html"] = render_report(run, scratch / "report.html")
    return files


def _upload(client, repository: str, path: Path) -> dict:
    from builder.store import sha256_file

    digest, size = "sha256:" + sha256_file(path), path.stat().st_size
    if client.blob_size(repository, digest) != size:
        client.upload_blob(repository, digest, size, lambda: open(path, "rb"))
    return {"digest": digest, "size": size}


def attach(run_ref: str, image: str, *, store: Store | None = None, client_for: ClientFor | None = None) -> Attached:
    """Push run ``run_ref`` as an evaluation artifact whose subject is the model image ``image``."""
    run = resolve_run(run_ref, store or Store())
    ref = _reference(image)
    client = (client_for or default_client())(ref.registry)
    model, labels = model_of(client, ref)
    check_same_model(run, model, labels, f"{ref.registry}/{ref.repository}@{model['digest']}")
    with tempfile.TemporaryDirectory(prefix="swcli-attach-") as scratch:
        files = _run_files(run, Path(scratch))
        if client.blob_size(ref.repository, EMPTY_DESCRIPTOR["digest"]) != len(EMPTY):
            client.upload_blob(ref.repository, EMPTY_DESCRIPTOR["digest"], len(EMPTY), lambda: io.BytesIO(EMPTY))
        layers = [{"mediaType": FILES[name], **_upload(client, ref.repository, path), "annotations": {TITLE: name}}
                  for name, path in files.items()]
    subject = {k: model[k] for k in ("mediaType", "digest", "size")}
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": EMPTY_DESCRIPTOR, "layers": layers, "subject": subject,
                "annotations": annotations(run, model)}
    digest = client.put_referrer(ref.repository, canonical_json(manifest), MEDIA_MANIFEST)
    return Attached(digest, model["digest"], f"{ref.registry}/{ref.repository}")


# ----------------------------------------------------------------------------------------------------- list


def _subject_digest(client, ref) -> str:
    if ref.digest:
        return ref.digest
    found = client.manifest_descriptor(ref.repository, ref.ref)
    if found is None:
        raise RegistryError(f"{ref.registry}/{ref.repository}:{ref.tag}: no such image")
    return found["digest"]


def attached(image: str, *, client_for: ClientFor | None = None) -> list[dict]:
    """The evaluations attached to ``image``, newest first, from the referrers' annotations (no blob fetched)."""
    ref = _reference(image)
    client = (client_for or default_client())(ref.registry)
    rows = []
    for desc in client.referrers(ref.repository, _subject_digest(client, ref), ARTIFACT_TYPE):
        if desc.get("artifactType") != ARTIFACT_TYPE:
            continue
        notes = desc.get("annotations") or {}
        rows.append({"digest": desc.get("digest"), "run": notes.get(f"{A}run"), "dataset": notes.get(f"{A}dataset"),
                     "dataset_version": notes.get(f"{A}dataset.version"), "model": notes.get(f"{A}model"),
                     "image": notes.get(f"{A}image"), "records": notes.get(f"{A}records"),
                     "metrics": {k: _number(notes.get(f"{A}metric.{k}")) for k in HEADLINE if f"{A}metric.{k}" in notes},
                     "created": notes.get(CREATED)})
    rows.sort(key=lambda r: (str(r["created"] or ""), str(r["digest"])), reverse=True)
    return rows


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class Pulled:
    id: str
    path: Path
    digest: str  # the artifact's
    subject: str | None
    new: bool  # False: this artifact was in the history already


def _artifact_digest(client, ref, run_id: str | None) -> str:
    if run_id is None:
        if not ref.digest:
            raise EvalError(f"{ref}: name the evaluation by its digest (REPO@sha256:...), or pick one of the image's "
                            "with --run RUN_ID (see `swcli eval list --image`)")
        return ref.digest
    rows = [r for r in attached(str(ref), client_for=lambda _registry: client) if r["run"] == run_id]
    if not rows:
        raise EvalError(f"no evaluation of run {run_id} is attached to {ref} (see `swcli eval list --image {ref}`)")
    if len({r["digest"] for r in rows}) > 1:
        raise EvalError(f"run {run_id} is attached to {ref} more than once "
                        f"({', '.join(r['digest'] for r in rows)}); pull one by digest")
    return rows[0]["digest"]


def _layers(manifest: dict, where: str) -> dict[str, dict]:
    """The artifact's layers by title: each title exactly one of :data:`FILES`, at most once, the required present."""
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        raise EvalError(f"{where} is not a swcli evaluation (artifactType {manifest.get('artifactType')!r})")
    layers = {}
    for layer in manifest.get("layers") or []:
        title = ((layer.get("annotations") or {}) if isinstance(layer, dict) else {}).get(TITLE)
        if title not in FILES or title in layers:
            raise EvalError(f"{where}: layer title {title!r} is not one of {', '.join(FILES)} (or is repeated)")
        if not (isinstance(layer.get("digest"), str) and isinstance(layer.get("size"), int) and layer["size"] >= 0):
            raise EvalError(f"{where}: layer {title} has no digest and size")
        layers[title] = layer
    missing = [name for name in REQUIRED if name not in layers]
    if missing:
        raise EvalError(f"{where}: no {missing[0]} layer; not a complete evaluation")
    return layers


def _check_staged(folder: Path) -> dict:
    """Read the staged run as `eval show` would; every results line too. Returns run.json."""
    from builder.services.runs import load_run

    run = load_run(folder)
    if run.run.get("status") != "succeeded":
        raise RunError(f"{folder / 'run.json'}: status {run.run.get('status')!r}; only a succeeded run is pulled")
    for _ in run.results():
        pass
    return run.run


def _existing(runs_dir: Path, digest: str, layers: dict[str, dict]) -> str | None:
    """The id of a run in the history that already is this artifact (pulled before, or the run it was made of)."""
    from builder.store import sha256_file

    if not runs_dir.is_dir():
        return None
    for path in sorted(runs_dir.iterdir()):
        if path.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError):
            origin = path / "origin.json"
            if origin.is_file() and json.loads(origin.read_text(encoding="utf-8")).get("artifact") == digest:
                return path.name
            if all("sha256:" + sha256_file(path / name) == layers[name]["digest"]  # run.json first: the cheap one
                   for name in ("run.json", "metrics.json", "results.jsonl")):
                return path.name
    return None


def pull(ref_text: str, *, run_id: str | None = None, store: Store | None = None,
         client_for: ClientFor | None = None) -> Pulled:
    """Fetch an attached evaluation into ``runs/`` (checked, staged, renamed whole); a second pull finds the first."""
    store = store or Store()
    ref = _reference(ref_text)
    if run_id is not None and run_id_problem(run_id):
        raise RunError(run_id_problem(run_id))
    client = (client_for or default_client())(ref.registry)
    digest = _artifact_digest(client, ref, run_id)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest_blob = client.get_manifest(ref.repository, digest)
    try:
        manifest = json.loads(manifest_blob.data)
    except ValueError:
        raise RegistryError(f"{where}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise EvalError(f"{where} is not a swcli evaluation")
    layers = _layers(manifest, where)
    subject = (manifest.get("subject") or {}).get("digest") if isinstance(manifest.get("subject"), dict) else None
    runs_dir = store.runs_dir
    known = _existing(runs_dir, digest, layers)
    if known:
        return Pulled(known, runs_dir / known, digest, subject, False)
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging = runs_dir / f".pulling-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for name, layer in sorted(layers.items()):
            with open(staging / name, "wb") as out:
                client.fetch_blob(ref.repository, layer["digest"], out, size=layer["size"])
        _check_staged(staging)
        (staging / "origin.json").write_text(json.dumps(
            {"artifact": digest, "repository": f"{ref.registry}/{ref.repository}", "subject": subject}, indent=2) + "\n")
        wanted = str((manifest.get("annotations") or {}).get(f"{A}run") or "")
        base = wanted if wanted and run_id_problem(wanted) is None else f"pulled-{digest.split(':')[-1][:12]}"
        for n in range(1, 100):
            new_id = base if n == 1 else f"{base}-{n}"
            if not os.path.lexists(runs_dir / new_id):  # a run of that id that is not this artifact: take the next
                os.rename(staging, runs_dir / new_id)
                return Pulled(new_id, runs_dir / new_id, digest, subject, True)
        raise RunError(f"{runs_dir}: too many runs named {base}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
