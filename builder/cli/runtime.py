"""`swcli runtime build`, plus the shared `info | list | remove | push`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from builder.cli._registry import add_push_command
from builder.cli._entries import EntryView, add_entry_commands
from builder.cli._output import console, human_size, image_line

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
    no_load: bool = typer.Option(False, "--no-load", help="Write the image into the store's OCI layout only; no Docker engine needed."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash cached env layers (normally keyed by path, size, mtime and mode) and rewrite any whose bytes changed."),
) -> None:
    """Snapshot an env (split into layers by package size) and swcli onto a base image; default: the current env."""
    from builder.errors import UsageError
    from builder.build.runtime import build_runtime
    from builder.cli._progress import step_progress

    if venv and conda_prefix:
        raise UsageError("give --venv or --conda-prefix, not both")
    with step_progress() as on_step:
        entry, result = build_runtime(name, venv or conda_prefix, spec_dir=directory, base_image=base_image,
                                      dockerfile_only=dockerfile_only, skip_gen_env=skip_gen_env, load=not no_load,
                                      verify=verify, on_step=on_step)
    if entry is None:
        console.print(f"wrote Dockerfile and context to {dockerfile_only}")
        return
    layers = entry.manifest["layers"]
    console.print(f"built runtime [bold]{entry.ref}[/bold]: {len(layers)} env layers, "
                  f"{human_size(sum(l['size'] for l in layers))}")
    console.print(image_line(result), markup=False)


def _fields(entry) -> list:
    m = entry.manifest
    return [("version", entry.version), ("short", entry.short_version), ("created", entry.created),
            ("image", m.get("image")), ("base", m.get("base_image")), ("source", m.get("source")),
            ("layers", ", ".join(f"{l['dir'].split('/')[-1]} {human_size(l['size'])}" for l in m.get("layers", [])))]


def _sbom(ref: str) -> bytes:
    from builder.build.runtime import read_runtime_sbom

    return read_runtime_sbom(ref)


add_entry_commands(app, EntryView(
    "runtime", _fields, ["image"], lambda e: [e.manifest.get("image")],
    lambda e: {k: v for k, v in e.manifest.items() if k not in ("name", "version", "created")},
    sbom=_sbom,
    remove_help="Forget a runtime (its image stays in the engine)."))
add_push_command(app, "runtime")
