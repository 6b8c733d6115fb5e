"""Shared body of `swcli dataset|model|runtime push` and `swcli pull`: credentials in, one result line out."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from builder.cli._output import console


def auth_from(username: str | None, password_stdin: bool) -> dict | None:
    from builder.errors import SwcliError

    if password_stdin and not username:
        raise SwcliError("--password-stdin needs --username")
    if username and not password_stdin:
        raise SwcliError("give the password on stdin with --password-stdin (never as a flag)")
    if not username:
        return None
    password = sys.stdin.readline().rstrip("\n")
    return {"username": username, "password": password}


def push_cli(kind: str, ref: str, target: str, username: str | None, password_stdin: bool) -> None:
    from builder.services.registry import push

    result = push(kind, ref, target, auth=auth_from(username, password_stdin), log=lambda line: typer.echo(line, err=True))
    console.print(f"pushed {result.ref}: {len(result.pushed)} layer(s) uploaded, {len(result.existing)} already there")


def add_push_command(app: typer.Typer, kind: str) -> None:
    """Register `swcli KIND push REF TARGET` on a command group: one command body for the three kinds."""

    @app.command("push")
    def push(
        ref: str = typer.Argument(..., help=f"The {kind} to push (its image)."),
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG], e.g. 127.0.0.1:5000/team/NAME:v1."),
        username: Optional[str] = typer.Option(None, "--username", "-u", help="With --password-stdin; default: the Docker config's credentials."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (never from a flag)."),
    ) -> None:
        """Push the image to a registry; layers it already has are not uploaded again."""
        push_cli(kind, ref, target, username, password_stdin)
