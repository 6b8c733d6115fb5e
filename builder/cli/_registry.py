"""Registry commands: `swcli dataset|model|runtime push`, and the top-level `pull`, `copy`, `login`, `logout`.

All of them talk to the registry over the distribution API; none needs a Docker engine (`pull --load` does).

Passwords come from stdin (``--password-stdin``) or a hidden prompt, never from a flag: a flag lands in shell
history and in ``ps``. Nothing here prints a credential.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from builder.cli._output import console

USERNAME_HELP = "With --password-stdin; default: the credentials `swcli login` (or `docker login`) stored."
PASSWORD_HELP = "Read the password from stdin (never from a flag)."
CA_CERT_HELP = ("A CA certificate (PEM) to trust for the registry's TLS, besides the system's and "
                "/etc/docker/certs.d/HOST:PORT/*.crt.")


def password_from_stdin() -> str:
    """One line of stdin, without its newline: `echo "$TOKEN" | swcli login ... --password-stdin`."""
    return sys.stdin.readline().rstrip("\r\n")


def credentials_from(username: str | None, password_stdin: bool):
    """Credentials for this one call (``--username`` + ``--password-stdin``), else None: the stored ones."""
    from builder.errors import UsageError
    from builder.registry.credstore import Credentials

    if password_stdin and not username:
        raise UsageError("--password-stdin needs --username")
    if username and not password_stdin:
        raise UsageError("give the password on stdin with --password-stdin (never as a flag)")
    if not username:
        return None
    return Credentials(username, password_from_stdin())


def push_cli(kind: str, ref: str, target: str, username: str | None, password_stdin: bool,
             ca_cert: Path | None, *, modelpack: bool = False) -> None:
    from builder.cli._progress import layer_progress
    from builder.distribute.push import push

    credentials = credentials_from(username, password_stdin)
    with layer_progress("push") as on_progress:
        result = push(kind, ref, target, credentials=credentials, ca_cert=ca_cert, on_progress=on_progress)
    console.print(f"pushed {result.ref}@{result.digest}: {len(result.pushed)} blob(s) uploaded, "
                  f"{len(result.mounted)} mounted, {len(result.existing)} already there")
    if modelpack:  # `model push --modelpack`: the same model as a ModelPack artifact, a referrer of that image
        from builder.distribute.modelpack_push import push_modelpack

        with layer_progress("push") as on_progress:
            result = push_modelpack(ref, target, credentials=credentials, ca_cert=ca_cert, on_progress=on_progress)
        console.print(f"pushed ModelPack {result.ref}@{result.digest}: {len(result.pushed)} blob(s) uploaded, "
                      f"{len(result.mounted)} mounted, {len(result.existing)} already there")


def add_push_command(app: typer.Typer, kind: str) -> None:
    """Register `swcli KIND push REF TARGET` on a command group: one command body for the three kinds."""

    @app.command("push")
    def push(
        ref: str = typer.Argument(..., help=f"The {kind} to push (its image)."),
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG], e.g. 127.0.0.1:5000/team/NAME:v1."),
        username: Optional[str] = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP),
        ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help=CA_CERT_HELP),
    ) -> None:
        """Push the image from the store to a registry (no Docker engine needed); blobs it already has are not
        uploaded again, blobs another repository of it holds are mounted."""
        push_cli(kind, ref, target, username, password_stdin, ca_cert)


def add_registry_commands(app: typer.Typer) -> None:
    """Register the top-level `pull`, `copy`, `login` and `logout`: they act on any swcli image, whatever its kind."""
    add_pull_command(app)
    add_copy_command(app)
    add_login_commands(app)


def add_pull_command(app: typer.Typer) -> None:
    """Register `swcli pull REGISTRY/REPO[:TAG|@DIGEST]`."""

    @app.command("pull")
    def pull(
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG|@DIGEST] of an swcli image."),
        username: Optional[str] = typer.Option(None, "--username", "-u", help=USERNAME_HELP),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP),
        image_only: bool = typer.Option(False, "--image-only", help="Do not record it in the local store (a dataset's "
                                        "shards are extracted from its layers otherwise)."),
        load: bool = typer.Option(False, "--load", help="Also load it into the Docker engine, for `docker run`."),
        ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help=CA_CERT_HELP),
    ) -> None:
        """Pull an swcli image into the store's OCI layout (no Docker engine needed), tag it by its labels (swds/,
        swmp/, swrt/NAME:VERSION) and record it in the store, so refs, `info`, `eval` and `job run` use it as if it
        had been built here."""
        from builder.cli._progress import layer_progress
        from builder.distribute.pull import pull as pull_image

        credentials = credentials_from(username, password_stdin)
        with layer_progress("pull") as on_progress:
            result = pull_image(target, credentials=credentials, ca_cert=ca_cert, on_progress=on_progress,
                                record=not image_only, load=load)
        console.print(f"pulled {target} as {result.ref}")


def add_copy_command(app: typer.Typer) -> None:
    """Register `swcli copy SOURCE TARGET`."""

    @app.command("copy")
    def copy(
        source: str = typer.Argument(..., help="REGISTRY/REPO[:TAG] to copy from."),
        target: str = typer.Argument(..., help="REGISTRY/REPO[:TAG] to copy to."),
        ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help=CA_CERT_HELP),
    ) -> None:
        """Copy an swcli image between registries, same digest on both sides; only blobs the target lacks are sent.

        Credentials for both come from `swcli login` (or `docker login`) to each registry.
        """
        from builder.cli._progress import layer_progress
        from builder.distribute.copy import copy as copy_image

        with layer_progress("copy") as on_progress:
            result = copy_image(source, target, ca_cert=ca_cert, on_progress=on_progress)
        console.print(f"copied {source} to {result.ref}@{result.digest}: {len(result.pushed)} blob(s) uploaded, "
                      f"{len(result.mounted)} mounted, {len(result.existing)} already there")


def add_login_commands(app: typer.Typer) -> None:
    """Register `swcli login REGISTRY` and `swcli logout REGISTRY`: the stored credentials of a registry."""

    @app.command("login")
    def login(
        registry: str = typer.Argument(..., help="Registry host[:port], e.g. 127.0.0.1:5000 or registry.example."),
        username: str = typer.Option(..., "--username", "-u", help="Registry user."),
        password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_HELP + " Default: a hidden prompt."),
        ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help=CA_CERT_HELP),
    ) -> None:
        """Check credentials with the registry itself and store them where `docker login` does, for push, pull and
        copy."""
        from builder.errors import UsageError
        from builder.registry.client import RegistryClient
        from builder.registry.credstore import store_login

        if password_stdin:
            password = password_from_stdin()
        elif sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True)
        else:
            raise UsageError("stdin is not a terminal: give the password with --password-stdin")
        path = store_login(registry, username, password,
                           check=lambda creds: RegistryClient(registry, credentials=creds, ca_cert=ca_cert).ping())
        console.print(f"logged in to {registry} as {username} (credentials in {path})")

    @app.command("logout")
    def logout(registry: str = typer.Argument(..., help="Registry host[:port].")) -> None:
        """Forget the stored credentials of a registry."""
        from builder.registry.credstore import forget_login

        known = forget_login(registry)
        console.print(f"logged out of {registry}" if known else f"no stored credentials for {registry}")
