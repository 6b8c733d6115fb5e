"""Registry commands: `swcli dataset|model|runtime push`, and the top-level `pull`, `copy`, `login`, `logout`.

Passwords come from stdin (``--password-stdin``) or a hidden prompt, never from a flag: a flag lands in shell
history and in ``ps``. Nothing here prints a credential.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from builder.cli._output import console

USERNAME_HELP = "With --password-stdin; default: the credentials `swcli login` (or `docker login`) stored."
PASSWORD_HELP = "Read the password from stdin (never from a flag)."


def password_from_stdin() -> str:
    """One line of stdin, without its newline: `echo "$TOKEN" | swcli login ... --password-stdin`."""
    return sys.stdin.readline().rstrip("\r\n")


def auth_from(username: str | None, password_stdin: bool) -> dict | None:
    from builder.errors import SwcliError

    if password_stdin and not username:
        raise SwcliError("--password-stdin needs --username")
    if username and not password_stdin:
        raise SwcliError("give the password on stdin with --password-stdin (never as a flag)")
    if not username:
        return None
    return {"username": username, "password": password_from_stdin()}


def push_cli(kind: str, ref: str, target: str, username: str | None, password_stdin: bool) -> None:
    from builder.cli._progress import layer_progress
    from builder.services.registry import push

    auth = auth_from(username, password_stdin)
    with layer_progress("push") as on_progress:
        result = push(kind, ref, target, auth=auth, on_progress=on_progress)
    console.print(f"pushed {result.ref}@{result.digest}: {len(result.pushed)} layer(s) uploaded, "
                  f"{len(result.existing)} already there")


def add_push_command(app: typer.Typer, kind: str) -> None:
    """Register `swcli KIND push REF TARGET` on a command group: one command body for the three kinds."""

    @app.command("push")
    def push(
        ref: str = typer.Argument(..., help=f"The {kind} to push (its image)."),
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG], e.g. 127.0.0.1:5000/team/NAME:v1."),
        username: Optional[str] = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP),
    ) -> None:
        """Push the image to a registry; layers it already has are not uploaded again."""
        push_cli(kind, ref, target, username, password_stdin)


def add_registry_commands(app: typer.Typer) -> None:
    """Register the top-level `pull`, `copy`, `login` and `logout`: they act on any swcli image, whatever its kind."""

    @app.command("pull")
    def pull(
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG] of an swcli image."),
        username: Optional[str] = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP),
        image_only: bool = typer.Option(False, "--image-only", help="Do not record it in the local store (a dataset's "
                                        "shards are copied out of its image otherwise)."),
    ) -> None:
        """Pull an swcli image, tag it locally by its labels (swds/, swmp/, swrt/NAME:VERSION) and record it in the
        store, so refs, `info`, `eval` and `job run` use it as if it had been built here."""
        from builder.cli._progress import layer_progress
        from builder.services.registry import pull as pull_image

        auth = auth_from(username, password_stdin)
        with layer_progress("pull") as on_progress:
            result = pull_image(target, auth=auth, on_progress=on_progress, record=not image_only)
        console.print(f"pulled {target} as {result.ref}")

    @app.command("copy")
    def copy(
        source: str = typer.Argument(..., help="REGISTRY/REPO[:TAG] to copy from."),
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG] to copy to."),
    ) -> None:
        """Copy an swcli image between registries through the engine; only layers the target lacks are sent.

        Credentials for both come from `swcli login` (or `docker login`) to each registry.
        """
        from builder.cli._progress import layer_progress
        from builder.services.registry import copy as copy_image

        with layer_progress("copy") as on_progress:
            result = copy_image(source, target, on_progress=on_progress)
        console.print(f"copied {source} to {result.ref}@{result.digest}: {len(result.pushed)} layer(s) uploaded, "
                      f"{len(result.existing)} already there")

    @app.command("login")
    def login(
        registry: str = typer.Argument(..., help="Registry host[:port], e.g. 127.0.0.1:5000 or registry.example."),
        username: str = typer.Option(..., "--username", "-u", help="Registry user."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP + " Default: a hidden prompt."),
    ) -> None:
        """Check credentials with the registry and store them where `docker login` does, for push, pull and copy."""
        from builder.errors import SwcliError
        from builder.services.registry import login as login_service

        if password_stdin:
            password = password_from_stdin()
        elif sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True)
        else:
            raise SwcliError("stdin is not a terminal: give the password with --password-stdin")
        path = login_service(registry, username, password)
        console.print(f"logged in to {registry} as {username} (credentials in {path})")

    @app.command("logout")
    def logout(registry: str = typer.Argument(..., help="Registry host[:port].")) -> None:
        """Forget the stored credentials of a registry."""
        from builder.services.registry import logout as logout_service

        known = logout_service(registry)
        console.print(f"logged out of {registry}" if known else f"no stored credentials for {registry}")
