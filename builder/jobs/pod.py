"""A pod's steps: what the model image's entrypoint (:mod:`builder.cli.container`) does for each of its commands.

A model image holds its model in one folder and finds a mounted dataset in another (:class:`Pod`). `eval` checks
that it has a dataset to read (mounted, or a registry image), skips a shard whose part is already attached to the
model image (a replaced Kubernetes pod: the retry costs one listing), evaluates, then pushes the finished part
(:mod:`builder.jobs.parts`). `merge` and `merge-registry` load the handler before they wait, so its imports overlap
the shards' work, then score the parts found in a folder or attached to the model image; `merge-registry` attaches
the merged evaluation to the image. Lines and the summary go out through the app's ``log`` and ``summary`` as the
steps happen, so what a push or an attach prints, or the error it fails with, follows the summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder.build.model import model_source
from builder.errors import EvalError, UsageError
from builder.evaluate.model_eval import EvalOptions, evaluate, load_handler
from builder.evaluate.sharding import merge_parts, parse_shard, wait_for_parts
from builder.store import read_entry

Log = Callable[[str], None]
Summary = Callable[[object, dict], None]  # the metrics and run.json of a scored run


@dataclass(frozen=True)
class Pod:
    """The folders a model image works in: the model baked into it and where a dataset is mounted."""

    model_dir: Path
    dataset_dir: Path

    def model_manifest(self) -> dict:
        """The manifest of the model baked into this image: a merge takes only parts that are runs of it."""
        return read_entry("model", self.model_dir).manifest

    def handler(self):
        """The model's handler, loaded (with torch and whatever else it imports)."""
        root, spec, _ = model_source(str(self.model_dir))
        return load_handler(root, spec)

    def dataset_key(self, dataset: str | None) -> str:
        """``NAME:VERSION`` of the dataset this pod evaluates: the registry image ``dataset`` names, else the
        mounted one."""
        from builder.jobs.parts import dataset_key

        if dataset is not None:
            from builder.evaluate.remote_dataset import dataset_identity

            return dataset_key(dataset_identity(dataset))
        return dataset_key(read_entry("dataset", self.dataset_dir).manifest)


def eval_part(pod: Pod, options: EvalOptions, *, dataset: str | None, push_part: str | None, job: str | None,
              log: Log, summary: Summary) -> None:
    """`eval`: run ``options`` (the image's model over the registry image ``dataset``, or the mounted dataset);
    with ``push_part`` and ``job``, attach the finished part to that model image unless it is there already."""
    _check_dataset(pod, dataset)
    if options.output_dir is not None:
        check_writable(Path(options.output_dir))
    if (push_part is None) != (job is None):
        raise UsageError("--push-part and --job go together: the model image to attach the part to, and the job id")
    if push_part is not None and _already_pushed(pod, options.shard, dataset, push_part, job, log):
        return
    result = evaluate(options)
    if result.note:
        log(result.note)
    if result.metrics is not None:
        summary(result.metrics, result.run)
    log(f"outputs: {options.output_dir}")
    if push_part is not None and result.run.get("status") == "partial":
        from builder.jobs.parts import push_part as push

        log(f"part pushed: {push(options.output_dir, push_part, job)} (subject {push_part})")


def check_writable(output: Path, *, access: Callable[[str, int], bool] = os.access) -> None:
    """Before the model loads: ``output`` (or the folder it will be made in) is one this process may write, else one
    line saying how to run the image (it runs as uid 1000, which a host folder mounted there rarely lets write)."""
    folder = Path(output)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    if folder.is_dir() and not access(str(folder), os.W_OK | os.X_OK):
        raise EvalError(f"{output}: uid {os.getuid()} may not write {folder}; run the image with "
                        f'--user "$(id -u):$(id -g)" (the owner of the host folder mounted there), or make it writable')


def _check_dataset(pod: Pod, dataset: str | None) -> None:
    """A dataset to read: ``dataset`` names a registry image, or one is mounted at the pod's dataset folder."""
    if dataset is None and not (pod.dataset_dir / "manifest.json").is_file():
        raise EvalError(f"no dataset mounted at {pod.dataset_dir}: run with --volumes-from <dataset container> "
                        f"or -v <dataset dir>:{pod.dataset_dir}, or name a dataset image with --dataset REGISTRY/REPO:TAG")
    if dataset is not None:
        from builder.evaluate.remote_dataset import is_registry_ref

        if not is_registry_ref(dataset):
            raise UsageError(f"--dataset {dataset}: expected a dataset image in a registry, REGISTRY/REPO[:TAG|@DIGEST]")


def _already_pushed(pod: Pod, shard: str | None, dataset: str | None, image: str, job: str, log: Log) -> bool:
    """Whether this pod's shard of ``job`` already has its part attached to ``image`` (then it says so)."""
    from builder.jobs.parts import find_part

    index = parse_shard(shard)
    if index is None:
        raise UsageError("--push-part needs --shard I/N (or JOB_COMPLETION_INDEX): a part is one shard")
    key = pod.dataset_key(dataset)
    pushed = find_part(image, job, key, index)
    if pushed is None:
        return False
    log(f"shard {index} of job {job} over {key} is already attached to {image} ({pushed}); nothing to do")
    return True


def merge_folder(pod: Pod, parts_dir: Path, output: Path, *, wait: float, log: Log, summary: Summary) -> None:
    """`merge`: score the shard parts in ``parts_dir``'s subfolders into ``output``, first waiting up to ``wait``
    seconds for every part to finish (the Kubernetes merge Job)."""
    check_writable(output)
    handler = pod.handler()  # before waiting: the imports overlap the shards' work
    if wait > 0:
        _warm_metrics()
        wait_for_parts(parts_dir, wait, log=log)
    parts = sorted(p for p in parts_dir.iterdir() if p.is_dir()) if parts_dir.is_dir() else []
    metrics, run = merge_parts(parts, output, handler, model=pod.model_manifest())
    summary(metrics, run)
    log(f"outputs: {output}")


def merge_registry(pod: Pod, image: str, *, job: str, dataset: str, shards: int, output: Path, wait: float,
                   attach: bool, log: Log, summary: Summary) -> None:
    """`merge-registry`: pull the ``shards`` parts of ``job`` over ``dataset`` attached to ``image`` (waiting up to
    ``wait`` seconds for them) into ``output/parts``, score them into ``output/merged`` and, with ``attach``,
    attach the merged evaluation to ``image``."""
    from builder.jobs.parts import attach_merged, pull_parts

    check_writable(output)
    handler = pod.handler()
    if wait > 0:
        _warm_metrics()
    parts = pull_parts(image, job, pod.dataset_key(dataset), shards, output / "parts", wait=wait, log=log)
    merged = output / "merged"
    metrics, run = merge_parts(parts, merged, handler, model=pod.model_manifest())
    summary(metrics, run)
    log(f"outputs: {merged}")
    if attach:
        done = attach_merged(merged, image)
        log(f"attached {done.digest} to {done.repository}@{done.subject}")


def _warm_metrics() -> None:
    """Import scikit-learn's metrics now, while the merge would only wait: it is most of `cmp`'s time (~1.5 s)."""
    try:
        import sklearn.metrics  # noqa: F401
    except ImportError:  # a handler without @multi_classification may not need it
        pass
