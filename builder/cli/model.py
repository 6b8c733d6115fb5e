"""`swcli model` commands (placeholder until the model commands land)."""

import typer

app = typer.Typer(help="Build, inspect and remove models.", no_args_is_help=True)
