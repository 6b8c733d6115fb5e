"""``swcli model eval`` and the image's ``eval``: resolve model and dataset, build the handler, run it."""

from __future__ import annotations

import inspect
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING, Any, Callable

from builder.api.model import PipelineHandler
from builder.build.model import model_source
from builder.errors import EvalError, USER_CODE_ERRORS, UsageError, UserCodeError
from builder.loader import load_class, module_source
from builder.store import Store, read_entry
from builder.volumes import DatasetReader

if TYPE_CHECKING:
    from builder.evaluate.runner.records import RecordRange
    from builder.evaluate.runner.run import EvalResult, Progress
    from builder.runs.folder import EvalContext

# The runner (builder.evaluate.runner) is imported where a run starts, not here: a model or dataset that does not
# resolve, or a bad flag, is reported before the runner's modules load.


@dataclass
class EvalOptions:
    """What the user asked for; the CLI fills it from flags, the image from its defaults."""

    model: str
    dataset: str
    output_dir: Path | None = None
    batch_size: int | None = None
    device: str | None = None
    record: bool = True  # list the run in $SWCLI_HOME/runs (not inside a container: its store dies with it)
    shard: str | None = None  # "I/N": ppl over one slice only, for `swcli eval merge`
    resume: bool = False  # continue the interrupted run in output_dir (builder.evaluate.runner.resume)
    threads: int | None = None  # torch intra-op threads: None auto, 0 torch's default (builder.evaluate.runner.threads)
    workers: int | None = None  # processes running ppl: None auto (builder.evaluate.runner.ppl_workers)
    runtime: str | None = None  # the runtime the model runs on: a store runtime ref, or "local" (this process's env)


def resolve_dataset(ref_or_dir: str, store: Store) -> tuple[Path, dict]:
    path = Path(ref_or_dir).expanduser()
    if (path / "manifest.json").is_file():
        entry = read_entry("dataset", path.resolve())
    else:
        entry = store.resolve("dataset", ref_or_dir)
    return entry.path, entry.manifest


def open_dataset(ref: str, shard, store: Store) -> tuple[DatasetReader, dict]:
    """A reader and the manifest of a local dataset (ref, entry folder) or, for ``REGISTRY/REPO[:TAG|@DIGEST]``,
    of the records of ``shard`` fetched from the registry (:mod:`builder.evaluate.remote_dataset`)."""
    from builder.evaluate.remote_dataset import is_registry_ref, open_slice

    if is_registry_ref(ref):
        remote = open_slice(ref, shard, store=store)
        return remote.reader(), remote.manifest
    dataset_dir, manifest = resolve_dataset(ref, store)
    reader = DatasetReader(dataset_dir, manifest)
    if shard is not None:
        try:
            shard.check_fits(len(reader), str(manifest.get("name")))
        except EvalError:
            reader.close()
            raise
    return reader, manifest


def label_names(manifest: dict) -> dict[str, str] | None:
    """The dataset manifest's ``label_names`` ({label value: name}, keys as strings), or None when it has none."""
    names = manifest.get("label_names")
    if not isinstance(names, dict) or not names:
        return None
    return {str(k): str(v) for k, v in names.items()}


def model_image_id(model_info: dict, store: Store) -> str | None:
    """The id (config digest) of the store's image of an evaluated store model (``swmp/<name>:<version>-<id>``, the one
    its ref names: :func:`builder.build.entry_image.model_image`), or None.

    Inside the model image, and for a source folder or a model never built into an image, there is none: the
    model's name and version (a content digest of its code and weights) are then what identify it. Only the layout
    reader is imported (the image holds no jinja2, which the image builder needs)."""
    if not model_info.get("version"):
        return None
    from builder.build.entry_image import model_image_id as image_id  # never raises: a run only names no image

    return image_id(model_info["name"], model_info["version"], store)


def resolve_model(ref: str, store: Store) -> tuple[Path, Any, dict]:
    """:func:`builder.build.model.model_source`, and for ``REGISTRY/REPO[:TAG|@DIGEST]`` a ModelPack artifact: fetched
    (only what the store lacks; verified) into the store as a model (:mod:`builder.distribute.modelpack_pull`)."""
    from builder.evaluate.remote_dataset import is_registry_ref

    if not is_registry_ref(ref):
        return model_source(ref, store)
    from builder.distribute.modelpack_pull import pull_modelpack

    entry = pull_modelpack(ref, store=store)
    root, spec, info = model_source(entry.ref, store)
    return root, spec, {**info, "source": ref}


