"""`swcli model build | eval`, plus the shared `info | list | remove | push`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from builder.cli._registry import CA_CERT_HELP, PASSWORD_HELP, USERNAME_HELP, push_cli
from builder.cli._entries import EntryView, add_entry_commands
from builder.cli._output import console, human_size, image_line, note, warn

app = typer.Typer(help="Build, evaluate, inspect and remove models.", no_args_is_help=True)


@app.command("build")
def build(
    directory: Path = typer.Argument(Path("."), help="Folder holding model.yaml."),
    skip_gen_env: bool = typer.Option(False, "--skip-gen-env", help="Do not export the environment lock (pip freeze / conda env export)."),
    no_image: bool = typer.Option(False, "--no-image", help="Build the package in the store only, no image."),
    no_load: bool = typer.Option(False, "--no-load", help="Write the image into the store's OCI layout only; no Docker engine needed."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Runtime ref or image to build on (default: run.runtime, else a runtime from pip_req, else from the current env)."),
    dockerfile_only: Optional[Path] = typer.Option(None, "--dockerfile-only", help="Write the image's Dockerfile and context here instead of building it."),
    verify: bool = typer.Option(False, "--verify", help="Read and hash every file again, even those whose size, mtime and inode are unchanged since the last build, and re-check cached layers."),
) -> None:
    """Snapshot the source tree and weights named by model.yaml into the store, then build swmp/NAME on a runtime."""
    from builder.build.pipeline import model_with_image
    from builder.cli._progress import step_progress

    with step_progress() as on_step:
        built = model_with_image(directory, runtime=runtime, skip_gen_env=skip_gen_env, no_image=no_image,
                                 load=not no_load, dockerfile_only=dockerfile_only, on_package=_say_built, verify=verify,
                                 on_step=on_step)
    if built.image is not None:
        console.print(f"wrote Dockerfiles and contexts to {dockerfile_only}" if dockerfile_only
                      else image_line(built.image, on=built.runtime_image), markup=False)


def _say_built(result) -> None:
    for message in result.notes:
        note(message)
    if result.excluded:
        note("left out by the default credential rules (re-include with '!PATH' in .swignore): " + ", ".join(result.excluded))
    entry = result.entry
    console.print(
        f"built model [bold]{entry.ref}[/bold]: {result.files} files, {human_size(result.total_bytes)} "
        f"(weights {human_size(result.weight_bytes)}), env lock: {entry.manifest['env_lock'] or 'skipped'}, "
        f"{result.seconds:.2f} s"
    )
    if result.biggest:
        console.print("biggest: " + ", ".join(f"{path} ({human_size(size)})" for path, size in result.biggest), markup=False)
    for message in result.warnings:
        warn(message)


@app.command("eval")
def eval_(
    model: str = typer.Argument(..., help="Model ref, store entry directory, a folder with model.yaml, or a ModelPack artifact in a registry (REGISTRY/REPO[:TAG|@DIGEST]: fetched into the store once, verified; docs/modelpack.md)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset ref, dataset directory, or a dataset image in a registry (REGISTRY/REPO[:TAG|@DIGEST]: only the layers of --shard are fetched, into $SWCLI_HOME/cache)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Records per ppl call (handlers that opted in to batching)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: a new run under $SWCLI_HOME/runs)."),
    device: Optional[str] = typer.Option(None, "--device", help="Passed to the handler's __init__ (e.g. cpu, cuda)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: ppl over slice I (0-based) of N only; merge the parts with `swcli eval merge`. Default: JOB_COMPLETION_INDEX/JOB_COMPLETION_COUNT when set."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --output: ppl only on the records not yet scored (a finished run is left as it is)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=0, help="torch intra-op threads for ppl. Default: torch's pool less one (at least 1) for a one-record handler (frees a core for reading ahead and loading cmp's libraries), torch's own for a batching one; OMP_NUM_THREADS or the handler's own torch.set_num_threads win. 0: torch's default."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes running ppl, forked once the model is loaded, each with one torch thread; results are the same. Default: the CPUs this process may use (affinity, cgroup quota) on a CPU run of 1,024 records or more whose torch threads nobody set (--threads, OMP_NUM_THREADS, the handler), else 1."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="The runtime the model runs on, recorded in run.json: a store runtime ref (it must exist), or 'local'. model eval runs in this process's Python env either way; `job run` runs in the model image (docs/modelpack.md)."),
) -> None:
    """Run the model's handler over every record, then cmp; write metrics.json, results.jsonl and run.json."""
    from builder.cli._progress import record_progress
    from builder.cli._summary import print_summary
    from builder.evaluate.model_eval import EvalOptions, evaluate

    options = EvalOptions(model=model, dataset=dataset, output_dir=output, batch_size=batch_size, device=device, shard=shard,
                          resume=resume, threads=threads, workers=workers, runtime=runtime)
    with record_progress("evaluating") as progress:
        result = evaluate(options, progress=progress, on_total=progress.set_total)
    if result.note:
        console.print(result.note, markup=False)
    if result.run.get("status") == "partial":
        s = result.run["shard"]
        console.print(f"shard {s['index']}/{s['count']}: records {s['start']}..{s['stop'] - 1} predicted; "
                      f"merge the parts with `swcli eval merge`")
    else:
        print_summary(result.metrics, result.run)
    console.print(f"outputs: {result.output_dir}")


def _fields(entry) -> list:
    m, totals = entry.manifest, entry.manifest.get("totals", {})
    return [
        ("version", entry.version),
        ("short", entry.short_version),
        ("created", entry.created),
        ("handler", m.get("handler")),
        ("files", totals.get("files")),
        ("code", human_size(totals.get("code_bytes", 0))),
        ("weights", human_size(totals.get("weights_bytes", 0))),
        ("env lock", m.get("env_lock") or "skipped"),
        ("runtime", m.get("runtime")),
        ("desc", m.get("desc")),
        ("tags", ", ".join(m.get("tag", []))),
        ("image", _images(entry)),
    ]


def _verify(entry) -> None:
    from builder.distribute.pulled_entry import verify_entry

    verify_entry(entry)


def _images(entry) -> str:
    from builder.build.entry_image import model_images
    from builder.store import Store

    images = model_images(entry, Store())
    return ", ".join(max(refs, key=len) for refs in images.values()) or "none built (swcli model build)"


add_entry_commands(app, EntryView(
    "model", _fields, ["handler", "size"],
    lambda e: [e.manifest.get("handler"), human_size(e.manifest.get("totals", {}).get("bytes", 0))],
    lambda e: {"handler": e.manifest.get("handler")}, verify=_verify))


@app.command("push")
def push(
    ref: str = typer.Argument(..., help="The model to push (its image)."),
    target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG], e.g. 127.0.0.1:5000/team/NAME:v1."),
    username: Optional[str] = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help=CA_CERT_HELP),
    modelpack: bool = typer.Option(False, "--modelpack", help="Also publish the model as a CNCF ModelPack artifact, tagged TAG-modelpack in the same repository, a referrer of the image (docs/modelpack.md)."),
) -> None:
    """Push the image from the store to a registry (no Docker engine needed); blobs it already has are not
    uploaded again, blobs another repository of it holds are mounted."""
    push_cli("model", ref, target, username, password_stdin, ca_cert, modelpack=modelpack)
