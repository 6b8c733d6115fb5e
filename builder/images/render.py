"""Rendering ``templates/Dockerfile.j2``: one cached Jinja environment, strict about missing variables.

No Dockerfile text is built anywhere else, and no variable reaches the template raw. Each goes through a filter:
``json`` (a JSON string literal with ``$`` escaped: a literal value in LABEL/ENV, no variable expansion), ``ref``
(an image reference by ``builder.refs``), ``path`` (an absolute or relative POSIX path of plain characters),
``label_key`` (a reverse-DNS label key) or ``token`` (one word, for comments). The last four raise
:class:`TemplateValueError` instead of emitting anything else, so a value with a newline, a quote or ``$(...)``
cannot add an instruction even if a caller forgot to check it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
from pathlib import Path

import jinja2

from builder import __version__
from builder.errors import SwcliError
from builder.refs import image_ref_problem

KINDS = ("dataset", "runtime", "model")
_PATH_RE = re.compile(r"/?[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
_LABEL_KEY_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class TemplateValueError(SwcliError):
    """A value handed to the Dockerfile template does not fit where it goes (a caller skipped a check)."""


def templates_dir() -> Path:
    """``$SWCLI_TEMPLATES``; else ``builder/templates`` (where a wheel installs the top-level ``templates/``);
    else ``templates/`` beside the ``builder`` package (a repo checkout or an editable install)."""
    env = os.environ.get("SWCLI_TEMPLATES")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent
    installed = package / "templates"
    return installed if (installed / "Dockerfile.j2").is_file() else package.parent / "templates"


def json_string(value) -> str:
    """A double-quoted literal for LABEL/ENV: whitespace runs become one space, ``$`` is escaped (no expansion)."""
    return json.dumps(" ".join(str(value).split()), ensure_ascii=True).replace("$", "\\$")


def _defined(value):
    """A missing variable stays an ``UndefinedError`` (StrictUndefined), not a bad-value error."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def image_ref(value) -> str:
    problem = image_ref_problem(_defined(value))
    if problem:
        raise TemplateValueError(f"Dockerfile template: image {problem}")
    return value


def _matching(pattern: re.Pattern, what: str):
    def check(value) -> str:
        if not isinstance(_defined(value), str) or not pattern.fullmatch(value) or ".." in value.split("/"):
            raise TemplateValueError(f"Dockerfile template: {value!r} is not a valid {what}")
        return value

    return check


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
    env.filters["json"] = json_string
    env.filters["ref"] = image_ref
    env.filters["path"] = _matching(_PATH_RE, "path")
    env.filters["label_key"] = _matching(_LABEL_KEY_RE, "label key (lowercase reverse DNS, e.g. io.swcli.records)")
    env.filters["token"] = _matching(_TOKEN_RE, "word")
    return env


def render_dockerfile(kind: str, **context) -> str:
    """The Dockerfile of one image kind (``dataset``, ``runtime``, ``model``)."""
    if kind not in KINDS:
        raise TemplateValueError(f"Dockerfile template: unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")
    context.setdefault("swcli_version", __version__)
    context.setdefault("extra_labels", [])
    context.setdefault("description", "")
    text = environment().get_template("Dockerfile.j2").render(kind=kind, **context)
    return text.strip() + "\n"
