"""`swcli dataset build | export`, plus the shared `info | list | remove | push`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from builder.cli._registry import add_push_command
from builder.cli._entries import EntryView, add_entry_commands
from builder.cli._output import console, human_size, image_line
from builder.refs import image_tags

app = typer.Typer(help="Build, inspect and remove datasets.", no_args_is_help=True)


@app.command("build")
def build(
    directory: Path = typer.Argument(Path("."), help="Folder holding dataset.yaml."),
    no_image: bool = typer.Option(False, "--no-image", help="Build the package in the store only, no image."),
    no_load: bool = typer.Option(False, "--no-load", help="Write the image into the store's OCI layout only; no Docker engine needed."),
    base_image: str = typer.Option("swcli/base:bookworm-py3.11", "--base-image", help="Base of the dataset image."),
    dockerfile_only: Optional[Path] = typer.Option(None, "--dockerfile-only", help="Write the image's Dockerfile and context here instead of building it."),
) -> None:
    """Run the dataset.yaml slicer over the raw files, store the records as aligned shards, build swds/NAME."""
    from builder.cli._progress import record_progress
    from builder.build.pipeline import dataset_with_image

    def built(result) -> None:
        console.print(f"built dataset [bold]{result.entry.ref}[/bold]: {result.records} records in {result.volumes} "
                      f"shard(s), {human_size(result.entry.manifest['totals']['shard_bytes'])}, {result.seconds:.2f} s")

    with record_progress("slicing records") as progress:
        done = dataset_with_image(directory, base_image=base_image, no_image=no_image, load=not no_load,
                                  dockerfile_only=dockerfile_only, progress=progress, on_package=built,
                                  on_step=progress.step)
    if done.image is not None:
        console.print(f"wrote Dockerfile and context to {dockerfile_only}" if dockerfile_only else image_line(done.image),
                      markup=False)


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="Dataset ref (its swds image) or an image name."),
    directory: Path = typer.Argument(..., help="New folder to extract /dataset into."),
) -> None:
    """Extract a dataset image's /dataset (shards, index, manifest) to a host folder; it reads like a store entry."""
    from builder.images.build import export_dataset_image
    from builder.build.entry_image import image_for
    from builder.store import Store

    count = export_dataset_image(image_for("dataset", ref, Store()), directory)
    console.print(f"exported {count} files to {directory}")


def _fields(entry) -> list:
    m, totals = entry.manifest, entry.manifest.get("totals", {})
    return [
        ("version", entry.version),
        ("short", entry.short_version),
        ("created", entry.created),
        ("records", m.get("records")),
        ("shards", f"{totals.get('shards')} ({human_size(totals.get('shard_bytes', 0))})"),
        ("data", human_size(totals.get("data_bytes", 0))),
        ("alignment", m.get("attr", {}).get("alignment_size")),
        ("volume size", m.get("attr", {}).get("volume_size")),
        ("desc", m.get("desc")),
        ("tags", ", ".join(m.get("tag", []))),
        ("image", image_tags("dataset", entry.name, entry.version)[0]),
    ]


def _verify(entry) -> None:
    from builder.distribute.pulled_entry import verify_entry

    verify_entry(entry)


add_entry_commands(app, EntryView(
    "dataset", _fields, ["records", "size"],
    lambda e: [e.manifest.get("records"), human_size(e.manifest.get("totals", {}).get("shard_bytes", 0))],
    lambda e: {"records": e.manifest.get("records")}, verify=_verify))
add_push_command(app, "dataset")
