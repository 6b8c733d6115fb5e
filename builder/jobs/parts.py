"""Shard parts kept in the registry instead of a shared volume (`job k8s --parts registry`).

Each eval pod pushes its finished part (``results.jsonl`` and ``run.json``) as an OCI artifact whose subject is
the model image: artifactType :data:`PART_TYPE`, the empty config, one layer per file (named by its title), and
annotations saying the job id, the dataset evaluated (``NAME:VERSION``), the shard index and the shard count, so a
listing needs no blob. The merge pod resolves the dataset image it is given to its ``NAME:VERSION``, lists the model
image's referrers, keeps the parts of its job and that dataset, waits until every index 0..N-1 is there, pulls them
(every blob checked against its digest), merges them (:func:`builder.evaluate.sharding.merge_parts`) and attaches
the merged evaluation to the model image like `swcli eval attach` does. No ReadWriteMany volume is involved.

A pod replaced after it pushed its part finds the part listed and stops at once (:func:`find_part`), so a retry
costs one listing; the results of a part are the same bytes whichever pod wrote them.

Why the dataset is in the key: the job id is the Job's name, which a later run of the same model on a new dataset
version (a re-pushed ``:latest``, say) shares. Its pods would take the old parts for their own and stop, and its
merge would attach the old dataset's metrics. Parts of another dataset version are now not seen at all; the model
is the subject, so parts of another model image are not listed either.
"""

from __future__ import annotations

import json
from pathlib import Path

from builder import outdir
from builder.errors import RegistryError
from builder.distribute.artifact import CREATED, file_layers, put_artifact
from builder.registry import ClientFor
from builder.runs.attach import Attached, attach_run, default_client, model_of, reference, referrers_of
from builder.runs.attach_pull import artifact_layers
from builder.runs.folder import RESULTS, RUN, finished_part
from builder.bounded import parse
from builder.evaluate.sharding import MergeError, wait_for_indices

PART_TYPE = "application/vnd.swcli.eval-part.v1+json"
P = "io.swcli.part."  # annotation prefix: job, dataset, index, count
PART_FILES = {RESULTS: "application/x-ndjson", RUN: "application/vnd.swcli.evaluation.run.v1+json"}


def dataset_key(dataset: dict) -> str:
    """The ``NAME:VERSION`` key parts are filed under, from a dataset's ``name`` and ``version``: run.json's
    ``dataset``, a dataset manifest, or a dataset image's labels (:func:`~builder.evaluate.remote_dataset.
    dataset_identity`). The pod that pushes, the pod that looks its part up and the merge must agree on it."""
    return f"{dataset.get('name')}:{dataset.get('version')}"


def _parts(client, ref, subject: str, job: str, dataset: str, count: int) -> dict[int, dict]:
    """The parts of ``job`` over ``dataset`` in ``count`` shards listed as referrers of ``subject``, by
    shard index (the newest when one is listed twice: a pod that pushed, then was replaced before it exited)."""
    found: dict[int, dict] = {}
    for desc in sorted(referrers_of(client, ref.repository, subject, PART_TYPE),  # each checked: strings, digests
                       key=lambda d: (d.get("annotations", {}).get(CREATED, ""), d["digest"])):
        notes = desc.get("annotations", {})
        if notes.get(f"{P}job") != job or notes.get(f"{P}dataset") != dataset:
            continue
        try:
            index, part_count = int(notes[f"{P}index"]), int(notes[f"{P}count"])
        except (KeyError, ValueError):
            continue
        if part_count != count or not 0 <= index < count:
            continue
        found[index] = {**desc, "index": index, "count": part_count}
    return found


def find_part(image: str, job: str, dataset: str, shard, *, client_for: ClientFor | None = None) -> str | None:
    """The digest of the part of ``shard`` (a :class:`~builder.evaluate.sharding.Shard`) of ``job`` over
    ``dataset`` (``NAME:VERSION``) already attached to ``image``, else None."""
    ref = reference(image)
    client = (client_for or default_client())(ref.registry)
    model, _ = model_of(client, ref)
    part = _parts(client, ref, model["digest"], job, dataset, shard.count).get(shard.index)
    return part["digest"] if part else None


def push_part(part_dir: Path, image: str, job: str, *, client_for: ClientFor | None = None) -> str:
    """Push the finished shard part in ``part_dir`` as an artifact of the model image ``image``; its digest."""
    part_dir = Path(part_dir)
    try:
        run = json.loads((part_dir / RUN).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MergeError(f"{part_dir / RUN}: unreadable ({err})") from None
    shard = run.get("shard") or {}
    if finished_part(run) is None:
        raise MergeError(f"{part_dir}: not a finished shard part (status {run.get('status')!r})")
    ref = reference(image)
    client = (client_for or default_client())(ref.registry)
    model, _ = model_of(client, ref)
    notes = {CREATED: str(run.get("finished") or run.get("started")), f"{P}job": job, f"{P}dataset": dataset_key(run.get("dataset") or {}),
             f"{P}index": str(shard["index"]), f"{P}count": str(shard["count"])}
    files = {name: (part_dir / name, media) for name, media in PART_FILES.items()}
    return put_artifact(client, ref.repository, model, PART_TYPE, file_layers(files), notes)


def pull_parts(image: str, job: str, dataset: str, shards: int, folder: Path, *, wait: float = 0.0,
               poll: float = 2.0, log=None, client_for: ClientFor | None = None) -> list[Path]:
    """Wait (up to ``wait`` seconds) until every shard of ``job`` over ``dataset`` (``NAME:VERSION``) cut into
    ``shards`` has a part attached to ``image``, then fetch each into ``folder/<index>/``; the part folders, in
    shard order. After ``wait`` the missing indices are named."""
    ref = reference(image)
    client = (client_for or default_client())(ref.registry)
    model, _ = model_of(client, ref)

    def look() -> tuple[int | None, set[int], dict[int, dict]]:
        parts = _parts(client, ref, model["digest"], job, dataset, shards)
        return (shards if parts else None), set(parts), parts  # None: "no part" yet, as the volume merge says

    parts = wait_for_indices(look, wait, poll=poll, log=log, where=f"job {job} over dataset {dataset} on {ref}",
                             none="no part", waiting=f"the parts of job {job}", done="pushed")
    out = []
    for index in range(shards):  # _parts kept only parts cut into ``shards``
        where = f"{ref.registry}/{ref.repository}@{parts[index]['digest']}"
        manifest = parse(client.get_manifest(ref.repository, parts[index]["digest"]).data, f"{where}: the manifest")
        layers = artifact_layers(manifest, where, artifact_type=PART_TYPE, files=PART_FILES,
                                 required=tuple(PART_FILES), kind="shard part", error=RegistryError)
        target = Path(folder) / str(index)
        outdir.make_folder(target)  # never through a link planted in the output folder (builder.outdir)
        for name, layer in layers.items():  # each declared size capped by its title (attach.FILE_CAPS)
            with outdir.open_temp(target / name) as fh:
                client.fetch_blob(ref.repository, layer["digest"], fh, size=layer["size"])
        out.append(target)
    return out


def attach_merged(run_dir: Path, image: str, *, client_for: ClientFor | None = None) -> Attached:
    """Attach the merged run in ``run_dir`` to ``image`` as `eval attach` does; with the HTML report only where it
    can be rendered (the model image has no jinja2: `eval pull` does not need the report)."""
    from builder.runs.history import load_run

    return attach_run(load_run(Path(run_dir)), image, client_for=client_for, report_optional=True)

