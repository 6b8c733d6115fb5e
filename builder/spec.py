"""Reading and checking the yaml specs users write: ``dataset.yaml`` and ``model.yaml``.

A spec error names the file, the line and the field, and for an unknown field the closest valid one, because the
person reading it is fixing a file by hand. Field tables (:class:`Field`) describe each spec once; the same
checker (:func:`check_fields`) serves every spec kind, including ``runtime.yaml`` elsewhere.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.errors import SpecError
from builder.refs import image_ref_problem, name_problem

CLASS_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

DEFAULT_ALIGNMENT_SIZE = "4k"
DEFAULT_VOLUME_SIZE = "64M"
DEFAULT_LAYER_SIZE = 256 << 20  # volumes per image layer; never below attr.volume_size when left unset
MAX_LAYER_SIZE = 4 << 30  # registries cap layer sizes (GHCR at 10 GB), and big layers push and pull slowly


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


def parse_size(value: str | int) -> int:
    """``"4k" -> 4096``, ``"2M" -> 2097152``, ``"1GiB"``, ``512``; binary units. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use a number with an optional unit k, M, G, e.g. '4k', '2M')")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def _tags(doc: YamlDoc, value: Any, key: str = "tag") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not all(isinstance(t, (str, int, float)) for t in value):
        raise doc.error("expected a list of strings", key)
    return [str(t) for t in value]


def _check_name(doc: YamlDoc, name: str) -> str:
    """Docker's reference grammar for one path component (``builder.refs``), checked before anything is stored."""
    problem = name_problem(name)
    if problem:
        raise doc.error(problem, "name")
    return name


def _check_runtime_ref(doc: YamlDoc, value: str | None) -> str | None:
    """``run.runtime``: a runtime ``NAME[:VERSION]`` or an image reference; both fit the image reference grammar."""
    if value is not None and image_ref_problem(value):
        raise doc.error(f"{value!r} is not a runtime NAME[:VERSION] or an image reference "
                        "([HOST[:PORT]/]NAME[:TAG][@DIGEST], lowercase NAME)", "run.runtime")
    return value


def _label_names(doc: YamlDoc, value: list | dict | None) -> dict[str, str] | None:
    """``labels:`` as a list (label value i -> names[i]) or a mapping {label value: name}; keys become ``str``."""
    if value is None:
        return None
    if not value:
        raise doc.error("is empty; list the label names or leave the field out", "labels")
    pairs = list(enumerate(value)) if isinstance(value, list) else list(value.items())
    out: dict[str, str] = {}
    for key, name in pairs:
        where = f"labels.{key}"
        if isinstance(key, bool) or not isinstance(key, (int, str)) or not str(key).strip():
            raise doc.error(f"a label value must be an integer or a non-empty string, got {key!r}", where)
        if not isinstance(name, str) or not name.strip():
            raise doc.error(f"expected a non-empty string as the label name, got {name!r}", where)
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise doc.error(f"a label name must be one line without control characters, got {name!r}", where)
        if str(key) in out:
            raise doc.error(f"label value {str(key)!r} is given twice", where)
        out[str(key)] = name
    return out


def _check_class_ref(doc: YamlDoc, value: str, key: str) -> str:
    if not CLASS_REF_RE.match(value.strip()):
        raise doc.error(f"expected 'module.path:ClassName', got {value!r}", key)
    return value.strip()


def _spec_file(path: str | Path, filename: str) -> Path:
    path = Path(path)
    return path / filename if path.is_dir() else path


# --------------------------------------------------------------------------------------------------- dataset

