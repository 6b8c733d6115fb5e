"""`info`, `list` and `remove`, registered once for each kind of store entry (dataset, model, runtime).

A kind differs only in what it shows: the fields of `info`, the columns of `list`. Those come in a
:class:`EntryView`; the commands themselves, the store calls and the broken-entry warnings are written once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import typer

from builder.cli._output import OutputFormat, console, print_fields, print_json, print_table, warn

Fields = list[tuple[str, Any]]


@dataclass(frozen=True)
class EntryView:
    kind: str
    fields: Callable[[Any], Fields]  # Entry -> (label, value) rows of `info`
    columns: list[str]  # `list` columns after name, version, created
    row: Callable[[Any], list]  # Entry -> values of those columns
    json_row: Callable[[Any], dict]  # Entry -> extra keys of `list -o json`
    verify: Callable[[Any], None] | None = None  # `info --verify`, where the kind can check its files
    sbom: Callable[[str], bytes] | None = None  # `info --sbom`: ref -> the SBOM's bytes (runtimes)
    remove_help: str = ""


def _show(view: EntryView, ref: str, output: OutputFormat, verify: bool, sbom: bool = False) -> None:
    from builder.store import Store

    if sbom:
        if view.sbom is None:
            raise typer.BadParameter(f"only runtime images carry an SBOM, not {view.kind} entries", param_hint="--sbom")
        data = view.sbom(ref)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)  # the bytes in the image, untouched
        sys.stdout.buffer.flush()
        return
    entry = Store().resolve(view.kind, ref)
    if verify:
        view.verify(entry)
    if output is OutputFormat.json:
        print_json(dict(entry.manifest, path=str(entry.path), **({"verified": True} if verify else {})))
        return
    rows = view.fields(entry) + [("path", entry.path)]
    if verify:
        rows.append(("verified", "every file checks out against the manifest"))
    print_fields(f"{view.kind} {entry.name}", rows)


def add_entry_commands(app: typer.Typer, view: EntryView) -> None:
    kind = view.kind
    ref_help = f"name, name:version, name:short, name:latest, or a {kind} entry directory."
    output_option = typer.Option(OutputFormat.table, "--output", "-o", help="table or json.")
    sbom_option = typer.Option(False, "--sbom", hidden=view.sbom is None,
                               help="Print the image's CycloneDX SBOM (JSON, exactly the bytes in the image).")

    if view.verify is not None:
        @app.command("info")
        def info(ref: str = typer.Argument(..., help=ref_help), output: OutputFormat = output_option,
                 verify: bool = typer.Option(False, "--verify", help="Re-read every file and check it against the manifest."),
                 sbom: bool = sbom_option) -> None:
            _show(view, ref, output, verify, sbom)
    else:
        @app.command("info")
        def info(ref: str = typer.Argument(..., help=ref_help), output: OutputFormat = output_option,
                 sbom: bool = sbom_option) -> None:
            _show(view, ref, output, False, sbom)
    info.__doc__ = (f"Show a {kind}'s manifest" + ("; with --verify, check its files against it" if view.verify else "")
                    + ("; with --sbom, print its image's SBOM." if view.sbom else "."))

    @app.command("list")
    def list_(output: OutputFormat = output_option) -> None:
        from builder.store import Store

        entries, problems = Store().scan(kind)
        for problem in problems:
            warn(f"skipped {problem}")
        if output is OutputFormat.json:
            print_json([{"name": e.name, "version": e.version, "created": e.created, **view.json_row(e),
                         "path": str(e.path)} for e in entries])
            return
        print_table(None, ["name", "version", "created", *view.columns],
                    [(e.name, e.short_version, e.created, *view.row(e)) for e in entries])

    list_.__doc__ = f"List the {kind}s in the store, newest first; unreadable entries are named on stderr."

    @app.command("remove")
    def remove(ref: str = typer.Argument(..., help=f"The {kind} to delete (a ref; never a folder outside the store).")) -> None:
        from builder.store import Store

        entry = Store().remove(kind, ref)
        console.print(f"removed {kind} {entry.ref}")

    remove.__doc__ = view.remove_help or f"Delete a {kind} version from the store."
