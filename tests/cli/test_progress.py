"""What the progress displays show: the eval bar's total, the build steps on a terminal and in a log (issue 21)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from builder.cli._progress import _BarUpdate, _columns, record_progress, step_progress
from builder.evaluate.model_eval import EvalOptions, evaluate


def _shown(draw) -> str:
    out = io.StringIO()
    with Progress(*_columns(), console=Console(file=out, force_terminal=True, width=120), auto_refresh=False) as bar:
        draw(_BarUpdate(bar, bar.add_task("evaluating", total=None)))
        bar.refresh()
    return out.getvalue().rsplit("\x1b[2K", 1)[-1]  # the last frame


def test_the_eval_bar_shows_the_total_it_is_given():
    def draw(update):
        update.set_total(9216)
        update(512)

    text = _shown(draw)
    assert "512/9216" in text and "/?" not in text


def test_a_step_replaces_the_bar_with_a_line_naming_it():
    def draw(update):
        update(5)
        update.step("building the Debian base image (first time, ~40 s)")

    text = _shown(draw)
    assert "building the Debian base image" in text and "evaluating" not in text


@pytest.mark.parametrize("shard", [None, "1/3"])
def test_evaluate_gives_the_record_count_before_progress(cli, model_dir, tiny_dataset, tmp_path, shard):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    heard: list = []
    evaluate(EvalOptions(model=str(model_dir), dataset="tiny", output_dir=tmp_path / "out", shard=shard, workers=1),
             progress=lambda done: heard.append(("done", done)), on_total=lambda n: heard.append(("total", n)))
    total = 50 if shard is None else 17
    assert heard[0] == ("total", total) and heard[-1] == ("done", total), heard


def test_piped_steps_are_one_line_each_on_stderr(capsys):
    with step_progress(tty=False) as on_step:
        on_step("building runtime m-env for model m")
    with record_progress("slicing records", tty=False) as progress:
        progress(10)
        progress.set_total(10)
        progress.step("building the Debian base image (first time, ~40 s)")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["building runtime m-env for model m...",
                                         "building the Debian base image (first time, ~40 s)..."]
