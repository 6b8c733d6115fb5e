"""`swcli runtime build | info | list | remove`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from builder.cli._registry import add_push_command
from builder.cli._output import OutputFormat, console, human_size, print_fields, print_json, print_table

app = typer.Typer(help="Snapshot a Python environment onto a base image (the runtime image).", no_args_is_help=True)


@app.command("build")
def build(
    directory: Optional[Path] = typer.Argument(None, help="Folder with runtime.yaml (name, mode, python, base_image, requirements); its name and base_image apply even with --venv/--conda-prefix."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Runtime name (image swrt/NAME); default: runtime.yaml's."),
    venv: Optional[Path] = typer.Option(None, "--venv", help="Snapshot this venv."),
    conda_prefix: Optional[Path] = typer.Option(None, "--conda-prefix", help="Snapshot this conda env (conda-pack, no conda-unpack needed)."),
    base_image: Optional[str] = typer.Option(None, "--base-image", help="Image with python3 of the env's minor version (default: runtime.yaml's, else swcli/base:bookworm-py3.11)."),
    dockerfile_only: Optional[Path] = typer.Option(None, "--dockerfile-only", help="Write the Dockerfile and context to this folder instead of building."),
    skip_gen_env: bool = typer.Option(False, "--skip-gen-env", help="Do not export the environment lock (pip freeze / conda env export)."),
) -> None:
    """Snapshot an env (split into layers by package size) and swcli onto a base image; default: the current env."""
    from builder.errors import SwcliError
    from builder.services.runtime_build import build_runtime

    if venv and conda_prefix:
        raise SwcliError("give --venv or --conda-prefix, not both")
    entry, result = build_runtime(name, venv or conda_prefix, spec_dir=directory, base_image=base_image,
                                  dockerfile_only=dockerfile_only, skip_gen_env=skip_gen_env)
    if entry is None:
        console.print(f"wrote Dockerfile and context to {dockerfile_only}")
        return
    layers = entry.manifest["layers"]
    console.print(f"built runtime [bold]{entry.ref}[/bold]: image {result.tags[0]} ({len(layers)} env layers, "
                  f"{human_size(sum(l['size'] for l in layers))}), {result.seconds:.1f} s")


@app.command("info")
def info(ref: str = typer.Argument(...), output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o")) -> None:
    """Show a runtime's manifest."""
    from builder.store import Store

    entry = Store().resolve("runtime", ref)
    m = entry.manifest
    if output is OutputFormat.json:
        print_json(dict(m, path=str(entry.path)))
        return
    print_fields(f"runtime {entry.name}", [("version", entry.version), ("created", entry.created), ("image", m.get("image")),
                                           ("base", m.get("base_image")), ("source", m.get("source")),
                                           ("layers", ", ".join(f"{l['dir'].split('/')[-1]} {human_size(l['size'])}" for l in m.get("layers", [])))])


@app.command("list")
def list_(output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o")) -> None:
    """List runtimes, newest first."""
    from builder.store import Store

    entries = Store().list("runtime")
    if output is OutputFormat.json:
        print_json([dict(e.manifest, path=str(e.path)) for e in entries])
        return
    print_table(None, ["name", "version", "created", "image"], [(e.name, e.short_version, e.created, e.manifest.get("image")) for e in entries])


@app.command("remove")
def remove(ref: str = typer.Argument(...)) -> None:
    """Forget a runtime (its image stays in the engine)."""
    from builder.store import Store

    entry = Store().remove("runtime", ref)
    console.print(f"removed runtime {entry.ref}")


add_push_command(app, "runtime")
