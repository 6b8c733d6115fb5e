"""torch's intra-op threads during a run: one for a one-record handler, the user's choice whenever there is one."""

from __future__ import annotations

import json

import pytest
import torch

from builder.errors import UsageError
from builder.evaluate.runner.threads import apply_threads, torch_threads


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_auto_gives_a_one_record_handler_one_thread_and_leaves_a_batching_one_alone():
    assert apply_threads(None, batching=True, before_handler=2) == 2
    assert torch.get_num_threads() == 2
    assert apply_threads(None, batching=False, before_handler=2) == 1
    assert torch.get_num_threads() == 1
    assert apply_threads(None, batching=False, before_handler=1) == 1  # one core: one thread, never zero
    torch.set_num_threads(4)  # a bigger machine: one core left for the runner, the rest for the model
    assert apply_threads(None, batching=False, before_handler=4) == 3


def test_the_users_choice_stands(monkeypatch):
    torch.set_num_threads(3)  # as a handler's __init__ might
    assert apply_threads(None, batching=False, before_handler=2) == 3
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert apply_threads(None, batching=False, before_handler=2) == 2


def test_an_explicit_count_and_zero():
    assert apply_threads(2, batching=False, before_handler=2) == 2
    assert apply_threads(1, batching=True, before_handler=2) == 1
    assert apply_threads(0, batching=False, before_handler=1) == 1  # 0: leave torch as it is
    with pytest.raises(UsageError, match="--threads must be >= 0"):
        apply_threads(-1, batching=False, before_handler=2)
    assert torch_threads() == torch.get_num_threads()


def test_a_run_records_its_threads_and_the_flag_is_checked(cli, tmp_path, tiny_dataset):
    from tests.helpers.models import HANDLER, MODEL_YAML

    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "__init__.py").write_text("")
    (model / "code" / "ppl.py").write_text("import torch  # noqa: F401\n" + HANDLER)
    (model / "models").mkdir()
    (model / "models" / "weights.json").write_text('{"offset": 0}')
    (model / "model.yaml").write_text(MODEL_YAML)
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    res = cli("model", "eval", model, "--dataset", "tiny", "-o", tmp_path / "auto")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["threads"] == 1
    assert torch.get_num_threads() == 2  # put back after the run: the next evaluate() here starts from the same
    res = cli("model", "eval", model, "--dataset", "tiny", "-o", tmp_path / "two", "--threads", "2")
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "two" / "run.json").read_text())["threads"] == 2
    assert (tmp_path / "two" / "results.jsonl").read_bytes() == (tmp_path / "auto" / "results.jsonl").read_bytes()
    res = cli("model", "eval", model, "--dataset", "tiny", "-o", tmp_path / "bad", "--threads", "-1")
    assert res.code == 2 and "--threads" in res.err
