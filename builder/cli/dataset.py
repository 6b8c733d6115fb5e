"""`swcli dataset` commands (placeholder until the dataset commands land)."""

import typer

app = typer.Typer(help="Build, inspect and remove datasets.", no_args_is_help=True)
