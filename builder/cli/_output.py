"""Printing helpers shared by the command modules: rich tables for people, JSON for scripts, sizes."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from builder.text import json_safe, shown


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


# piped output is read by people in logs and by scripts: no hard line breaks in refs, and tables wide enough
# that ids and names are never cut to "…" (rich assumes 80 columns when it cannot ask a terminal)
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200


class _Console(Console):
    """A console whose printed strings have their control characters neutralised (:func:`builder.text.shown`):
    every line a command prints may hold a name, a ref or an error from a registry, an image or a pulled run.
    Markup in the strings still works; tables are made of :class:`Text` cells by :func:`print_table`."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(shown(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _Console(highlight=False, soft_wrap=True, width=_PIPED_WIDTH)
err_console = _Console(stderr=True, highlight=False, soft_wrap=True)  # a warning stays one line in logs


def cell(value: Any) -> Text:
    """A table cell or title as plain text (no markup), control characters neutralised; None is empty."""
    return Text("" if value is None else shown(value))


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def print_json(obj: Any) -> None:
    """``obj`` as JSON a strict reader accepts: NaN and infinities as null (JSON has neither); strings keep every
    character, escaped by JSON itself (non-ASCII as ``\\uXXXX``, so no control character reaches the terminal)."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


def print_table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """A table of plain-text cells (:func:`cell`): what a cell holds is never read as markup."""
    table = Table(title=None if title is None else cell(title), title_justify="left")
    for col in columns:
        table.add_column(cell(col))
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    console.print(table)


def print_fields(title: str, fields: list[tuple[str, Any]]) -> None:
    table = Table(title=cell(title), title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in fields:
        table.add_row(cell(key), cell(value))
    console.print(table)


def image_line(result, on: str = "") -> str:
    """One line about a written image: its tags, id, what the cache saved and what reached the engine."""
    sent = "not loaded (--no-load)" if result.bytes_sent is None else f"{human_size(result.bytes_sent)} sent to the engine"
    where = f" on {on}" if on else ""
    return (f"image {result.tags[0]} (+ :latest){where}: id {result.image_id[:19]}, {result.layers_written} layer(s) "
            f"written, {sent}, {result.seconds:.1f} s")


def note(message: str) -> None:
    err_console.print(f"note: {message}", markup=False)


def warn(message: str) -> None:
    err_console.print(f"swcli: warning: {message}", markup=False)
