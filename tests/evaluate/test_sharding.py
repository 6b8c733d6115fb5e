"""Sharded evaluation: for any N the merged metrics equal a single run's; bad specs and bad merges are refused."""

from __future__ import annotations

import json

import pytest

from builder.evaluate.sharding import Shard, ShardSpecError, parse_shard
from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.cli import one_line_error


@pytest.mark.parametrize(("spec", "env", "expected"), [
    ("0/3", {}, Shard(0, 3)), ("2/3", {}, Shard(2, 3)), (None, {}, None),
    (None, {"JOB_COMPLETION_INDEX": "4", "JOB_COMPLETION_COUNT": "7"}, Shard(4, 7)),
    ("1/2", {"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETION_COUNT": "7"}, Shard(1, 2)),
])
def test_parse_shard(spec, env, expected):
    assert parse_shard(spec, env) == expected


@pytest.mark.parametrize("spec", ["3/2", "0/0", "2/2", "-1/2", "a/b", "1", "1/2/3"])
def test_bad_shard_specs(spec):
    with pytest.raises(ShardSpecError):
        parse_shard(spec, {})


def test_index_without_count_is_refused():
    with pytest.raises(ShardSpecError, match="JOB_COMPLETION_COUNT is not"):
        parse_shard(None, {"JOB_COMPLETION_INDEX": "1"})


@pytest.mark.parametrize("total", [0, 1, 5, 29, 50])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 10])
def test_shards_cover_every_record_once_in_order(total, count):
    covered = [i for index in range(count) for i in range(*Shard(index, count).range(total))]
    assert covered == list(range(total))


@pytest.fixture()
def built(cli, model_dir, tiny_dataset, tmp_path):  # noqa: F811
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    single = tmp_path / "single"
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", single).code == 0
    return model_dir, single


def run_shards(cli, tmp_path, count, name="parts"):
    parts = []
    for index in range(count):
        out = tmp_path / f"{name}{count}" / str(index)
        res = cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", f"{index}/{count}", "-o", out)
        assert res.code == 0, res.err
        parts.append(out)
    return parts


@pytest.mark.parametrize("count", [1, 3, 7])
def test_merged_metrics_equal_a_single_run(cli, built, tmp_path, count):
    _, single = built
    parts = run_shards(cli, tmp_path, count)
    assert all(json.loads((p / "run.json").read_text())["status"] == "partial" for p in parts)
    assert not any((p / "metrics.json").exists() for p in parts)
    merged = tmp_path / "merged"
    res = cli("eval", "merge", *reversed(parts), "-o", merged)  # order of the arguments does not matter
    assert res.code == 0, res.err
    assert (merged / "results.jsonl").read_bytes() == (single / "results.jsonl").read_bytes()
    assert (merged / "metrics.json").read_bytes() == (single / "metrics.json").read_bytes()
    run = json.loads((merged / "run.json").read_text())
    assert run["records"] == {"total": 50, "ok": 50, "failed": 0} and len(run["merged_from"]) == count
    listed = [r["path"] for r in json.loads(cli("eval", "list", "-o", "json").out)]
    assert str(merged.resolve()) in listed


def test_shard_from_indexed_job_environment(cli, built, tmp_path, monkeypatch):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("JOB_COMPLETION_COUNT", "4")
    out = tmp_path / "job"
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out).code == 0
    assert json.loads((out / "run.json").read_text())["shard"] == {"index": 1, "count": 4, "start": 12, "stop": 25}


