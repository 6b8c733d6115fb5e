"""Shared body of `swcli dataset|model|runtime push` and `swcli pull`: credentials in, one result line out."""

from __future__ import annotations

import sys

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
