"""One run id format: `model eval`'s new runs and the runs recorded from `--output`/`job run -o` (issue 21)."""

from __future__ import annotations

import re

from builder.evaluate.model_eval import new_run_id
from builder.runs.history import record_run, run_stamp
from builder.store import Store
from tests.helpers.run_folders import write_run

RUN_ID = re.compile(r"\d{8}-\d{6}-[A-Za-z0-9._+-]+")


def test_new_and_recorded_run_ids_share_one_format(swcli_home, tmp_path):
    fresh = new_run_id("cifar_net", "cifar10")
    recorded = record_run(write_run(tmp_path / "out", started="2026-12-07T13:49:39.123456+00:00"), Store())
    assert RUN_ID.fullmatch(fresh), fresh
    assert RUN_ID.fullmatch(recorded), recorded
    assert recorded == "20261207-134939-out"


def test_run_stamp_is_utc_and_survives_an_odd_start():
    assert run_stamp("2026-12-07T14:49:39+01:00") == "20261207-134939"
    assert re.fullmatch(r"\d{8}-\d{6}", run_stamp("yesterday"))
    assert re.fullmatch(r"\d{8}-\d{6}", run_stamp(None))
