"""The record browser's data (builder.console.records): a run's results as columns, filtered, sorted and paged;
the cache that reloads a changed run; the records that flipped between two runs; and how fast a 10k-record run
loads and pages."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from builder.console.records import MAX_LIMIT, RecordCache, RecordTable, flipped
from builder.runs.history import load_run
from builder.runs.schema import RunError
from tests.helpers.large_runs import large_results, write_large_run
from tests.helpers.run_folders import METRICS, write_run


def _table(tmp_path, results, metrics=None, name="run"):
    return RecordTable.load(load_run(write_run(tmp_path / name, results=results, metrics=metrics)))


def test_columns_codes_and_confidence_match_the_results(tmp_path):
    table = _table(tmp_path, None)  # the helper's four records over labels 0, 1, 2
    assert table.labels == ["0", "1", "2"]
    assert table.index.tolist() == [0, 1, 2, 3]
    assert table.label.tolist() == [0, 1, 1, 2] and table.pred.tolist() == [0, 1, 2, 2]
    assert table.right.tolist() == [True, True, False, True]
    assert table.confidence.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.8])


def test_labels_follow_all_labels_then_keys_seen_and_lists_are_flattened(tmp_path):
    metrics = {**METRICS, "all_labels": ["cat", "dog", "eel"]}
    metrics["confusion_matrix"] = {"normalize": None, "counts": [[0] * 3] * 3}
    results = [{"index": 5, "label": ["dog"], "result": ["yak"], "pr": [[0.2, 0.3, 0.5]], "error": None},
               {"index": 6, "label": "eel", "result": "eel", "pr": [1, 1, 2], "error": None}]
    table = _table(tmp_path, results, metrics)
    assert table.labels == ["cat", "dog", "eel", "yak"]
    assert table.query() == (2, [
        {"index": 5, "label": "dog", "pred": "yak", "confidence": None, "right": False, "error": False},
        {"index": 6, "label": "eel", "pred": "eel", "confidence": 0.5, "right": True, "error": False}])


def test_records_without_usable_scores_have_no_confidence(tmp_path):
    results = [{"index": i, "label": 0, "result": 1, "pr": pr, "error": None}
               for i, pr in enumerate((None, [], [0, 0, 0], ["a", 1, 2], [[1], [2], [3]], [1.0]))]
    table = _table(tmp_path, results)
    assert all(math.isnan(c) for c in table.confidence)


def test_failed_records_are_listed_but_neither_right_nor_wrong(tmp_path):
    results = [{"index": 0, "label": 1, "result": 1, "pr": None, "error": None},
               {"index": 1, "error": "boom"},
               {"index": 2, "label": 2, "error": "boom"},
               {"index": 3, "label": 2, "result": 0, "pr": None, "error": None}]
    table = _table(tmp_path, results)
    total, rows = table.query()
    assert total == 4
    assert rows[1] == {"index": 1, "label": None, "pred": None, "confidence": None, "right": False, "error": True}
    assert rows[2]["label"] == "2" and rows[2]["pred"] is None
    assert [r["index"] for r in table.query(correct=True)[1]] == [0]
    assert [r["index"] for r in table.query(correct=False)[1]] == [3]
    assert [r["index"] for r in table.query(true="2")[1]] == [2, 3]


def test_filters_sorts_and_pages(tmp_path):
    run = load_run(write_large_run(tmp_path / "big", 1000, failed_every=31, unscored_every=17))
    table = RecordTable.load(run)
    lines = {r["index"]: r for r in large_results(1000, failed_every=31, unscored_every=17)}
    some = next(r for r in lines.values() if r.get("error") is None and r["label"] != r["result"])
    true, pred = str(some["label"][0]), str(some["result"][0])
    total, rows = table.query(true=true, pred=pred, limit=MAX_LIMIT)
    expected = sorted(i for i, r in lines.items() if r.get("error") is None and r["label"] == some["label"]
                      and r["result"] == some["result"])
    assert total == len(expected) > 0 and [r["index"] for r in rows] == expected
    total, rows = table.query(correct=False, sort="-confidence", limit=1000)
    wrong = [i for i, r in lines.items() if r.get("error") is None and r["label"] != r["result"]]
    assert total == len(wrong) == len(rows[:MAX_LIMIT]) + max(0, len(wrong) - MAX_LIMIT)
    scored = [r["confidence"] for r in rows if r["confidence"] is not None]
    assert scored == sorted(scored, reverse=True) and rows.index(next(r for r in rows if r["confidence"] is None)) == len(scored)
    _, ascending = table.query(sort="confidence", limit=MAX_LIMIT)
    assert [r["confidence"] for r in ascending] == sorted(r["confidence"] for r in ascending)
    _, page = table.query(correct=True, offset=10, limit=5)
    _, whole = table.query(correct=True, limit=15)
    assert page == whole[10:15]
    assert table.query(true="no such label") == (0, [])
    assert table.query(offset=5000) == (1000, [])


@pytest.mark.parametrize("kwargs, word", [({"sort": "name"}, "sort"), ({"offset": -1}, "offset"), ({"limit": -5}, "limit"),
                                          ({"limit": "9"}, "limit"), ({"offset": True}, "offset"), ({"true": 3}, "true"),
                                          ({"correct": "yes"}, "correct")])
def test_bad_query_values_are_one_line_value_errors(tmp_path, kwargs, word):
    table = _table(tmp_path, None)
    with pytest.raises(ValueError) as err:
        table.query(**kwargs)
    assert str(err.value).startswith(word) and "\n" not in str(err.value)


def test_a_bad_results_line_is_a_run_error_naming_it(tmp_path):
    folder = write_run(tmp_path / "run")
    (folder / "results.jsonl").write_text('{"index": 0, "label": 1, "result": 1}\n{"index": "x"}\n')
    with pytest.raises(RunError, match=r"results.jsonl:2: field 'index'"):
        RecordTable.load(load_run(folder))


def test_an_index_beyond_64_bits_is_a_run_error_naming_the_file(tmp_path):
    folder = write_run(tmp_path / "run", results=[{"index": 2**70, "label": 1, "result": 1, "pr": None, "error": None}])
    with pytest.raises(RunError, match=r"results.jsonl: a record index beyond 64 bits"):
        RecordTable.load(load_run(folder))


def test_flipped_compares_records_of_both_runs_that_did_not_fail(tmp_path):
    def line(i, label, result, error=None):
        return {"index": i, "label": label, "result": result, "pr": None, "error": error}

    a = _table(tmp_path, [line(0, 1, 1), line(1, 1, 0), line(2, 1, 1), line(3, 1, 0), line(4, 1, 1), line(5, 1, 1)], name="a")
    b = _table(tmp_path, [line(3, 1, 1), line(2, 1, 0), line(0, 1, 1), line(1, 1, 1), line(4, 1, 0, "boom"),
                          line(9, 1, 0)], name="b")
    result = flipped(a, b)
    assert result["right_to_wrong"].tolist() == [2]
    assert result["wrong_to_right"].tolist() == [1, 3]


def test_the_cache_reloads_a_changed_run_and_keeps_a_bounded_number(tmp_path):
    cache = RecordCache(max_tables=2)
    runs = [load_run(write_run(tmp_path / f"r{n}")) for n in range(3)]
    first = cache.get(runs[0])
    assert cache.get(runs[0]) is first
    with open(runs[0].path / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"index": 4, "label": 0, "result": 1, "pr": None, "error": None}) + "\n")
    reloaded = cache.get(runs[0])
    assert reloaded is not first and len(reloaded) == 5
    cache.get(runs[1])
    cache.get(runs[0])  # r0 now the most recently used
    cache.get(runs[2])  # drops r1
    assert len(cache) == 2 and cache.get(runs[0]) is reloaded
    os.unlink(runs[2].path / "results.jsonl")
    with pytest.raises(RunError, match="results.jsonl is missing"):
        cache.get(runs[2])


def _best_of(times: int, call):
    best, value = math.inf, None
    for _ in range(times):
        started = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - started)
    return best, value


def test_a_10k_record_run_loads_and_pages_quickly(tmp_path):
    run = load_run(write_large_run(tmp_path / "big", 10_000, failed_every=97, unscored_every=50))
    seconds, table = _best_of(3, lambda: RecordTable.load(run))
    assert len(table) == 10_000
    assert seconds < 0.3, f"loading 10k records took {seconds:.3f}s"
    queries = [dict(sort="-confidence", correct=False), dict(true="3", sort="confidence"), dict(offset=9_000),
               dict(true="1", pred="7", correct=False, sort="-confidence"), dict(sort="confidence", offset=4_000)]
    for query in queries:
        seconds, (total, rows) = _best_of(3, lambda: table.query(**query))
        assert rows and total >= len(rows)
        assert seconds < 0.05, f"{query}: a page of 200 took {seconds:.3f}s"


def test_rows_for_follows_the_order_asked_and_names_missing_records(tmp_path):
    from builder.console.records import RecordTable
    from builder.runs.history import load_run
    from tests.helpers.large_runs import write_large_run

    table = RecordTable.load(load_run(write_large_run(tmp_path / "r", 50)))
    rows = table.rows_for([7, 3, 999])
    assert [r["index"] for r in rows] == [7, 3, 999]
    assert rows[0] == table.query(offset=7, limit=1)[1][0]
    assert rows[2]["label"] is None and rows[2]["right"] is None
