"""`swcli eval gate --baseline IMAGE_REF`: the baseline is the newest evaluation attached to a model image in a real
registry (Debian's docker-registry) on the candidate's dataset, pulled into the history of a machine that has only
the candidate."""

from __future__ import annotations

import json
import shutil

from builder.store import Store
from tests.helpers.attach_world import attached_digest
from tests.helpers.cli import one_line_error


def test_gate_against_the_evaluations_attached_to_an_image(cli, world, monkeypatch, tmp_path):
    image, (older, newer), candidate = world["image"], world["runs"], world["other"]
    for run in (older, newer):
        assert attached_digest(cli("eval", "attach", run, image))
    source = Store().runs_dir / candidate

    # a CI machine: the candidate's run only, and the registry
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "ci-home"))
    shutil.copytree(source, Store().runs_dir / candidate)
    md = tmp_path / "summary.md"
    res = cli("eval", "gate", candidate, "--baseline", image, "--max-drop", "accuracy=0.01", "--md", md)
    one_line_error(res, f"run {candidate} fails the gate against baseline {newer}", "accuracy: candidate ",
                   "baseline 1.0000, max-drop 0.01 (floor 0.9900)")
    assert res.code == 2
    assert sorted(p.name for p in Store().runs_dir.iterdir()) == sorted([candidate, newer])  # the newest, pulled
    assert "Gate failed" in md.read_text() and "right → wrong 50" in md.read_text()

    passed = cli("eval", "gate", newer, "--baseline", image, "--min", "accuracy=1", "--max-drop", "macro-f1=0")
    assert passed.code == 0 and "gate passed" in passed.out, passed.err

    # a candidate on another version of the dataset: no attached evaluation to compare with
    other = tmp_path / "other-dataset"
    shutil.copytree(source, other)
    run = json.loads((other / "run.json").read_text())
    attached_version = run["dataset"]["version"][:12]
    run["dataset"]["version"] = "zzzzzzzzzzzzzzzz"
    (other / "run.json").write_text(json.dumps(run))
    one_line_error(cli("eval", "gate", other, "--baseline", image, "--min", "accuracy=0.5"),
                   f"no evaluation attached to {image} is on dataset tiny:zzzzzzzzzzzz",
                   f"attached: tiny:{attached_version}")
