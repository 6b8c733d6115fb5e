"""`swcli eval pull`: an evaluation attached to a model image (see :mod:`builder.services.attach`) into the run
history.

The artifact's layers must be exactly the run files it may hold (by title, each at most once, never a path); the
blobs are fetched with their digests verified into a hidden staging folder under ``runs/``, read with the same shape
checks as a local run (run.json, metrics.json, every results line), and renamed into ``runs/<run id>`` whole. An
``origin.json`` beside them names the artifact. An artifact already in the history is not fetched again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import EvalError, RegistryError, UsageError
from builder.services.attach import A, ARTIFACT_TYPE, FILES, REQUIRED, TITLE, ClientFor, default_client, listing, \
    reference, subject_digest
from builder.services.runs import RunError, run_id_problem
from builder.store import Store


@dataclass(frozen=True)
class Pulled:
    id: str
    path: Path
    digest: str  # the artifact's
    subject: str | None
    new: bool  # False: this artifact was in the history already


def _is_digest(value) -> bool:
    """A sha256 digest, nothing else: it goes into a URL path."""
    return isinstance(value, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", value) is not None


def _artifact_digest(client, ref, run_id: str | None) -> tuple[str, str | None]:
    """The artifact to pull and, when it was picked among an image's, that image's manifest digest."""
    if run_id is None:
        if not ref.digest:
            raise UsageError(f"{ref}: name the evaluation by its digest (REPO@sha256:...), or pick one of the image's "
                            "with --run RUN_ID (see `swcli eval list --image`)")
        return ref.digest, None
    subject = subject_digest(client, ref)
    rows = [r for r in listing(client, ref.repository, subject) if r["run"] == run_id]
    if not rows:
        raise EvalError(f"no evaluation of run {run_id} is attached to {ref} (see `swcli eval list --image {ref}`)")
    if len({r["digest"] for r in rows}) > 1:
        raise EvalError(f"run {run_id} is attached to {ref} more than once "
                        f"({', '.join(r['digest'] for r in rows)}); pull one by digest")
    if not _is_digest(rows[0]["digest"]):
        raise EvalError(f"the evaluation of run {run_id} attached to {ref} is listed with digest {rows[0]['digest']!r}")
    return rows[0]["digest"], subject


def artifact_layers(manifest: dict, where: str, *, artifact_type: str = ARTIFACT_TYPE, files=FILES,
                    required=REQUIRED, kind: str = "evaluation", error: type = EvalError) -> dict[str, dict]:
    """The artifact's layers by title: each title exactly one of ``files``, at most once, the ``required`` present,
    each with a sha256 digest and a size (an evaluation here; a shard part in :mod:`registry_parts`)."""
    if manifest.get("artifactType") != artifact_type:
        raise error(f"{where} is not a swcli {kind} (artifactType {manifest.get('artifactType')!r})")
    layers = {}
    entries = manifest.get("layers") or []
    for layer in entries if isinstance(entries, list) else [None]:
        title = ((layer.get("annotations") or {}) if isinstance(layer, dict) else {}).get(TITLE)
        if title not in files or title in layers:
            raise error(f"{where}: layer title {title!r} is not one of {', '.join(files)} (or is repeated)")
        if not (_is_digest(layer.get("digest")) and isinstance(layer.get("size"), int) and layer["size"] >= 0):
            raise error(f"{where}: layer {title} has no sha256 digest and size")
        layers[title] = layer
    missing = [name for name in required if name not in layers]
    if missing:
        raise error(f"{where}: no {missing[0]} layer; not a complete {kind}")
    return layers


def _check_staged(folder: Path) -> None:
    """Read the staged run as `eval show` would, every results line too."""
    from builder.services.runs import load_run

    run = load_run(folder)
    if run.run.get("status") != "succeeded":
        raise RunError(f"{folder / 'run.json'}: status {run.run.get('status')!r}; only a succeeded run is pulled")
    for _ in run.results():
        pass


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
    ref = reference(ref_text)
    if run_id is not None and run_id_problem(run_id):
        raise UsageError(f"--run: {run_id_problem(run_id)}")
    client = (client_for or default_client())(ref.registry)
    digest, expected = _artifact_digest(client, ref, run_id)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest_blob = client.get_manifest(ref.repository, digest)
    try:
        manifest = json.loads(manifest_blob.data)
    except ValueError:
        raise RegistryError(f"{where}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise EvalError(f"{where} is not a swcli evaluation")
    layers = artifact_layers(manifest, where)
    subject = (manifest.get("subject") or {}).get("digest") if isinstance(manifest.get("subject"), dict) else None
    if expected and subject != expected:  # a listing (a fallback index anyone with push rights writes) that lies
        raise EvalError(f"{where} is listed as attached to {ref} ({expected}) but its subject is {subject}")
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
        try:
            _check_staged(staging)
        except RunError as err:  # name the artifact, not the staging folder that is about to go
            raise RunError(str(err).replace(str(staging), where)) from None
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
