"""The `swcli` command line: thin typer commands that turn flags into a service call.

Each command group lives in its own module (``dataset.py``, ``model.py``...) and imports the services it needs
inside the command body, so ``swcli --help`` stays fast. :func:`main` is the only place that turns a
:class:`~builder.errors.SwcliError` into a one-line message and an exit code.
"""

from __future__ import annotations

import sys

import typer

from builder import __version__
from builder.cli import dataset, job, model, runtime
from builder.cli import eval as eval_cli
from builder.cli._registry import add_registry_commands
from builder.errors import SwcliError

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
    """Run the CLI; user errors become ``swcli: error: <one line>`` and a non-zero exit code."""
    try:
        result = app(args=argv, prog_name="swcli", standalone_mode=False)
    except SwcliError as err:
        typer.echo(f"swcli: error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        typer.echo("swcli: interrupted; nothing half-built was kept", err=True)
        return 130
    except typer.Exit as ex:  # --help, --version
        return ex.exit_code
    except typer.Abort:
        typer.echo("swcli: aborted", err=True)
        return 1
    except Exception as err:  # click usage errors arrive as ClickException subclasses
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            return err.exit_code
        raise
    # standalone_mode=False returns a typer.Exit's code instead of raising it
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
