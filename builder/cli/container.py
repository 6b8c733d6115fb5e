"""The entrypoint of model images: `docker run <model image> [eval | merge | merge-registry | info | --help]`.

`eval` runs the very runner of `swcli model eval` on the model baked in at /opt/swcli/model against the dataset
mounted at /dataset (`--volumes-from` a dataset container, or `-v DIR:/dataset`), or read from a registry with
`--dataset REGISTRY/REPO:TAG` (only its shard's layers), and writes /output; with `--push-part` it attaches the
finished shard part to the model image, and `merge-registry` merges those parts (docs/kubernetes.md). It is a typer
app run through the same error mapping as `swcli` (``builder.cli._run``): a bad flag or value is one line and
exit 2, a user error one line and its exit code. Each command is one call of a pod step (:mod:`builder.jobs.pod`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

MODEL_DIR = Path(os.environ.get("SWCLI_MODEL_DIR", "/opt/swcli/model"))
DATASET_DIR = Path(os.environ.get("SWCLI_DATASET_DIR", "/dataset"))
OUTPUT_DIR = Path(os.environ.get("SWCLI_OUTPUT_DIR", "/output"))
PROG = "docker run IMAGE"

app = typer.Typer(
    help=f"The model image's entrypoint: docker run [--volumes-from DATASET_CONTAINER | -v DATASET_DIR:{DATASET_DIR}] "
         f"-v OUT:{OUTPUT_DIR} IMAGE [eval|merge|info]. The image runs as uid 1000: give it a writable {OUTPUT_DIR} "
         "(e.g. `--user $(id -u):$(id -g)`). Default command: eval.",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command("eval")
def eval_(
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Records per ppl call (batching handlers)."),
    device: Optional[str] = typer.Option(None, "--device", help="Passed to the handler (cpu, cuda)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N; default JOB_COMPLETION_INDEX/JOB_COMPLETION_COUNT when set."),
    output: Path = typer.Option(OUTPUT_DIR, "--output", help="Where metrics.json, results.jsonl and run.json go."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --output (a finished run is left as it is; an empty folder starts fresh)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="REGISTRY/REPO[:TAG|@DIGEST]: read the dataset image from its registry, only the layers of --shard (cached under $SWCLI_HOME/cache); no mount needed. Credentials from $DOCKER_CONFIG/config.json."),
    push_part: Optional[str] = typer.Option(None, "--push-part", help="REGISTRY/REPO:TAG of this model image: push the finished shard part as an artifact attached to it (for `merge-registry`); a part already pushed for --job over the same dataset version and shard count is not run again."),
    job: Optional[str] = typer.Option(None, "--job", help="The job id the pushed part is filed under (with --push-part)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=0, help="torch intra-op threads for ppl (default: torch's pool less one, at least 1, for a one-record handler, torch's own for a batching one; 0: torch's default)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes running ppl, forked once the model is loaded, each with one torch thread; results are the same. Default: the CPUs this process may use (affinity, cgroup quota) on a CPU run of 1,024 records or more whose torch threads nobody set (--threads, OMP_NUM_THREADS, the handler), else 1."),
) -> None:
    """Run the model over every record of the mounted dataset (or the one --dataset names), then cmp."""
    from builder.cli._summary import print_summary
    from builder.evaluate.model_eval import EvalOptions
    from builder.jobs.pod import eval_part

    pod = _pod()
    eval_part(pod, EvalOptions(model=str(pod.model_dir), dataset=dataset or str(pod.dataset_dir), output_dir=output,
                               batch_size=batch_size, device=device, record=False, shard=shard, resume=resume,
                               threads=threads, workers=workers),
              dataset=dataset, push_part=push_part, job=job, log=print, summary=print_summary)


@app.command("merge")
def merge(
    parts_dir: Path = typer.Argument(..., help="Folder whose subfolders are the shard parts."),
    output: Path = typer.Option(..., "--output", help="Where the merged run goes."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="Seconds to wait for every shard's part (the Kubernetes merge Job)."),
) -> None:
    """cmp over the shard parts in PARTS_DIR's subfolders, first waiting for every part to finish."""
    from builder.cli._summary import print_summary
    from builder.jobs.pod import merge_folder

    merge_folder(_pod(), parts_dir, output, wait=wait, log=print, summary=print_summary)


@app.command("merge-registry")
def merge_registry(
    image: str = typer.Argument(..., help="REGISTRY/REPO:TAG of this model image: the parts are its referrers."),
    job: str = typer.Option(..., "--job", help="The job id the eval pods pushed their parts under."),
    dataset: str = typer.Option(..., "--dataset", help="REGISTRY/REPO[:TAG|@DIGEST] of the dataset image the pods evaluate: only parts over its NAME:VERSION are merged (a tag is resolved now)."),
    shards: int = typer.Option(..., "--shards", min=1, help="The pods' shard count: parts cut another way are not merged."),
    output: Path = typer.Option(..., "--output", help="Where the parts are fetched and the merged run goes."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="Seconds to wait for every shard's part."),
    attach: bool = typer.Option(True, "--attach/--no-attach", help="Attach the merged evaluation to IMAGE (like `swcli eval attach`)."),
) -> None:
    """Pull the shard parts attached to IMAGE for --job, cmp over them, attach the merged evaluation to IMAGE."""
    from builder.cli._summary import print_summary
    from builder.jobs.pod import merge_registry as merge_attached

    merge_attached(_pod(), image, job=job, dataset=dataset, shards=shards, output=output, wait=wait, attach=attach,
                   log=print, summary=print_summary)


@app.command("info")
def info() -> None:
    """Print the model manifest baked into the image."""
    from builder.store import read_entry

    print(json.dumps(read_entry("model", MODEL_DIR).manifest, indent=2))


def _pod():
    """This image's folders, as the environment (or a test) sets them when a command runs."""
    from builder.jobs.pod import Pod

    return Pod(MODEL_DIR, DATASET_DIR)


def main(argv: list[str] | None = None) -> int:
    from builder.cli._run import run

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["eval"]
    elif args[0] == "help":
        args = ["--help"]
    return run(app, args, PROG, exiting=argv is None)


if __name__ == "__main__":
    sys.exit(main())
