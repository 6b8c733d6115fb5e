"""Evaluations attached to the model image they measured: `swcli eval attach`, `eval list --image`, `eval pull`.

An attached evaluation is an OCI artifact manifest (distribution-spec 1.1) in the model image's repository:
``artifactType`` :data:`ARTIFACT_TYPE`, the empty config, one layer per run file (metrics.json, run.json,
results.jsonl, report.html; each named by its ``org.opencontainers.image.title``), ``subject`` the model image's
manifest, and annotations carrying what a listing shows (run id, dataset, headline metrics, created), so listing
needs no blob. Every field comes from the run's own files, never from the clock: the same run attached twice is the
same artifact digest. The registry's referrers API lists them, or the ``sha256-<hex>`` fallback tag index.

Pulling one back into the run history is :mod:`builder.runs.attach_pull`.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.distribute.artifact import CREATED, file_layers, put_artifact
from builder.distribute.blobs import registry_clients
from builder.errors import EvalError, RegistryError
from builder.images.oci import MEDIA_MANIFEST
from builder.registry import ClientFor
from builder.runs.folder import METRICS, RESULTS, RUN
from builder.runs.gates import metric_value
from builder.runs.history import MAX_METRICS, MAX_RUN_JSON, Run, resolve_run
from builder.runs.schema import RunError
from builder.store import Store

ARTIFACT_TYPE = "application/vnd.swcli.evaluation.v1+json"
# the run files an artifact carries, by layer title (exactly these names: a title is never a path)
FILES = {METRICS: "application/vnd.swcli.evaluation.metrics.v1+json",
         RUN: "application/vnd.swcli.evaluation.run.v1+json",
         RESULTS: "application/x-ndjson",
         "report.html": "text/html"}
REQUIRED = (METRICS, RUN, RESULTS)
# the most a layer of each title may declare, checked before it is fetched (docs/security.md): run.json and
# metrics.json are parsed whole, so they are small (runs.py's read bounds); results.jsonl is streamed to disk,
# verified, and read a line at a time, so it may be large: 1 KB a record (scores of ~50 labels) for 64M records;
# report.html embeds two plots and 12 thumbnails (~1 MB), 64 MiB is far beyond any we write
FILE_CAPS = {METRICS: MAX_METRICS, RUN: MAX_RUN_JSON, RESULTS: 64 << 30,
             "report.html": 64 << 20}
HEADLINE = ("accuracy", "macro-f1", "weighted-f1", "roc_auc")  # GATE_KEYS names, as `--fail-under` spells them
A = "io.swcli.evaluation."  # annotation prefix
MODEL_MEDIA = {MEDIA_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}


def default_client(ca_cert: Path | None = None) -> ClientFor:
    """The clients `eval attach|list|pull` and a pod's parts use: the stored credentials, ``ca_cert`` trusted."""
    return registry_clients(ca_cert=ca_cert)


def reference(text: str):
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
    from builder.registry.media import MAX_CONFIG, checked_descriptor
    from builder.bounded import image_config, parse

    manifest = image_behind(client, ref.repository, client.get_manifest(ref.repository, ref.ref))
    where = f"{ref.registry}/{ref.repository}@{manifest.digest}"
    if manifest.media_type not in MODEL_MEDIA:
        raise EvalError(f"{where} is a {manifest.media_type}, not an image manifest; name the model image itself "
                        "(one platform's manifest, by tag or digest)")
    doc = parse(manifest.data, where)
    config = checked_descriptor(doc.get("config") if isinstance(doc, dict) else None, f"{where}: config",
                                max_size=MAX_CONFIG)
    digest, buf = config["digest"], io.BytesIO()
    client.fetch_blob(ref.repository, digest, buf, size=config["size"])
    labels, _ = image_config(buf.getvalue(), f"{where}: config {digest}")
    if labels.get("io.swcli.kind") != "model":
        raise EvalError(f"{where} is not a swcli model image (label io.swcli.kind is {labels.get('io.swcli.kind')!r})")
    descriptor = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.data)}
    return {**descriptor, "config": digest}, labels


def image_behind(client, repository: str, manifest):
    """A ModelPack artifact of `model push --modelpack` stands for its ``subject``, the model image it was pushed
    with (docs/modelpack.md); any other manifest is itself."""
    from builder.distribute.modelpack_pull import is_modelpack, manifest_document
    from builder.registry.media import checked_descriptor

    document = manifest_document(manifest)
    if not is_modelpack(document) or "subject" not in document:
        return manifest
    subject = checked_descriptor(document["subject"], f"{client.registry}/{repository}@{manifest.digest}: subject")
    return client.get_manifest(repository, subject["digest"])


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


def annotations(run: Run, model: dict) -> dict[str, str]:
    """What `eval list --image` shows, as strings; ``created`` is the run's own time, so attaching is repeatable."""
    out = {CREATED: str(run.run.get("finished") or run.run.get("started")), f"{A}run": run.id,
           f"{A}dataset": str(run.dataset.get("name")), f"{A}dataset.version": str(run.dataset.get("version")),
           f"{A}model": str((run.run.get("model") or {}).get("name")), f"{A}image": model["config"],
           f"{A}records": str((run.run.get("records") or {}).get("ok"))}
    for key in HEADLINE:
        value = metric_value(run.metrics, key)
        if isinstance(value, (int, float)):
            out[f"{A}metric.{key}"] = repr(float(value))
    return out