def test_bad_merges_are_refused_naming_why(cli, built, tmp_path):
    model_dir, _ = built
    parts = run_shards(cli, tmp_path, 3)
    one_line_error(cli("eval", "merge", parts[0], parts[2], "-o", tmp_path / "m1"), "missing shard(s) 1 of 3")
    one_line_error(cli("eval", "merge", parts[0], parts[1], parts[1], parts[2], "-o", tmp_path / "m2"), "shard 1 given twice")
    other_n = run_shards(cli, tmp_path, 2, name="other")
    one_line_error(cli("eval", "merge", parts[0], parts[1], other_n[1], "-o", tmp_path / "m3"), "of 3")
    other_data = write_tiny_dataset(tmp_path / "ds2", [(bytes([i]) * 12, i % 3) for i in range(50)])
    assert cli("dataset", "build", "--no-image", other_data).code == 0  # same name "tiny", a new version
    res = cli("model", "eval", "modthree", "--dataset", "tiny:latest", "--shard", "1/3", "-o", tmp_path / "newdata")
    assert res.code == 0, res.err
    one_line_error(cli("eval", "merge", parts[0], tmp_path / "newdata", parts[2], "-o", tmp_path / "m6"), "is from dataset")
    (model_dir / "models" / "weights.json").write_text(json.dumps({"offset": 1}))
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    res = cli("model", "eval", "modthree:latest", "--dataset", "tiny", "--shard", "1/3", "-o", tmp_path / "newmodel")
    assert res.code == 0
    one_line_error(cli("eval", "merge", parts[0], tmp_path / "newmodel", parts[2], "-o", tmp_path / "m4"), "is from model")
    one_line_error(cli("eval", "merge", tmp_path / "nowhere", "-o", tmp_path / "m5"), "no run.json")
    one_line_error(cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", "3/2"), "need 0 <= I < N")


def test_merge_waits_for_parts_written_later_and_names_what_never_came(cli, built, tmp_path):
    """What the Kubernetes merge Job relies on: it may start before the eval pods have written their parts."""
    import shutil
    import threading

    from builder.evaluate.sharding import MergeError, wait_for_parts

    parts = run_shards(cli, tmp_path, 3)
    parts_dir, aside = parts[0].parent, tmp_path / "aside"
    parts[1].rename(aside)
    later = threading.Timer(0.3, aside.rename, args=(parts[1],))  # shard 1 finishes while the merge waits
    later.start()
    assert wait_for_parts(parts_dir, timeout=30, poll=0.05) == parts
    later.join()

    shutil.rmtree(parts[2])
    run = json.loads((parts[1] / "run.json").read_text())
    (parts[1] / "run.json").write_text(json.dumps(dict(run, status="failed")))  # the Job would retry this index
    with pytest.raises(MergeError, match=r"missing shard\(s\) 1, 2 of 3 after waiting 0.2 s"):
        wait_for_parts(parts_dir, timeout=0.2, poll=0.05)
    with pytest.raises(MergeError, match="no finished part"):
        wait_for_parts(tmp_path / "never-written", timeout=0.1, poll=0.05)


def test_the_image_merge_takes_only_parts_of_its_own_model(cli, built, tmp_path, monkeypatch, capsys):
    """A merge Job reads /output/<job>/parts, where an earlier job of the same name may have left finished parts
    of another model: those are refused in one line, never merged under this image's name."""
    import builder.cli.container as image
    from builder.store import Store

    model_dir, single = built
    parts = run_shards(cli, tmp_path, 3)
    old = Store().resolve("model", "modthree").path
    (model_dir / "models" / "weights.json").write_text(json.dumps({"offset": 1}))
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    new = Store().resolve("model", "modthree:latest").path
    assert new != old
    capsys.readouterr()
    monkeypatch.setattr(image, "MODEL_DIR", new)
    assert image.main(["merge", str(parts[0].parent), "--output", str(tmp_path / "stale")]) != 0
    err = capsys.readouterr().err
    assert "is a run of model modthree:" in err and "not of this image's" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "stale" / "metrics.json").exists()
    monkeypatch.setattr(image, "MODEL_DIR", old)
    assert image.main(["merge", str(parts[0].parent), "--output", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "metrics.json").read_bytes() == (single / "metrics.json").read_bytes()


def test_a_pod_with_a_mounted_dataset_files_its_part_under_the_version_it_evaluates(built, monkeypatch):
    """--push-part with the dataset mounted (--dataset-mount init|image): the key the pod looks its part up by is
    the one its run.json, and so the pushed part, carries."""
    import builder.cli.container as image
    from builder.jobs.parts import dataset_key
    from builder.store import Store

    _, single = built
    monkeypatch.setattr(image, "DATASET_DIR", Store().resolve("dataset", "tiny").path)
    run = json.loads((single / "run.json").read_text())
    assert image._pod().dataset_key(None) == dataset_key(run["dataset"]) == f"tiny:{run['dataset']['version']}"


def test_more_shards_than_records_is_one_line(cli, built):
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "--shard", "3/51")
    assert res.code == 2  # a usage error (issue 18)
    one_line_error(res, "shard 3/51: dataset tiny has 50 records, so at most 50 shards")


def test_image_merge_command_refuses_bad_arguments_in_one_line(capsys):
    from builder.cli.container import main as image_main

    for args in (["merge"], ["merge", "/p"], ["merge", "/p", "--output"], ["merge", "/p", "--output", "/o", "--wait", "soon"],
                 ["merge", "/p", "--output", "/o", "--bogus", "1"]):
        assert image_main(args) != 0
        err = capsys.readouterr().err
        assert err.startswith("swcli: error: ") and len(err.strip().splitlines()) == 1, (args, err)


def shard_parts(tmp_path, handler, count, total=30, label_names=None):
    """Parts written by the real runner (``run_evaluation`` with ``shard``), as `eval --shard` writes them."""
    from builder.evaluate.runner.run import run_evaluation
    from builder.runs.folder import EvalContext
    from tests.helpers.handlers import records

    recs, parts = records(total), []
    ctx = EvalContext(dataset_name="toy", dataset_version="v1", model={"name": "m"}, label_names=label_names)
    for index in range(count):
        start, stop = Shard(index, count).range(total)
        part = tmp_path / "parts" / str(index)
        run_evaluation(handler, recs[start:stop], part, context=ctx,
                       shard={"index": index, "count": count, "start": start, "stop": stop})
        parts.append(part)
    return parts


