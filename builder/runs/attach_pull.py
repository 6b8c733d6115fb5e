"""`swcli eval pull`: an evaluation attached to a model image (see :mod:`builder.runs.attach`) into the run
history.

The artifact's layers must be exactly the run files it may hold (by title, each at most once, never a path), each
declaring at most the size a file of its kind may have (:data:`~builder.runs.attach.FILE_CAPS`); the blobs are
fetched with their digests verified into a hidden staging folder under ``runs/``, read with the same shape (and
size) checks as a local run (run.json, metrics.json, every results line), and renamed into ``runs/<run id>`` whole.
An ``origin.json`` beside them names the artifact. An artifact already in the history is not fetched again.

Concurrent pulls of one artifact record one run: the look for it in the history and the rename into place happen
under one lock (an ``flock`` on the ``runs/`` folder itself, waited on for at most :data:`LOCK_WAIT` seconds), so
the second one finds the first's run and says it is already there.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.bounded import checked_strings, parse, read_json
from builder.distribute.artifact import TITLE
from builder.errors import EvalError, RegistryError, UsageError
from builder.files import flock_wait
from builder.registry import ClientFor
from builder.registry.media import checked_descriptor, checked_digest, checked_list, checked_object
from builder.runs.attach import A, ARTIFACT_TYPE, FILE_CAPS, FILES, REQUIRED, attached_rows, default_client, reference, \
    subject_digest
from builder.runs.folder import METRICS, RESULTS, RUN
from builder.runs.history import run_id_problem
from builder.runs.schema import RunError
from builder.store import Store

LOCK_WAIT = 60.0  # seconds a pull waits for another one's look-and-rename (a scan of runs/ and one rename)
DISK_SPARE = 256 << 20  # a pull is refused when its files would leave less than this free
MAX_ORIGIN = 64 << 10  # origin.json is ours: three short fields


@dataclass(frozen=True)
class Pulled:
    id: str
    path: Path
    digest: str  # the artifact's
    subject: str | None
    new: bool  # False: this artifact was in the history already


def _artifact_digest(client, ref, run_id: str | None) -> tuple[str, str | None]:
    """The artifact to pull and, when it was picked among an image's, that image's manifest digest."""
    if run_id is None:
        if not ref.digest:
            raise UsageError(f"{ref}: name the evaluation by its digest (REPO@sha256:...), or pick one of the image's "
                            "with --run RUN_ID (see `swcli eval list --image`)")
        return ref.digest, None
    subject, rows = attached_rows(client, ref.repository, subject_digest(client, ref))
    rows = [r for r in rows if r["run"] == run_id]
    if not rows:
        raise EvalError(f"no evaluation of run {run_id} is attached to {ref} (see `swcli eval list --image {ref}`)")
    if len({r["digest"] for r in rows}) > 1:
        raise EvalError(f"run {run_id} is attached to {ref} more than once "
                        f"({', '.join(r['digest'] for r in rows)}); pull one by digest")
    return rows[0]["digest"], subject  # listing checked it: a sha256 digest


def artifact_layers(manifest: object, where: str, *, artifact_type: str = ARTIFACT_TYPE, files=FILES,
                    required=REQUIRED, kind: str = "evaluation", error: type = EvalError) -> dict[str, dict]:
    """The artifact's layers by title: each title exactly one of ``files``, at most once, the ``required`` present,
    each a descriptor of the right shape declaring at most :data:`FILE_CAPS` of its title (an evaluation here; a
    shard part in :mod:`registry_parts`). A wrong-typed field is one line, exit 5."""
    manifest = checked_object(manifest, f"{where}: the manifest")
    if manifest.get("artifactType") != artifact_type:
        raise error(f"{where} is not a swcli {kind} (artifactType {manifest.get('artifactType')!r:.80})")
    layers = {}
    for n, layer in enumerate(checked_list(manifest.get("layers", []), f"{where}: field 'layers'")):
        layer = checked_descriptor(layer, f"{where}: layers[{n}]")
        title = layer.get("annotations", {}).get(TITLE)
        if title not in files or title in layers:
            raise error(f"{where}: layer title {title!r:.80} is not one of {', '.join(files)} (or is repeated)")
        if layer["size"] > FILE_CAPS[title]:
            raise RegistryError(f"{where}: layer {title} declares {layer['size']} bytes, more than the "
                                f"{FILE_CAPS[title]} a {title} may hold")
        layers[title] = layer
    missing = [name for name in required if name not in layers]
    if missing:
        raise error(f"{where}: no {missing[0]} layer; not a complete {kind}")
    return layers


def _check_staged(folder: Path) -> None:
    """Read the staged run as `eval show` would, every results line too."""
    from builder.runs.history import load_run

    run = load_run(folder)
    if run.run.get("status") != "succeeded":
        raise RunError(f"{folder / RUN}: status {run.run.get('status')!r}; only a succeeded run is pulled")
    for _ in run.results():
        pass


def _existing(runs_dir: Path, digest: str, layers: dict[str, dict]) -> str | None:
    """The id of a run in the history that already is this artifact (pulled before, or the run it was made of)."""
    from builder.files import sha256_file

    if not runs_dir.is_dir():
        return None
    for path in sorted(runs_dir.iterdir()):
        if path.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError, RunError, RegistryError):
            origin = path / "origin.json"
            if os.path.lexists(origin):
                found = read_json(origin, MAX_ORIGIN, str(origin))
                if isinstance(found, dict) and found.get("artifact") == digest:
                    return path.name
            if all(os.path.isfile(path / name) and "sha256:" + sha256_file(path / name) == layers[name]["digest"]
                   for name in (RUN, METRICS, RESULTS)):  # run.json first: the cheap one
                return path.name
    return None


@contextlib.contextmanager
def _history_lock(runs_dir: Path):
    """Hold an ``flock`` on the ``runs/`` folder (no lock file is left; the kernel drops it when a process dies) for
    a look-and-rename; another pull's is short, so waiting longer than :data:`LOCK_WAIT` is an error, not a hang."""
    fd = os.open(runs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not flock_wait(fd, LOCK_WAIT):
            raise RunError(f"{runs_dir}: another `swcli eval pull` held its lock for {LOCK_WAIT:.0f} s; try again")
        yield
    finally:
        os.close(fd)


def _manifest(client, ref, digest: str, expected: str | None) -> tuple[dict, dict[str, dict], str | None]:
    """The artifact's manifest, its layers by title and its subject digest, every field checked where it enters."""
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest = parse(client.get_manifest(ref.repository, digest).data, f"{where}: the manifest")
    if not isinstance(manifest, dict):
        raise EvalError(f"{where} is not a swcli evaluation")
    layers = artifact_layers(manifest, where)
    checked_strings(manifest.get("annotations"), f"{where}: annotations")
    subject = manifest.get("subject")
    subject = None if subject is None else checked_descriptor(subject, f"{where}: subject")["digest"]
    if expected and subject != expected:  # a listing (a fallback index anyone with push rights writes) that lies
        raise EvalError(f"{where} is listed as attached to {ref} ({expected}) but its subject is {subject}")
    return manifest, layers, subject


def _wanted_id(manifest: dict, digest: str) -> str:
    """The run id the artifact says (checked against the run-id grammar: one path component), else one made of
    its digest; ``latest`` names the newest run, so it is never a pulled run's id."""
    wanted = (manifest.get("annotations") or {}).get(f"{A}run") or ""  # checked: strings to strings
    if wanted and wanted != "latest" and run_id_problem(wanted) is None:
        return wanted
    return f"pulled-{checked_digest(digest, 'artifact').split(':')[-1][:12]}"


def _fetch(client, ref, layers: dict[str, dict], staging: Path, where: str) -> None:
    """Every layer into ``staging`` (digests verified by the client), after checking the disk holds them."""
    need = sum(layer["size"] for layer in layers.values())
    free = shutil.disk_usage(staging).free - DISK_SPARE
    if need > free:  # refused before a byte is written, not at ENOSPC halfway
        raise RegistryError(f"{where}: its files are {need} bytes; {staging.parent} has {max(free, 0)} free "
                            f"beyond {DISK_SPARE} kept spare")
    for name, layer in sorted(layers.items()):
        with open(staging / name, "xb") as out:
            client.fetch_blob(ref.repository, layer["digest"], out, size=layer["size"])


def pull(ref_text: str, *, run_id: str | None = None, store: Store | None = None,
         client_for: ClientFor | None = None) -> Pulled:
    """Fetch an attached evaluation into ``runs/`` (checked, staged, renamed whole); a second pull finds the first,
    also when both run at once."""
    store = store or Store()
    ref = reference(ref_text)
    if run_id is not None and run_id_problem(run_id):
        raise UsageError(f"--run: {run_id_problem(run_id)}")
    client = (client_for or default_client())(ref.registry)
    digest, expected = _artifact_digest(client, ref, run_id)
    where = f"{ref.registry}/{ref.repository}@{digest}"
    manifest, layers, subject = _manifest(client, ref, digest, expected)
    runs_dir = store.runs_dir
    known = _existing(runs_dir, digest, layers)
    if known:
        return Pulled(known, runs_dir / known, digest, subject, False)
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging = runs_dir / f".pulling-{secrets.token_hex(8)}"
    staging.mkdir()
    try:
        _fetch(client, ref, layers, staging, where)
        try:
            _check_staged(staging)
        except RunError as err:  # name the artifact, not the staging folder that is about to go
            raise RunError(str(err).replace(str(staging), where)) from None
        with open(staging / "origin.json", "x", encoding="utf-8") as out:
            json.dump({"artifact": digest, "repository": f"{ref.registry}/{ref.repository}", "subject": subject},
                      out, indent=2)
            out.write("\n")
        return _place(runs_dir, staging, _wanted_id(manifest, digest), digest, layers, subject)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(runs_dir: Path, staging: Path, base: str, digest: str, layers: dict[str, dict],
           subject: str | None) -> Pulled:
    """Rename ``staging`` to ``runs/<base>`` (or ``<base>-N`` when another run has that id), unless a pull that
    ran at the same time put this artifact there first: both under the history lock."""
    with _history_lock(runs_dir):
        known = _existing(runs_dir, digest, layers)
        if known:
            return Pulled(known, runs_dir / known, digest, subject, False)
        for n in range(1, 100):
            new_id = base if n == 1 else f"{base}-{n}"
            if not os.path.lexists(runs_dir / new_id):  # a run of that id that is not this artifact: take the next
                os.rename(staging, runs_dir / new_id)
                return Pulled(new_id, runs_dir / new_id, digest, subject, True)
    raise RunError(f"{runs_dir}: too many runs named {base}")