def check_complete(run: Run) -> None:
    """Only a succeeded run with its three files is attached (a failed one has no metrics.json to gate on)."""
    if run.run.get("status") != "succeeded":
        raise EvalError(f"run {run.id} is {run.run.get('status')}; only a succeeded run can be attached")
    for name in REQUIRED:
        if not (run.path / name).is_file():
            raise RunError(f"{run.path / name} is missing; run {run.id} is incomplete")


def _run_files(run: Run, scratch: Path, *, report_optional: bool = False) -> dict[str, tuple[Path, str]]:
    """The files to attach (title -> (path, media type)), in :data:`FILES` order; the HTML report is rendered (into
    ``scratch``) when the run holds none, or left out when ``report_optional`` and there is no jinja2 to render it
    (the model image's merge: `eval pull` does not need the report)."""
    files = {name: (run.path / name, media) for name, media in FILES.items() if (run.path / name).is_file()}
    if "report.html" not in files:
        from builder.runs.report import render_report

        try:  # render_report imports jinja2 itself: the model image has none
            files["report.html"] = (render_report(run, scratch / "report.html"), FILES["report.html"])
        except ImportError:
            if not report_optional:
                raise
    return {name: files[name] for name in FILES if name in files}


def attach_run(run: Run, image: str, *, client_for: ClientFor | None = None, report_optional: bool = False
               ) -> Attached:
    """Push the loaded ``run`` as an evaluation artifact whose subject is the model image ``image``."""
    check_complete(run)
    ref = reference(image)
    client = (client_for or default_client())(ref.registry)
    model, labels = model_of(client, ref)
    check_same_model(run, model, labels, f"{ref.registry}/{ref.repository}@{model['digest']}")
    with tempfile.TemporaryDirectory(prefix="swcli-attach-") as scratch:
        files = _run_files(run, Path(scratch), report_optional=report_optional)
        digest = put_artifact(client, ref.repository, model, ARTIFACT_TYPE, file_layers(files),
                              annotations(run, model))
    return Attached(digest, model["digest"], f"{ref.registry}/{ref.repository}")


def attach(run_ref: str, image: str, *, store: Store | None = None, client_for: ClientFor | None = None) -> Attached:
    """Push run ``run_ref`` as an evaluation artifact whose subject is the model image ``image``."""
    return attach_run(resolve_run(run_ref, store or Store()), image, client_for=client_for)


# ----------------------------------------------------------------------------------------------------- list


def subject_digest(client, ref) -> str:
    """The manifest digest of the image ``ref`` names (HEAD when it is given by tag)."""
    from builder.registry.media import checked_digest

    if ref.digest:
        return ref.digest
    found = client.manifest_descriptor(ref.repository, ref.ref)
    if found is None:
        raise RegistryError(f"{ref.registry}/{ref.repository}:{ref.tag}: no such image")
    return checked_digest(found.get("digest"), f"{ref.registry}/{ref.repository}:{ref.tag}: its digest")


def attached_rows(client, repository: str, subject: str) -> tuple[str, list[dict]]:
    """(the subject the rows were found on, the evaluations attached to it). Nothing attached to ``subject``
    itself: when it is a ModelPack artifact of `model push --modelpack`, those of the image it stands for (its
    manifest is read only then, so listing an image costs no more than before)."""
    rows = listing(client, repository, subject)
    if rows:
        return subject, rows
    behind = image_behind(client, repository, client.get_manifest(repository, subject)).digest
    return (behind, listing(client, repository, behind)) if behind != subject else (subject, rows)


def referrers_of(client, repository: str, subject: str, artifact_type: str) -> list[dict]:
    """The descriptors of ``artifact_type`` listed as referrers of ``subject``, each checked (mediaType, digest,
    size, annotations strings to strings): what a listing (a fallback index anyone with push rights writes) says
    is one line (exit 5) when it has the wrong shape. Referrers of other types are not looked at."""
    from builder.registry.media import checked_descriptor

    where = f"referrer of {subject} in {repository}"
    return [checked_descriptor(desc, f"{where} ({desc.get('digest')!s:.80})")
            for desc in client.referrers(repository, subject, artifact_type)
            if isinstance(desc, dict) and desc.get("artifactType") == artifact_type]


def listing(client, repository: str, subject: str) -> list[dict]:
    """The evaluations whose subject is ``subject``, newest first, from the referrers' annotations."""
    rows = []
    for desc in referrers_of(client, repository, subject, ARTIFACT_TYPE):
        notes = desc.get("annotations", {})
        rows.append({"digest": desc.get("digest"), "run": notes.get(f"{A}run"), "dataset": notes.get(f"{A}dataset"),
                     "dataset_version": notes.get(f"{A}dataset.version"), "model": notes.get(f"{A}model"),
                     "image": notes.get(f"{A}image"), "records": notes.get(f"{A}records"),
                     "metrics": {k: _number(notes.get(f"{A}metric.{k}")) for k in HEADLINE if f"{A}metric.{k}" in notes},
                     "created": notes.get(CREATED)})
    rows.sort(key=lambda r: (str(r["created"] or ""), str(r["digest"])), reverse=True)
    return rows


def attached(image: str, *, client_for: ClientFor | None = None) -> list[dict]:
    """The evaluations attached to ``image``, newest first (no blob is fetched)."""
    ref = reference(image)
    client = (client_for or default_client())(ref.registry)
    return attached_rows(client, ref.repository, subject_digest(client, ref))[1]


def _number(text) -> float | None:
    """A headline metric annotation as a number; None when it is not a finite one."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