def runtime_label(runtime: str | None, store: Store) -> str | None:
    """What run.json records for ``--runtime``: an in-process eval runs in this Python env whatever is named, so a
    store runtime (which must exist) is recorded with the env that ran it; ``local`` is this env; None: the default."""
    if runtime is None:
        return None
    if runtime == "local":
        return f"local:{sys.prefix}"
    entry = store.resolve("runtime", runtime)
    return f"{entry.ref} (in-process: local:{sys.prefix})"


def new_run_id(model: str, dataset: str) -> str:
    from builder.runs.history import run_stamp

    return f"{run_stamp()}-{model}-{dataset}-{secrets.token_hex(2)}"


def load_handler(root: Path, spec, device: str | None = None) -> PipelineHandler:
    """The handler ``spec.ppl`` names, imported from ``root`` and made, with the collector off (builder.evaluate.runner.gcpolicy):
    what `eval merge` and the image's merges score with."""
    from builder.evaluate.runner.gcpolicy import loading

    with loading():
        return make_handler(load_class(spec.ppl, root, PipelineHandler, spec_file=spec.path, field="run.ppl"),
                            spec.ppl, device)


def make_handler(cls: type, ref: str, device: str | None) -> PipelineHandler:
    """Instantiate the user's handler; ``device`` is passed only when asked for and accepted."""
    kwargs = {}
    if device is not None:
        params = inspect.signature(cls.__init__).parameters
        if "device" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise UsageError(f"{ref}.__init__ takes no 'device' argument; drop --device or add it to the handler")
        kwargs["device"] = device
    try:
        return cls(**kwargs)
    except USER_CODE_ERRORS as err:
        raise UserCodeError(f"{ref}(): constructor raised {type(err).__name__}: {err}", ref=ref) from None


def check_output_dir(output_dir: Path, store: Store) -> None:
    """An output folder is the user's or a new run folder: never the store itself, ``runs/``, or inside an entry."""
    real = Path(os.path.realpath(output_dir))
    root = Path(os.path.realpath(store.root))
    if real in (root, Path(os.path.realpath(store.runs_dir))) or (
            real.is_relative_to(root) and not real.is_relative_to(Path(os.path.realpath(store.runs_dir)))):
        raise UsageError(f"--output {output_dir}: that is inside the store ({store.root}); give a folder of your own, "
                        "or none for a new run under runs/")


def evaluate(options: EvalOptions, *, store: Store | None = None, progress: Progress | None = None,
             on_total: Callable[[int], None] | None = None) -> EvalResult:
    """Run the model's handler over the dataset; outputs go to ``options.output_dir`` or a new run dir.
    ``on_total`` hears the number of records to evaluate (the shard's), before the first ``progress``."""
    store = store or Store()
    if (options.workers or 1) > 1 and options.threads not in (None, 1):
        raise UsageError(f"--threads {options.threads} with --workers {options.workers}: each ppl worker runs torch on "
                        "one thread (OpenMP's pool does not survive fork); give one of them")
    if options.output_dir is not None:
        check_output_dir(Path(options.output_dir), store)
    elif options.resume:
        raise UsageError("--resume needs --output DIR: the folder of the run to continue")
    root, spec, model_info = resolve_model(options.model, store)
    runtime = runtime_label(options.runtime, store)
    image_id = model_image_id(model_info, store)
    if image_id:
        model_info = {**model_info, "image": image_id}
    from builder.evaluate.sharding import parse_shard

    shard = parse_shard(options.shard)  # before any expensive work: a bad spec fails fast
    reader, dataset_manifest = open_dataset(options.dataset, shard, store)
    if len(reader) == 0:
        raise EvalError(f"dataset {dataset_manifest.get('name')} has no records")
    from builder.api.metric import imports_named_in
    from builder.evaluate.runner.metric_worker import scoring_helper

    source = Source(root, spec, model_info, reader, dataset_manifest, shard, runtime)
    # cmp's libraries start loading in the scoring helper now, beside torch's import, on the other core; the run
    # takes the helper over (builder.evaluate.runner.metric_worker). Known from the handler's source: its module is
    # not loaded yet
    with scoring_helper(imports_named_in(module_source(spec.ppl, root)) if shard is None else ()):
        return _load_and_run(options, source, store, progress, on_total)


@dataclass(frozen=True)
class Source:
    """What :func:`evaluate` resolved before loading anything heavy: the model's code, spec and run.json entry, and
    the dataset opened, with the shard asked for."""

    root: Path
    spec: Any
    model: dict
    reader: DatasetReader
    manifest: dict
    shard: Any  # builder.evaluate.sharding.Shard, or None for the whole dataset
    runtime: str | None = None  # run.json's runtime when --runtime named one (runtime_label)


