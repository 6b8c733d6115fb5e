"""Rendering ``templates/Dockerfile.j2``: one cached Jinja environment, strict about missing variables.

No Dockerfile text is built anywhere else. User-supplied values reach the template only through the ``json``
filter (a JSON string literal, valid in LABEL/ENV) or ``q`` (``shlex.quote``), so a name or description with
quotes, newlines or ``$(...)`` cannot add an instruction.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
from pathlib import Path

import jinja2

from builder import __version__


def templates_dir() -> Path:
    """``$SWCLI_TEMPLATES``; else ``builder/templates`` (where a wheel installs the top-level ``templates/``);
    else ``templates/`` beside the ``builder`` package (a repo checkout or an editable install)."""
    env = os.environ.get("SWCLI_TEMPLATES")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent
    installed = package / "templates"
    return installed if (installed / "Dockerfile.j2").is_file() else package.parent / "templates"


@functools.lru_cache(maxsize=4)
def environment(directory: str | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory or str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["q"] = shlex.quote
    env.filters["json"] = lambda value: json.dumps(" ".join(str(value).split()), ensure_ascii=True)
    return env


def render_dockerfile(kind: str, **context) -> str:
    """The Dockerfile of one image kind (``dataset``, ``runtime``, ``model``)."""
    context.setdefault("swcli_version", __version__)
    context.setdefault("extra_labels", [])
    context.setdefault("description", "")
    text = environment().get_template("Dockerfile.j2").render(kind=kind, **context)
    return text.strip() + "\n"