@pytest.mark.parametrize("cmp_fails", ["raises", "unstorable"])
def test_a_merge_whose_cmp_fails_writes_a_failed_run_json_like_a_single_run(tmp_path, cmp_fails):
    from builder.errors import EvalError
    from builder.evaluate.runner.run import run_evaluation
    from builder.evaluate.sharding import merge_parts
    from tests.helpers.handlers import SeedStyle, records

    class BadCmp(SeedStyle):
        def cmp(self, data_loader):
            if cmp_fails == "raises":
                raise ZeroDivisionError("no classes")
            return {"what": object()}

    parts = shard_parts(tmp_path, BadCmp(), 3)
    with pytest.raises(EvalError) as merged_err:
        merge_parts(parts, tmp_path / "merged", BadCmp())
    with pytest.raises(EvalError) as single_err:
        run_evaluation(BadCmp(), records(30), tmp_path / "single")
    assert str(merged_err.value) == str(single_err.value).replace(str(tmp_path / "single"), str(tmp_path / "merged"))
    for out in ("merged", "single"):
        run = json.loads((tmp_path / out / "run.json").read_text())
        assert run["status"] == "failed" and run["error"] == str(merged_err.value if out == "merged" else single_err.value)
        assert run["records"] == {"total": 30, "ok": 30, "failed": 0} and not (tmp_path / out / "metrics.json").exists()
        assert (tmp_path / out / "results.jsonl").read_bytes() == (tmp_path / "single" / "results.jsonl").read_bytes()
    assert "cmp raised ZeroDivisionError: no classes" in str(merged_err.value) if cmp_fails == "raises" else \
        str(merged_err.value).startswith(f"{tmp_path / 'merged' / 'metrics.json'}: what cmp returned cannot be stored")


def test_label_names_survive_shards_and_merge(tmp_path):
    from builder.evaluate.sharding import merge_parts
    from tests.helpers.handlers import SeedStyle

    names = {"0": "zero", "1": "one", "2": "two"}
    parts = shard_parts(tmp_path, SeedStyle(), 2, label_names=names)
    assert all(json.loads((p / "run.json").read_text())["dataset"]["label_names"] == names for p in parts)
    _, run = merge_parts(parts, tmp_path / "merged", SeedStyle())
    assert run["status"] == "succeeded" and run["dataset"] == {"name": "toy", "version": "v1", "label_names": names}
    assert json.loads((tmp_path / "merged" / "run.json").read_text())["dataset"]["label_names"] == names


def test_label_names_from_the_dataset_manifest_reach_run_json_and_the_merge(cli, built, tmp_path):
    """`model eval` (in-process; the image's eval is the same function) copies the manifest's label_names."""
    from builder.store import Store

    entry = Store().resolve("dataset", "tiny")
    names = {"0": "zero", "1": "one", "2": "two"}
    manifest = json.loads((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").write_text(json.dumps(dict(manifest, label_names=names)))
    single = tmp_path / "named"
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", single).code == 0
    assert json.loads((single / "run.json").read_text())["dataset"]["label_names"] == names
    parts = run_shards(cli, tmp_path, 2)
    assert cli("eval", "merge", *parts, "-o", tmp_path / "merged").code == 0
    assert json.loads((tmp_path / "merged" / "run.json").read_text())["dataset"]["label_names"] == names
    (entry.path / "manifest.json").write_text(json.dumps(manifest))  # without names: no key at all
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "plain").code == 0
    assert "label_names" not in json.loads((tmp_path / "plain" / "run.json").read_text())["dataset"]


def test_a_failed_merge_from_the_cli_is_one_line_and_recorded_as_failed(cli, tiny_dataset, tmp_path):
    from tests.helpers.models import HANDLER, write_model

    bad_cmp = HANDLER.replace("        return _label, _result, _pr", "        raise ZeroDivisionError('no classes')")
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", "--skip-gen-env", write_model(tmp_path / "model", bad_cmp)).code == 0
    parts = run_shards(cli, tmp_path, 2)
    merged = tmp_path / "merged"
    res = cli("eval", "merge", *parts, "-o", merged)
    assert (res.code, res.err) == (1, "swcli: error: cmp raised ZeroDivisionError: no classes\n")
    run = json.loads((merged / "run.json").read_text())
    assert run["status"] == "failed" and run["error"] == "cmp raised ZeroDivisionError: no classes"
    from builder.store import Store

    recorded = [p.resolve() for p in Store().runs_dir.iterdir()]  # like a failed single run (`eval list` shows scored runs)
    assert recorded == [merged.resolve()]
