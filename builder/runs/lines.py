"""The lines of results.jsonl: one record's ``{"index","label","result","pr","error"}`` as its exact JSON text.

The text is what ``json.JSONEncoder(default=to_jsonable, allow_nan=False, separators=(",", ":"))`` writes, with
NaN and infinities as ``null`` (:func:`dump_line`, the reference). A record's values are usually a few plain ints,
floats, strings, None and lists of them (a label, a prediction, a row of probabilities), and the encoder's setup
per call costs more than their text; :func:`result_line` writes those shapes itself and hands anything else (a
tuple, a dict, a bool, numpy values, a NaN, a subclass) to :func:`dump_line`, so every line is byte for byte the
reference's (tests/runs/test_lines.py compares them over many shapes). The fast path runs no user code (only
exact built-in types are written), so falling back repeats nothing a handler could notice.

Floats are written by ``float.__repr__``, as the json module writes them; that repr is most of a line's cost when
it carries probabilities (about 0.6 us per 17-digit float on the 2-core test machine).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from builder.runs.folder import to_jsonable
from builder.text import json_safe

# one encoder for the whole run: json.dumps with non-default arguments builds a new encoder per call
_ENCODER = json.JSONEncoder(default=to_jsonable, allow_nan=False, separators=(",", ":"))
_LENIENT = json.JSONEncoder(default=to_jsonable, separators=(",", ":"))
_LABELS: dict[bytes, str] = {}  # raw label bytes -> the text of list(label): a dataset has few distinct labels
_LABELS_MAX = 4096
_float, _int = float.__repr__, int.__repr__


class _Slow(Exception):
    """A value the fast path does not write: the reference encoder writes the whole line."""


def dump_line(record: dict) -> str:
    """The reference: ``record`` as one compact strict-JSON line (no newline), NaN and infinities as null."""
    try:
        return _ENCODER.encode(record)
    except ValueError:  # a non-finite float somewhere: take the slow path once for this record
        return _ENCODER.encode(json_safe(json.loads(_LENIENT.encode(record))))


NEST_MAX = 32  # lists deeper than this go to the reference, which alone decides what is nested too deeply


def _list(items: list, depth: int = 0) -> str:
    if not items:
        return "[]"
    if depth > NEST_MAX:
        raise _Slow
    kinds = set(map(type, items))
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is float:
            text = ",".join(map(_float, items))
            if "n" in text:  # inf, -inf, nan: the reference writes null
                raise _Slow
            return f"[{text}]"
        if kind is int:
            return f"[{','.join(map(_int, items))}]"
        if kind is list:
            return f"[{','.join(_list(item, depth + 1) for item in items)}]"
    return f"[{','.join(_value(item, depth + 1) for item in items)}]"


def _value(value: Any, depth: int = 0) -> str:
    kind = type(value)
    if kind is int:
        return _int(value)
    if kind is float:
        text = _float(value)
        if "n" in text:
            raise _Slow
        return text
    if value is None:
        return "null"
    if kind is list:
        return _list(value, depth)
    if kind is str:
        return _string(value)
    raise _Slow


def result_line(index: Any, label: Any, result: Any, pr: Any) -> str:
    """The line of a record predicted: ``dump_line({"index", "label", "result", "pr", "error": None})``.

    Raises what the reference raises for a value JSON cannot hold (TypeError, ValueError for a cycle,
    RecursionError...)."""
    try:
        if type(index) is not int:
            raise _Slow
        return (f'{{"index":{_int(index)},"label":{_value(label)},"result":{_value(result)},"pr":{_value(pr)},'
                '"error":null}')
    except (_Slow, RecursionError):
        return dump_line({"index": index, "label": label, "result": result, "pr": pr, "error": None})


def label_text(raw: Any) -> str | None:
    """The JSON text of ``list(raw)`` for a label's bytes (what the default ``handle_label`` returns), from a
    cache: a dataset's labels repeat. None when ``raw`` is not bytes."""
    text = _LABELS.get(raw) if type(raw) is bytes else None
    if text is None and type(raw) is bytes:
        text = f"[{','.join(map(_int, raw))}]" if raw else "[]"
        if len(_LABELS) < _LABELS_MAX and len(raw) <= 64:
            _LABELS[raw] = text
    return text


def labelled_line(index: Any, label_json: str, result: Any, pr: Any) -> str:
    """:func:`result_line` for a label already written as JSON text (:func:`label_text`)."""
    try:
        if type(index) is not int:
            raise _Slow
        written = _int(result) if type(result) is int else _value(result)  # the commonest shapes inline
        probabilities = "null" if pr is None else _value(pr)
        return f'{{"index":{index},"label":{label_json},"result":{written},"pr":{probabilities},"error":null}}'
    except (_Slow, RecursionError):
        return dump_line({"index": index, "label": json.loads(label_json), "result": result, "pr": pr, "error": None})