def _load_and_run(options: EvalOptions, source: Source, store: Store, progress: Progress | None,
                  on_total: Callable[[int], None] | None = None) -> EvalResult:
    """The rest of :func:`evaluate`: build the handler, choose threads and workers, run, record the run."""
    from builder.evaluate.runner.gcpolicy import loading
    from builder.evaluate.runner.ppl_workers import choose_workers
    from builder.evaluate.runner.run import resolve_batch_size, run_evaluation
    from builder.evaluate.runner.threads import (apply_threads, python_threads, restore_threads, started_since,
                                                 torch_threads, user_decided)
    from builder.runs.folder import RUN

    spec = source.spec
    threads_before = python_threads()  # the handler's own threads make forked workers unsafe (ppl_workers)
    with loading():  # torch and the model: no garbage to look for (builder.evaluate.runner.gcpolicy)
        handler_cls = load_class(spec.ppl, source.root, PipelineHandler, spec_file=spec.path, field="run.ppl")
        default_threads = torch_threads()
        handler = make_handler(handler_cls, spec.ppl, options.device)
    handler_threads = torch_threads()  # put back when the run ends: a second evaluate() here starts from the same
    threads_decided = options.threads not in (None, 1) or user_decided(default_threads)  # before auto changes them
    threads = apply_threads(options.threads, batching=resolve_batch_size(handler, options.batch_size) > 1,
                            before_handler=default_threads)
    output_dir = options.output_dir or store.runs_dir / new_run_id(spec.name, str(source.manifest.get("name")))
    records, shard_info = _records(source.reader, source.shard)
    if on_total is not None:
        on_total(len(records))
    workers = choose_workers(options.workers, device=options.device, records=len(records),
                             threads_decided=threads_decided, handler_threads=started_since(threads_before))
    try:
        with source.reader:
            return run_evaluation(handler, records, output_dir, context=_context(options, source, threads),
                                  batch_size=options.batch_size, progress=progress, shard=shard_info,
                                  resume=options.resume, workers=workers, workers_auto=options.workers is None)
    finally:
        restore_threads(handler_threads)
        if options.record and source.shard is None and (Path(output_dir) / RUN).is_file():
            from builder.runs.history import record_run

            record_run(Path(output_dir), store)


def _context(options: EvalOptions, source: Source, threads: int | None) -> EvalContext:
    """What the run is about, for run.json."""
    from builder.runs.folder import EvalContext

    return EvalContext(
        dataset_name=str(source.manifest.get("name", "")),
        dataset_version=str(source.manifest.get("version", "")),
        model=source.model,
        handler=source.spec.ppl,
        device=options.device,
        # the model image sets SWCLI_RUNTIME to the runtime image it was built FROM; in-process it is this env
        runtime=source.runtime or os.environ.get("SWCLI_RUNTIME") or f"local:{sys.prefix}",
        label_names=label_names(source.manifest),
        threads=threads,
    )


def _records(reader: DatasetReader, shard) -> tuple[DatasetReader | RecordRange, dict | None]:
    """The records to evaluate, and run.json's ``shard`` (``{index, count, start, stop}``) for a shard of them."""
    from builder.evaluate.runner.records import RecordRange

    if shard is None:
        return reader, None
    start, stop = shard.range(len(reader))
    return RecordRange(reader, start, stop), {"index": shard.index, "count": shard.count, "start": start, "stop": stop}


def merge(parts: list[Path], output_dir: Path | None = None, *, model: str | None = None,
          store: Store | None = None) -> tuple[Path, object, dict]:
    """Score shard parts together: the handler comes from ``model`` or from the parts' own run.json."""
    from builder.evaluate.sharding import check_parts, merge_parts
    from builder.runs.folder import RUN
    from builder.runs.history import record_run

    store = store or Store()
    first = check_parts(parts)[0]
    ref = model or first["model"].get("ref") or first["model"].get("source")
    if not ref:
        raise EvalError("the parts do not say which model made them; pass --model")
    root, spec, _ = model_source(ref, store)
    handler = load_handler(root, spec)
    output_dir = output_dir or store.runs_dir / new_run_id(spec.name, str(first["dataset"].get("name")) + "-merged")
    try:
        metrics, run = merge_parts(parts, output_dir, handler)
    finally:  # a failed or interrupted merge is listed too, like a single run
        if (Path(output_dir) / RUN).is_file():
            record_run(Path(output_dir), store)
    return Path(output_dir), metrics, run
