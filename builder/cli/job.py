"""`swcli job run`: evaluate a model image on a dataset image in a container."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Run evaluations in containers.", no_args_is_help=True)


@app.command("run")
def run(
    model: str = typer.Option(..., "--model", "-m", help="Model ref or image (swmp/NAME:TAG)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset ref or image (swds/NAME:TAG)."),
    output: Path = typer.Option(Path("out"), "--output", "-o", help="Host folder that receives metrics.json, results.jsonl, run.json."),
    shards: int = typer.Option(1, "--shards", "-n", help="Run N eval containers at once, one shard each, then merge (the k8s Indexed Job, on this machine)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run (or shard parts) in --output; finished parts are left as they are."),
) -> None:
    """docker run the model image's eval with the dataset image's /dataset mounted; exits with its exit code."""
    from builder.jobs.docker import run_job

    code = run_job(model, dataset, output, log=typer.echo, shards=shards, resume=resume)
    if code:
        raise typer.Exit(code)
    typer.echo(f"outputs: {output.resolve()}")


@app.command("k8s")
def k8s(
    model: str = typer.Option(..., "--model", "-m", help="Model ref or image (as the cluster pulls it, e.g. registry/swmp/name:tag)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset ref or image."),
    shards: int = typer.Option(1, "--shards", "-n", help="Pods of the Indexed Job, one shard each."),
    namespace: Optional[str] = typer.Option(None, "--namespace"),
    output_pvc: Optional[str] = typer.Option(None, "--output-pvc", help="Existing ReadWriteMany PVC for outputs (default: one is created)."),
    dataset_mount: str = typer.Option("init", "--dataset-mount", help="init (copy by an init container; any cluster), image (image volume; Kubernetes >= 1.35 by default) or registry (each pod fetches only its shard's layers; needs REGISTRY/REPO:TAG)."),
    parts: str = typer.Option("volume", "--parts", help="volume (parts on a ReadWriteMany PVC) or registry (each pod attaches its part to the model image; the merge pulls them and attaches the merged evaluation; no PVC)."),
    registry_secret: Optional[str] = typer.Option(None, "--registry-secret", help="A kubernetes.io/dockerconfigjson Secret the pods read (and, with --parts registry, push) the registry with."),
    cpu: Optional[str] = typer.Option(None, "--cpu", help="CPU request and limit per pod, e.g. 2."),
    memory: Optional[str] = typer.Option(None, "--memory", help="Memory request and limit per pod, e.g. 4Gi."),
    image_pull_secret: Optional[List[str]] = typer.Option(None, "--image-pull-secret", help="Repeatable."),
    merge_wait: int = typer.Option(6 * 3600, "--merge-wait", help="Seconds the merge Job waits for every shard's part before it fails naming the missing ones."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the manifests here (default: stdout)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="A replaced eval pod continues its shard's part on the volume (default) or starts it over. Not used with --parts registry: the part is on the pod's emptyDir."),
) -> None:
    """Emit a PVC (unless --parts registry), an Indexed Job running `eval --shard` in N pods, and the merge Job, as one YAML stream."""
    from builder.build.entry_image import image_for
    from builder.cli._output import warn
    from builder.jobs.k8s import DEFAULT_PVC, K8sOptions, image_warnings, render, write_manifests
    from builder.store import Store

    store = Store()
    opts = K8sOptions(model_image=image_for("model", model, store), dataset_image=image_for("dataset", dataset, store),
                      shards=shards, namespace=namespace, output_pvc=DEFAULT_PVC if output_pvc is None else output_pvc,
                      create_pvc=output_pvc is None, dataset_mount=dataset_mount, parts=parts, registry_secret=registry_secret, cpu=cpu, memory=memory,
                      image_pull_secrets=list(image_pull_secret or []), merge_wait=merge_wait, resume=resume)
    for line in image_warnings(opts):
        warn(line)
    if out is None:
        typer.echo(render(opts), nl=False)
    else:
        write_manifests(opts, out)
        typer.echo(f"wrote {out}: kubectl apply -f {out}")
