"""`swcli dataset build | info | list | remove`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from builder.cli._registry import add_push_command
from builder.cli._output import OutputFormat, console, human_size, print_fields, print_json, print_table

app = typer.Typer(help="Build, inspect and remove datasets.", no_args_is_help=True)


@app.command("build")
def build(
    directory: Path = typer.Argument(Path("."), help="Folder holding dataset.yaml."),
    no_image: bool = typer.Option(False, "--no-image", help="Build the package in the store only, no image."),
    base_image: str = typer.Option("swcli/base:bookworm-py3.11", "--base-image", help="Base of the dataset image."),
    dockerfile_only: Optional[Path] = typer.Option(None, "--dockerfile-only", help="Write the image's Dockerfile and context here instead of building it."),
) -> None:
    """Run the dataset.yaml slicer over the raw files, store the records as aligned shards, build swds/NAME."""
    from builder.cli._progress import record_progress
    from builder.services.dataset_build import build_dataset

    with record_progress("slicing records") as progress:
        result = build_dataset(directory, progress=progress)
    entry = result.entry
    console.print(
        f"built dataset [bold]{entry.ref}[/bold]: {result.records} records in {result.volumes} shard(s), "
        f"{human_size(entry.manifest['totals']['shard_bytes'])}, {result.seconds:.2f} s"
    )
    if no_image:
        return
    from builder.images.build import build_dataset_image

    image = build_dataset_image(entry, base_image=base_image, dockerfile_only=dockerfile_only)
    console.print(f"wrote Dockerfile and context to {dockerfile_only}" if dockerfile_only
                  else f"image {image.tags[0]} (+ :latest), {image.seconds:.1f} s")


@app.command("info")
def info(
    ref: str = typer.Argument(..., help="name, name:version, name:short, name:latest, or a dataset directory."),
    verify: bool = typer.Option(False, "--verify", help="Re-read every shard and check its sha256 and records."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", help="table or json."),
) -> None:
    """Show a dataset's manifest; with --verify, check every shard against it."""
    from builder.services.dataset_build import verify_dataset
    from builder.store import Store

    entry = Store().resolve("dataset", ref)
    if verify:
        verify_dataset(entry)
    m = entry.manifest
    if output is OutputFormat.json:
        print_json(dict(m, path=str(entry.path), verified=verify or None))
        return
    totals = m.get("totals", {})
    print_fields(
        f"dataset {entry.name}",
        [
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
            ("image", f"swds/{entry.name}:{entry.version}"),
            ("path", entry.path),
        ]
        + ([("verified", "every shard and record checks out")] if verify else []),
    )


@app.command("list")
def list_(output: OutputFormat = typer.Option(OutputFormat.table, "--output", "-o", help="table or json.")) -> None:
    """List the datasets in the store, newest first."""
    from builder.store import Store

    entries = Store().list("dataset")
    if output is OutputFormat.json:
        print_json([{"name": e.name, "version": e.version, "created": e.created, "records": e.manifest.get("records"),
                     "path": str(e.path)} for e in entries])
        return
    print_table(
        None,
        ["name", "version", "created", "records", "size"],
        [(e.name, e.short_version, e.created, e.manifest.get("records"),
          human_size(e.manifest.get("totals", {}).get("shard_bytes", 0))) for e in entries],
    )


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="Dataset ref (its swds image) or an image name."),
    directory: Path = typer.Argument(..., help="New folder to extract /dataset into."),
) -> None:
    """Extract a dataset image's /dataset (shards, index, manifest) to a host folder; it reads like a store entry."""
    from builder.images.build import export_dataset_image
    from builder.services.job import image_of
    from builder.store import Store

    count = export_dataset_image(image_of("dataset", ref, Store()), directory)
    console.print(f"exported {count} files to {directory}")


@app.command("remove")
def remove(ref: str = typer.Argument(..., help="The dataset to delete.")) -> None:
    """Delete a dataset version from the store."""
    from builder.store import Store

    entry = Store().remove("dataset", ref)
    console.print(f"removed dataset {entry.ref}")


add_push_command(app, "dataset")
