"""Reading and checking the yaml specs users write: ``dataset.yaml`` and ``model.yaml``.

A spec error names the file, the line and the field, and for an unknown field the closest valid one, because the
person reading it is fixing a file by hand. Each spec is described once by a field table, read and checked by
:mod:`builder.yamldoc` (which serves ``runtime.yaml`` too); here are the tables, the checks of each kind beyond
its fields' types, and the spec objects builds work from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import SpecError
from builder.refs import image_ref_problem, name_problem
from builder.yamldoc import Field, YamlDoc, check_fields, read_yaml_mapping

CLASS_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

DEFAULT_ALIGNMENT_SIZE = "4k"
DEFAULT_VOLUME_SIZE = "64M"
DEFAULT_LAYER_SIZE = 256 << 20  # volumes per image layer; never below attr.volume_size when left unset
MAX_LAYER_SIZE = 4 << 30  # registries cap layer sizes (GHCR at 10 GB), and big layers push and pull slowly


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


def spec_file(path: str | Path, filename: str, command: str) -> Path:
    """``path`` itself when it is a file, else ``path/filename``; a missing folder or a folder without
    ``filename`` is a one-line :class:`SpecError` naming the folder and what ``command`` expects in it."""
    path = Path(path)
    if path.is_dir():
        if not (path / filename).exists():
            raise SpecError(path, f"no {filename} in this folder")
        return path / filename
    if not path.exists() and path.name != filename:  # a missing file named as such is read, and said missing
        raise SpecError(path, f"no such folder; {command} expects a folder holding {filename}")
    return path


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
    file = spec_file(path, "dataset.yaml", "swcli dataset build")
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
    file = spec_file(path, "model.yaml", "swcli model build")
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
