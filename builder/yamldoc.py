"""A user's yaml, read safely and checked against a field table: the reader every spec file goes through.

:func:`read_yaml_mapping` parses a file once, with the line of every key (for errors), refusing duplicate keys,
recursive aliases and alias bombs (:data:`MAX_ALIAS_EXPANSION`). :func:`check_fields` checks a mapping against a
table of :class:`Field`: unknown keys (with the closest valid one), missing keys and types, each a
:class:`~builder.errors.SpecError` naming the file, line and field. ``dataset.yaml`` and ``model.yaml``
(:mod:`builder.spec`) and ``runtime.yaml`` (:mod:`builder.build.runtime`) are all read this way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.errors import SpecError


@dataclass(frozen=True)
class Field:
    """One key of a spec mapping: its accepted types, whether it must be there, its default."""

    types: tuple[type, ...]
    required: bool = False
    default: Any = None
    help: str = ""


@dataclass
class YamlDoc:
    """A parsed yaml mapping plus the line of every key (``"attr.volume_size" -> 14``) for error messages."""

    path: Path
    data: dict
    lines: dict[str, int]

    def error(self, message: str, key: str | None = None) -> SpecError:
        return SpecError(self.path, message, field=key, line=self.lines.get(key or "", None))


MAX_ALIAS_EXPANSION = 1000  # nodes reached again through aliases: enough for `<<: *defaults`, far from a bomb
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Walk:
    """One pass over a composed node tree: key lines, duplicate keys, and a bound on alias expansion.

    An alias is the same node object as its anchor, so a node seen before was reached through an alias; every such
    revisit counts against :data:`MAX_ALIAS_EXPANSION`, which stops a nested-anchor bomb after a few thousand steps
    instead of gigabytes. A node that contains itself is refused outright.
    """

    def __init__(self, path: Path, loader: yaml.SafeLoader):
        self.path = path
        self.loader = loader
        self.lines: dict[str, int] = {}
        self.seen: set[int] = set()
        self.expanded = 0
        self.open: set[int] = set()

    def error(self, node: yaml.Node, message: str, key: str | None = None) -> SpecError:
        return SpecError(self.path, message, field=key, line=node.start_mark.line + 1)

    def visit(self, node: yaml.Node, prefix: str = "") -> None:
        if id(node) in self.open:
            raise self.error(node, "an alias refers to a node that contains it (recursive yaml)")
        if id(node) in self.seen:
            self.expanded += 1
            if self.expanded > MAX_ALIAS_EXPANSION:
                raise self.error(node, f"aliases expand to more than {MAX_ALIAS_EXPANSION} nodes; "
                                       "write the values out instead of nesting anchors")
        self.seen.add(id(node))
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self._mapping(node, prefix)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.lines.setdefault(f"{prefix}{index}", item.start_mark.line + 1)
                self.visit(item, f"{prefix}{index}.")
        self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, prefix: str) -> None:
        first: dict[Any, int] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                key = self.loader.construct_object(key_node)
                if key in first:
                    raise SpecError(self.path, f"duplicate key {key_node.value!r} (first at line {first[key]}, again at line {line})",
                                    field=f"{prefix}{key_node.value}", line=line)
                first[key] = line
            self.lines[f"{prefix}{key_node.value}"] = line
            self.visit(value_node, f"{prefix}{key_node.value}.")
        # `<<: *base` keys: explicit keys above override them, so they only add lines for keys not written out
        for merged in merges:
            explicit = dict(self.lines)
            self.visit(merged, prefix)
            self.lines.update({k: v for k, v in explicit.items()})


def read_yaml_mapping(path: Path) -> YamlDoc:
    """Parse ``path`` as a yaml mapping; a missing file, bad syntax, a duplicate key, an alias bomb or a non-mapping
    is a :class:`SpecError`.

    The text is parsed once: composed into a node tree, checked (:class:`_Walk`), then constructed from that tree.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(path, f"cannot read: {err}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError(path, "the file is empty")
        walk = _Walk(path, loader)
        walk.visit(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(path, f"invalid yaml: {err.problem or err.context}", line=line) from None
    except yaml.YAMLError as err:
        raise SpecError(path, f"invalid yaml: {err}") from None
    except RecursionError:
        raise SpecError(path, "invalid yaml: nested too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        raise SpecError(path, "the file is empty")
    if not isinstance(data, dict):
        raise SpecError(path, f"expected a mapping of fields, got {type(data).__name__}", line=1)
    return YamlDoc(path, data, walk.lines)


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping", bool: "true/false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def check_fields(doc: YamlDoc, mapping: dict, fields: dict[str, Field], prefix: str = "") -> dict:
    """Validate ``mapping`` against ``fields``: unknown keys (with the closest valid one), missing keys, types.

    Returns a new dict with every declared field present (defaults filled in).
    """
    out: dict[str, Any] = {}
    for key in mapping:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid fields: {', '.join(fields)}"
            raise doc.error(f"unknown field{hint}", f"{prefix}{key}")
    for key, spec in fields.items():
        value = mapping.get(key)
        if value is None:
            if spec.required:
                raise doc.error("missing required field" + (f" ({spec.help})" if spec.help else ""), f"{prefix}{key}")
            out[key] = spec.default
            continue
        # yaml reads `version: 1.0` as a float; bool is an int subclass and must not pass as a number
        if isinstance(value, bool) and bool not in spec.types or not isinstance(value, spec.types):
            raise doc.error(f"expected {_type_names(spec.types)}, got {type(value).__name__} {value!r}", f"{prefix}{key}")
        out[key] = value
    return out
