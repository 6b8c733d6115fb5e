"""`swcli console`: the local web app over the store and registries (builder/console/, imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def add_console_command(app: typer.Typer) -> None:
    @app.command("console")
    def console(
        port: int = typer.Option(0, "--port", help="Port to serve on (default: a free one, printed)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback warns."),
        registry: Optional[List[str]] = typer.Option(None, "--registry", metavar="REGISTRY/NAMESPACE",
                                                     help="Also show this registry's repositories and attached evaluations (repeatable)."),
        ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="A CA certificate (PEM) to trust for the registries."),
        open_browser: bool = typer.Option(False, "--open", help="Open the URL in a browser."),
    ) -> None:
        """Serve the console: evaluations, records, compare, jobs and gates in a browser. Prints its URL (with a
        one-time token), then serves until Ctrl-C."""
        from builder.cli._output import warn
        from builder.console.serve import ServeOptions, serve

        options = ServeOptions(host=host, port=port, registries=list(registry or []),
                               ca_cert=str(ca_cert) if ca_cert else None, open_browser=open_browser)
        serve(options, say=lambda line: typer.echo(line), warn=warn)