DATASET_FIELDS = {
    "name": Field((str,), required=True),
    "data_dir": Field((str,), required=True, help="folder with the raw data, relative to the yaml"),
    "data_filter": Field((str,), required=True, help="glob of data files, e.g. 'test_batch'"),
    "label_filter": Field((str,), required=True, help="glob of label files"),
    "process": Field((str,), required=True, help="the slicer, 'module:Class'"),
    "pip_req": Field((str,), default=None),
    "desc": Field((str,), default=""),
    "tag": Field((list, str), default=None),
    "attr": Field((dict,), default=None),
    "labels": Field((list, dict), default=None, help="label names: a list (value i -> name) or {value: name}"),
}
DATASET_ATTR_FIELDS = {
    "alignment_size": Field((str, int), default=DEFAULT_ALIGNMENT_SIZE),
    "volume_size": Field((str, int), default=DEFAULT_VOLUME_SIZE),
    "layer_size": Field((str, int), default=None, help="volumes per image layer, at most 4G (default 256M)"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A checked ``dataset.yaml``. Paths are resolved against the yaml's folder (``root``)."""

    path: Path
    root: Path
    name: str
    data_dir: Path
    data_filter: str
    label_filter: str
    process: str
    pip_req: str | None
    desc: str
    tag: list[str]
    alignment_size: int
    volume_size: int
    raw: dict = field(repr=False)
    label_names: dict[str, str] | None = None
    layer_size: int = DEFAULT_LAYER_SIZE


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """Read and check ``dataset.yaml`` (``path`` is the file or its folder)."""
    file = _spec_file(path, "dataset.yaml")
    doc = read_yaml_mapping(file)
    values = check_fields(doc, doc.data, DATASET_FIELDS)
    attr = check_fields(doc, values["attr"] or {}, DATASET_ATTR_FIELDS, prefix="attr.")
    sizes = {}
    for key in ("alignment_size", "volume_size", "layer_size"):
        if attr[key] is None:
            continue
        try:
            sizes[key] = parse_size(attr[key])
        except ValueError as err:
            raise doc.error(str(err), f"attr.{key}") from None
    alignment = sizes["alignment_size"]
    if alignment & (alignment - 1):
        raise doc.error(f"must be a power of two, got {attr['alignment_size']!r} ({alignment} bytes)", "attr.alignment_size")
    if sizes["volume_size"] < alignment:
        raise doc.error(
            f"{attr['volume_size']!r} is smaller than attr.alignment_size {attr['alignment_size']!r}", "attr.volume_size"
        )
    if "layer_size" not in sizes and sizes["volume_size"] > MAX_LAYER_SIZE:
        raise doc.error(f"{attr['volume_size']!r} is above 4G, the most an image layer (one volume at least) may hold",
                        "attr.volume_size")
    layer_size = sizes.get("layer_size", max(DEFAULT_LAYER_SIZE, sizes["volume_size"]))
    if layer_size > MAX_LAYER_SIZE:
        raise doc.error(f"{attr['layer_size']!r} is above 4G, the most an image layer may hold", "attr.layer_size")
    if layer_size < sizes["volume_size"]:
        raise doc.error(f"{attr['layer_size']!r} is smaller than attr.volume_size {attr['volume_size']!r}",
                        "attr.layer_size")
    root = file.resolve().parent
    return DatasetSpec(
        path=file,
        root=root,
        name=_check_name(doc, values["name"]),
        data_dir=(root / values["data_dir"]).resolve(),
        data_filter=values["data_filter"],
        label_filter=values["label_filter"],
        process=_check_class_ref(doc, values["process"], "process"),
        pip_req=values["pip_req"],
        desc=values["desc"] or "",
        tag=_tags(doc, values["tag"]),
        alignment_size=alignment,
        volume_size=sizes["volume_size"],
        raw=doc.data,
        label_names=_label_names(doc, values["labels"]),
        layer_size=layer_size,
    )


# ----------------------------------------------------------------------------------------------------- model

MODEL_FIELDS = {
    "version": Field((str, int, float), default="1.0"),
    "name": Field((str,), required=True),
    "model": Field((list, str), default=None, help="weight files, relative to the yaml"),
    "config": Field((list, str), default=None),
    "run": Field((dict,), default=None),
    # the seed's page prints `ppl:` unindented under an empty `run:`; accepted with a note
    "ppl": Field((str,), default=None),
    "pip_req": Field((str,), default=None),
    "desc": Field((str,), default=""),
    "tag": Field((list, str), default=None),
}
MODEL_RUN_FIELDS = {
    "ppl": Field((str,), required=True, help="the pipeline handler, 'module:Class'"),
    "runtime": Field((str,), default=None, help="runtime ref the model image is built on"),
}
PPL_NESTING_NOTE = "top-level 'ppl' was read as 'run.ppl'; the intended layout indents it under 'run:'"


@dataclass(frozen=True)
class ModelSpec:
    """A checked ``model.yaml``. ``model``/``config`` are paths relative to ``root``."""

    path: Path
    root: Path
    name: str
    version: str
    ppl: str
    runtime: str | None
    model: list[str]
    config: list[str]
    pip_req: str | None
    desc: str
    tag: list[str]
    raw: dict = field(repr=False)
    notes: list[str] = field(default_factory=list)


def _relative_paths(doc: YamlDoc, root: Path, value: Any, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise doc.error(f"expected a list of relative paths, got {item!r}", key)
        p = Path(item)
        if p.is_absolute() or ".." in p.parts:
            raise doc.error(f"{item!r} must be a path inside the model folder", key)
        out.append(p.as_posix())
    return out


def load_model_spec(path: str | Path) -> ModelSpec:
    """Read and check ``model.yaml`` (``path`` is the file or its folder)."""
    file = _spec_file(path, "model.yaml")
    doc = read_yaml_mapping(file)
    values = check_fields(doc, doc.data, MODEL_FIELDS)
    notes = []
    run = values["run"]
    if values["ppl"] is not None:
        if run and run.get("ppl"):
            raise doc.error("given both top-level and under 'run'; keep only run.ppl", "ppl")
        run = dict(run or {}, ppl=values["ppl"])
        notes.append(PPL_NESTING_NOTE)
    run = check_fields(doc, run or {}, MODEL_RUN_FIELDS, prefix="run.")
    root = file.resolve().parent
    return ModelSpec(
        path=file,
        root=root,
        name=_check_name(doc, values["name"]),
        version=str(values["version"]),
        ppl=_check_class_ref(doc, run["ppl"], "run.ppl"),
        runtime=_check_runtime_ref(doc, run["runtime"]),
        model=_relative_paths(doc, root, values["model"], "model"),
        config=_relative_paths(doc, root, values["config"], "config"),
        pip_req=values["pip_req"],
        desc=values["desc"] or "",
        tag=_tags(doc, values["tag"]),
        raw=doc.data,
        notes=notes,
    )
