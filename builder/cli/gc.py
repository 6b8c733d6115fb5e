"""`swcli gc`: remove layout blobs no ref reaches and staging left by dead commands."""

from __future__ import annotations

import typer

from builder.cli._output import console


def add_gc_command(app: typer.Typer) -> None:
    @app.command("gc")
    def gc() -> None:
        """Remove image blobs nothing needs and staging of dead commands; print what was freed."""
        from builder.build.gc import collect_garbage

        result = collect_garbage()
        console.print(f"freed {result.bytes} bytes: {len(result.blobs)} blob(s), {len(result.temp_files)} temp "
                      f"file(s), {len(result.staging)} staging folder(s)")
