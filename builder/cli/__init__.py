"""The `swcli` command line: thin typer commands that turn flags into a service call.

Each command group lives in its own module (``dataset.py``, ``model.py``...) and imports the services it needs
inside the command body, so ``swcli --help`` stays fast. `_run.run` is the only place that turns an
exception into a one-line message and an exit code, here and in the model image's entrypoint.
"""

from __future__ import annotations

import sys

import typer

from builder import __version__
from builder.cli import dataset, job, model, runtime
from builder.cli import eval as eval_cli
from builder.cli._registry import add_registry_commands
from builder.cli.console import add_console_command
from builder.cli.gc import add_gc_command
from builder.cli._run import run

app = typer.Typer(
    name="swcli",
    help="Build datasets, models and runtimes as OCI images and evaluate them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(dataset.app, name="dataset")
app.add_typer(model.app, name="model")
app.add_typer(runtime.app, name="runtime")
app.add_typer(job.app, name="job")
app.add_typer(eval_cli.app, name="eval")
add_registry_commands(app)
add_gc_command(app)
add_console_command(app)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"swcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
) -> None:
    """swcli: containerized build system for ML evaluation."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become ``swcli: error: <one line>`` and a non-zero exit code (see ``_run``)."""
    return run(app, argv, "swcli", exiting=argv is None)


if __name__ == "__main__":
    sys.exit(main())
