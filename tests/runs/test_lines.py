"""results.jsonl's lines: the fast encoder (builder.runs.lines) writes byte for byte what the runner's json
encoder wrote before it (the reference below, as ppl_phase.dump_line was), over many shapes and random values."""

from __future__ import annotations

import enum
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.runs.folder import to_jsonable
from builder.runs.lines import dump_line, label_text, labelled_line, result_line
from builder.text import json_safe

_ENCODER = json.JSONEncoder(default=to_jsonable, allow_nan=False, separators=(",", ":"))
_LENIENT = json.JSONEncoder(default=to_jsonable, separators=(",", ":"))


def reference(record: dict) -> str:
    """The runner's line before issue 20 (builder/evaluate/runner/ppl_phase.py at 6ee247e)."""
    try:
        return _ENCODER.encode(record)
    except ValueError:
        return _ENCODER.encode(json_safe(json.loads(_LENIENT.encode(record))))


def outcome(fn, *args):
    """What ``fn(*args)`` returned, or the type and text of what it raised."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - compared, not handled
        return type(err), str(err)


def same(index, label, result, pr) -> None:
    expected = outcome(reference, {"index": index, "label": label, "result": result, "pr": pr, "error": None})
    assert outcome(result_line, index, label, result, pr) == expected


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


class Real(float):
    pass


FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1 / 3, 1e-7, 1e-5, 1e-4, 0.0001234, 1e15, 1e16, 1e22, 1.7976931348623157e308,
          5e-324, 2.5e-308, 123456789012345678.0, float("nan"), float("inf"), float("-inf")]
SCALARS = [0, 1, -1, 2**63, -(2**70), True, False, None, "", "a", "é", "日本", "\U0001f600", 'q"uote\\', "\n\t\x00\x1f\x7f",
           "\u2028\u202e", Colour.RED, Text("t"), Real(0.5), np.float64(0.25), np.float32(0.1), np.int64(7), np.bool_(True),
           *FLOATS]
SHAPES = [
    *SCALARS,
    [], [[]], [[], []], [3], [1, 2, 3], [True, 1], [1, 1.0], [0.5, None], [float("nan")], [[0.1, 0.2], [0.3]],
    [FLOATS], [[FLOATS]], [[1, 2], [3.5, "x"]], (1, 2), (0.5,), ((1, 2), [3]), {"a": 1}, {"b": [0.1, float("inf")]},
    np.array([0.1, 0.2]), np.array([[1, 2], [3, 4]]), [np.float64(0.1)], b"ab", bytearray(b"\x00\xff"),
    {3, 1, 2}, [[[[[0.5]]]]], ["a", ["b", [1e22]]],
]


@pytest.mark.parametrize("value", SHAPES, ids=repr)
def test_every_shape_as_label_result_and_pr(value):
    same(0, value, 3, None)
    same(12, [3], value, None)
    same(99, [3], [3], value)
    same(7, value, value, value)


@pytest.mark.parametrize("index", [0, 5, 2**40, True, 3.0, "1", None, np.int64(4), Colour.RED])
def test_indices(index):
    same(index, [1], 1, [0.5])


def test_what_json_cannot_hold_raises_as_the_reference_does():
    cycle: list = []
    cycle.append(cycle)
    deep: list = [0.5]
    for _ in range(5000):
        deep = [deep]
    for bad in (object(), cycle, deep, [1, object()], {1: float("nan")}, {(1, 2): 3}):
        same(1, [0], bad, None)
        same(1, bad, 0, None)


def test_labels_from_the_cache():
    for raw in (b"", b"\x00", b"\x03", bytes(range(256)), b"\x01\x02" * 40):
        text = label_text(raw)
        assert text == label_text(raw) == json.dumps(list(raw), separators=(",", ":"))
        for pr in (None, [[0.1, float("nan")]], [object()]):
            expected = outcome(reference, {"index": 4, "label": list(raw), "result": [1], "pr": pr, "error": None})
            assert outcome(labelled_line, 4, text, [1], pr) == expected
    assert label_text("3") is None and label_text(bytearray(b"1")) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=6) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20)


@settings(max_examples=600, deadline=None)
@given(st.integers(min_value=0, max_value=2**40), json_values, json_values, json_values)
def test_random_values(index, label, result, pr):
    same(index, label, result, pr)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.floats(width=64), max_size=12), max_size=3), st.lists(st.integers(), max_size=4))
def test_random_probabilities(pr, result):
    same(1, result, result, pr)
    written = result_line(1, [0], result, pr).partition('"pr":')[2].removesuffix(',"error":null}')
    assert all(math.isfinite(x) for row in pr for x in row) == ("null" not in written)


@pytest.mark.parametrize("value", SHAPES, ids=repr)
def test_every_shape_with_a_cached_label(value):
    for result, pr in ((value, None), (3, value), (value, value), (float("nan"), value)):
        expected = outcome(reference, {"index": 9, "label": [2], "result": result, "pr": pr, "error": None})
        assert outcome(labelled_line, 9, label_text(b"\x02"), result, pr) == expected


def test_deep_lists_are_left_to_the_reference_whatever_the_recursion_limit():
    import sys

    value = [1]
    for _ in range(5000):
        value = [value]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        try:
            expected = dump_line({"index": 0, "label": [1], "result": value, "pr": None, "error": None})
        except RecursionError:
            expected = RecursionError
        try:
            got = result_line(0, [1], value, None)
        except RecursionError:
            got = RecursionError
    finally:
        sys.setrecursionlimit(limit)
    assert got == expected
