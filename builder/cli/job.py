"""`swcli job run`: evaluate a model image on a dataset image in a container."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Run evaluations in containers.", no_args_is_help=True)


@app.command("run")
def run(
    model: str = typer.Option(..., "--model", "-m", help="Model ref or image (swmp/NAME:TAG)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset ref or image (swds/NAME:TAG)."),
    output: Path = typer.Option(Path("out"), "--output", "-o", help="Host folder that receives metrics.json, results.jsonl, run.json."),
) -> None:
    """docker run the model image's eval with the dataset image's /dataset mounted; exits with its exit code."""
    from builder.services.job import run_job

    code = run_job(model, dataset, output, log=typer.echo)
    if code:
        raise typer.Exit(code)
    typer.echo(f"outputs: {output.resolve()}")
