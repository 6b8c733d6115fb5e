"""The evaluation runner: the seed's handler semantics, batching, ignore_error, outputs on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from builder.api.model import PipelineHandler
from builder.errors import EvalError
from builder.evaluate.runner.run import ResultsLoader, run_evaluation
from builder.runs.folder import EvalContext
from tests.helpers.handlers import Batched, SeedStyle, predict, records


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_seed_style_handler_end_to_end(tmp_path):
    handler = SeedStyle()
    ctx = EvalContext(dataset_name="toy", dataset_version="v1", handler="x:SeedStyle")
    result = run_evaluation(handler, records(), tmp_path, context=ctx)
    assert result.ok
    lines = read_lines(tmp_path / "results.jsonl")
    assert [line["index"] for line in lines] == list(range(30))
    assert lines[3] == {"index": 3, "label": [0], "result": [0], "pr": [predict(3)[1].tolist()], "error": None}
    assert handler.seen_kw[4] == {"index": 4, "label": bytes([1]), "dataset_name": "toy", "dataset_version": "v1"}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    truth = [r.label[0] for r in records()]
    preds = [predict(r.data[0])[0] for r in records()]
    assert metrics["summary"]["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(preds)))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "succeeded" and run["records"] == {"total": 30, "ok": 30, "failed": 0}
    assert run["dataset"] == {"name": "toy", "version": "v1"} and run["batch_size"] == 1


def test_batched_handler_gives_identical_results(tmp_path):
    run_evaluation(SeedStyle(), records(), tmp_path / "one")
    handler = Batched(batch_size=4)
    run_evaluation(handler, records(), tmp_path / "many")
    assert (tmp_path / "one" / "results.jsonl").read_text() == (tmp_path / "many" / "results.jsonl").read_text()
    assert (tmp_path / "one" / "metrics.json").read_text() == (tmp_path / "many" / "metrics.json").read_text()
    assert handler.seen_kw[0]["indices"] == [0, 1, 2, 3] and len(handler.seen_kw) == 8  # 30 records / 4
    overridden = Batched(batch_size=4)
    result = run_evaluation(overridden, records(), tmp_path / "ten", batch_size=10)
    assert len(overridden.seen_kw) == 3 and result.run["batch_size"] == 10


def test_batch_size_on_a_one_record_handler_is_refused(tmp_path):
    with pytest.raises(EvalError, match="takes one record per ppl call"):
        run_evaluation(SeedStyle(), records(), tmp_path, batch_size=8)


def test_batch_returning_wrong_length_names_the_range(tmp_path):
    class Short(Batched):
        def ppl(self, data, **kw):
            return super().ppl(data, **kw)[:-1]

    with pytest.raises(EvalError, match="records 0-3: batched ppl returned 3 outputs for 4 records"):
        run_evaluation(Short(batch_size=4), records(), tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_ignore_error_counts_logs_and_skips(tmp_path):
    logged = []
    result = run_evaluation(SeedStyle(ignore_error=True), records(), tmp_path, log=logged.append)
    failed = [r.index for r in records() if r.data == b"\x05"]
    assert result.run["records"] == {"total": 30, "ok": 30 - len(failed), "failed": len(failed)}
    assert logged == [f"record {i}: ppl raised ValueError: cannot read five (skipped: ignore_error=True)" for i in failed]
    lines = read_lines(tmp_path / "results.jsonl")
    assert [line["index"] for line in lines if line["error"]] == failed
    assert sum(1 for _ in ResultsLoader(tmp_path / "results.jsonl")) == 30 - len(failed)
    assert json.loads((tmp_path / "metrics.json").read_text())["record_count"] == 30 - len(failed)


def test_error_without_ignore_stops_naming_the_record_and_keeps_partial_results(tmp_path):
    class Fails(SeedStyle):
        def ppl(self, data, **kw):
            if kw["index"] == 12:
                raise RuntimeError("GPU on fire")
            return super().ppl(data, **kw)

    with pytest.raises(EvalError, match="record 12: ppl raised RuntimeError: GPU on fire"):
        run_evaluation(Fails(), records(), tmp_path)
    assert len(read_lines(tmp_path / "results.jsonl.partial")) == 12
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "metrics.json").exists()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and "record 12" in run["error"] and run["records"]["ok"] == 12


def test_handle_label_raising_is_treated_like_ppl_raising(tmp_path):
    class BadLabel(SeedStyle):
        def handle_label(self, label, **kw):
            if kw["index"] == 2:
                raise KeyError("no such class")
            return super().handle_label(label)

    with pytest.raises(EvalError, match="record 2: handle_label raised KeyError"):
        run_evaluation(BadLabel(), records(), tmp_path)


def test_defaults_without_cmp_or_handle_label(tmp_path):
    class Plain(PipelineHandler):
        def ppl(self, data, **kw):
            return {"echo": data[0], "score": np.float32(0.5)}

    result = run_evaluation(Plain(), records(5), tmp_path)
    assert result.metrics == {"kind": "counts", "records": 5, "ok": 5, "failed": 0}
    line = read_lines(tmp_path / "results.jsonl")[1]
    assert line == {"index": 1, "label": [1], "result": {"echo": 1, "score": 0.5}, "pr": None, "error": None}


def test_non_finite_scores_become_null(tmp_path):
    class Overflow(PipelineHandler):
        def ppl(self, data, **kw):
            return [0], [[float("inf"), 1.0]]

    run_evaluation(Overflow(), records(2), tmp_path)
    assert read_lines(tmp_path / "results.jsonl")[0]["pr"] == [[None, 1.0]]


def test_unwritable_output_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a dir")
    with pytest.raises(EvalError, match="is not writable"):
        run_evaluation(SeedStyle(), records(), target / "out")


def test_nothing_predicted_is_an_error(tmp_path):
    class Always(SeedStyle):
        def __init__(self):
            super().__init__(ignore_error=True)

        def ppl(self, data, **kw):
            raise ValueError("nope")

    with pytest.raises(EvalError, match="no record was predicted"):
        run_evaluation(Always(), records(3), tmp_path, log=lambda m: None)


def nested(depth):
    value = [1]
    for _ in range(depth):
        value = [value]
    return value


def cyclic():
    value = []
    value.append(value)
    return value


class Opaque:
    pass


# what a handler may hand back that JSON cannot hold: an object, a cycle, and nesting thousands deep
UNSTORABLE = [
    (Opaque, "TypeError: Opaque is not JSON-serialisable"),
    (cyclic, "ValueError: Circular reference detected"),
    (lambda: {(1, 2): "tuple key"}, "TypeError: keys must be str"),
    (lambda: nested(5000), "(nested too deeply): RecursionError"),
]


class Returns(SeedStyle):
    """ppl returns ``make()`` for record 4 (or its label does, with ``in_label``), normal outputs otherwise."""

    def __init__(self, make, *, in_label=False, ignore_error=False, cmp_returns=None):
        super().__init__(ignore_error=False)
        self.ignore_error, self.make, self.in_label, self.cmp_returns = ignore_error, make, in_label, cmp_returns

    def ppl(self, data, **kw):
        if kw["index"] == 4 and not self.in_label:
            return self.make()
        pred, scores = predict(data[0])
        return [pred], np.asarray([scores])

    def handle_label(self, label, **kw):
        return self.make() if kw["index"] == 4 and self.in_label else super().handle_label(label)

    def cmp(self, data_loader):
        return self.cmp_returns() if self.cmp_returns else super().cmp(data_loader)


@pytest.mark.parametrize(("make", "why"), UNSTORABLE)
@pytest.mark.parametrize("in_label", [False, True])
def test_an_output_json_cannot_hold_fails_its_record_by_name(tmp_path, make, why, in_label):
    what = "handle_label" if in_label else "ppl"
    with pytest.raises(EvalError) as info:
        run_evaluation(Returns(make, in_label=in_label), records(10), tmp_path)
    message = str(info.value)
    assert message.startswith(f"record 4: what {what} returned cannot be stored as JSON") and why in message
    assert len(message.splitlines()) == 1 and len(message) < 300
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == message and run["records"]["ok"] == 4
    assert [line["index"] for line in read_lines(tmp_path / "results.jsonl.partial")] == [0, 1, 2, 3]


@pytest.mark.parametrize(("make", "why"), UNSTORABLE)
def test_with_ignore_error_an_unstorable_output_is_one_failed_record(tmp_path, make, why):
    logged = []
    result = run_evaluation(Returns(make, ignore_error=True), records(10), tmp_path, log=logged.append)
    assert result.ok and result.run["records"] == {"total": 10, "ok": 9, "failed": 1}
    assert len(logged) == 1 and logged[0].startswith("record 4: what ppl returned cannot be stored as JSON")
    lines = read_lines(tmp_path / "results.jsonl")
    assert [line["index"] for line in lines] == list(range(10))
    assert lines[4]["result"] is None and why in lines[4]["error"]
    assert json.loads((tmp_path / "metrics.json").read_text())["record_count"] == 9


@pytest.mark.parametrize(("make", "why"), UNSTORABLE)
def test_a_cmp_result_json_cannot_hold_names_metrics_json(tmp_path, make, why):
    with pytest.raises(EvalError) as info:
        run_evaluation(Returns(lambda: None, cmp_returns=make), records(10), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'metrics.json'}: what cmp returned cannot be stored as JSON") and why in message
    assert not (tmp_path / "metrics.json").exists() and len(read_lines(tmp_path / "results.jsonl")) == 10
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == message and run["records"]["ok"] == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_label_names_from_the_context_go_into_run_json(tmp_path):
    names = {"0": "zero", "1": "one", "2": "two"}
    ctx = EvalContext(dataset_name="toy", dataset_version="v1", label_names=names)
    result = run_evaluation(SeedStyle(), records(), tmp_path, context=ctx)
    assert result.run["dataset"] == {"name": "toy", "version": "v1", "label_names": names}
    assert json.loads((tmp_path / "run.json").read_text())["dataset"]["label_names"] == names
    assert "0" in json.loads((tmp_path / "metrics.json").read_text())["labels"]  # metrics keep numeric keys


def test_run_json_is_written_before_the_first_record(tmp_path):
    seen = []

    class Peek(SeedStyle):
        def ppl(self, data, **kw):
            if not seen:
                seen.append(json.loads((tmp_path / "run.json").read_text()))
            return super().ppl(data, **kw)

    run_evaluation(Peek(), records(3), tmp_path)
    assert seen[0]["status"] == "running" and (tmp_path / "run.json").stat().st_size < 4096
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "succeeded"
