"""Inputs an independent review tried after the first hardening pass, each a class of failure: deeply nested JSON
and wrong-shaped manifests in the store, a handler calling sys.exit, a CI gate that must not fall back to an older
run, credential files under less common names, checks that must come before any work, and small CLI edges."""

from __future__ import annotations

import json

import pytest

from builder.store import Store
from tests.helpers.models import HANDLER, tiny_model
from tests.helpers.run_folders import METRICS, write_run

DEEP = "[" * 5000 + "]" * 5000


def one_line(res) -> str:
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swcli: error: ") and "Traceback" not in res.err, res.err
    return lines[0]


def test_deeply_nested_json_in_the_store_is_named_not_a_traceback(cli, swcli_home, tiny_dataset):
    assert cli("dataset", "build", tiny_dataset, "--no-image").code == 0
    entry = Store().resolve("dataset", "tiny")
    manifest = json.loads((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").write_text(json.dumps(manifest)[:-1] + f', "x": {DEEP}}}')
    res = cli("dataset", "list")
    assert res.code == 0 and "skipped" in res.err and "manifest.json" in res.err
    assert "unreadable manifest" in one_line(cli("dataset", "info", "tiny"))

    runs = Store().runs_dir
    write_run(runs / "20260101-ok")
    write_run(runs / "20260102-deep")
    (runs / "20260102-deep" / "run.json").write_text(f'{{"kind": "eval", "x": {DEEP}}}')
    res = cli("eval", "list", "-o", "json")
    assert res.code == 0 and "20260102-deep" in res.err and [r["id"] for r in json.loads(res.out)] == ["20260101-ok"]
    assert "20260102-deep" in one_line(cli("eval", "show", "20260102-deep"))


@pytest.mark.parametrize("field, value", [("totals", None), ("totals", "s"), ("totals", {"shard_bytes": "big"}),
                                          ("attr", "a"), ("tag", None), ("tag", [{"a": 1}]), ("records", "many")])
def test_wrong_shaped_manifest_fields_are_named(cli, swcli_home, tiny_dataset, field, value):
    assert cli("dataset", "build", tiny_dataset, "--no-image").code == 0
    entry = Store().resolve("dataset", "tiny")
    manifest = json.loads((entry.path / "manifest.json").read_text())
    (entry.path / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    res = cli("dataset", "list")
    assert res.code == 0 and f"field '{field}" in res.err
    assert f"field '{field}" in one_line(cli("dataset", "info", str(entry.path)))


@pytest.mark.parametrize("body, words", [("raise SystemExit(3)", "SystemExit: 3"), ("import sys; sys.exit('bye')", "bye")])
def test_a_handler_calling_sys_exit_fails_its_record_in_one_line(cli, swcli_home, model_dir, tiny_dataset, tmp_path,
                                                                 body, words):
    (model_dir / "code" / "ppl.py").write_text(HANDLER.replace("        pred = (data[0]", f"        {body}\n        pred = (data[0]"))
    assert cli("dataset", "build", tiny_dataset, "--no-image").code == 0
    res = cli("model", "eval", model_dir, "--dataset", "tiny", "-o", tmp_path / "out")
    assert res.code == 1 and "record 0" in one_line(res) and words in res.err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"


def test_the_gate_never_falls_back_to_an_older_run(cli, swcli_home):
    runs = Store().runs_dir
    write_run(runs / "20260101-000000-old")
    write_run(runs / "20260102-000000-new", metrics={**METRICS, "summary": "x"})
    for ref in ("latest", "20260102"):
        res = cli("eval", "show", ref, "--fail-under", "accuracy=0.5")
        assert res.code == 1 and "20260102-000000-new" in one_line(res) and "metrics.json" in res.err, res.err
    assert cli("eval", "show", "20260101", "--fail-under", "accuracy=0.5").code == 0


@pytest.mark.parametrize("path", [".boto", ".s3cfg", ".vault-token", ".terraformrc", "kubeconfig", "credentials.json",
                                  ".cargo/credentials.toml", ".gem/credentials", ".cache/huggingface/token",
                                  "prod.tfvars", ".databrickscfg"])
def test_more_credential_files_stay_out(cli, swcli_home, model_dir, path):
    (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
    (model_dir / path).write_text("x")
    res = cli("model", "build", model_dir, "--no-image", "--skip-gen-env")
    assert res.code == 0 and path in res.err, res.err
    files = [f["path"] for f in Store().resolve("model", "modthree").manifest["files"]]
    assert path not in files


def test_bad_image_inputs_fail_before_anything_is_built(cli, swcli_home, tiny_dataset, tmp_path):
    res = cli("dataset", "build", tiny_dataset, "--base-image", "a\nRUN id", "--dockerfile-only", tmp_path / "ctx")
    assert res.code == 2 and "--base-image" in one_line(res) and "built dataset" not in res.out
    assert Store().list("dataset") == [] and not (tmp_path / "ctx").exists()
    model = tiny_model(tmp_path)
    res = cli("model", "build", model, "--skip-gen-env", "--runtime", "nothing-here")
    assert res.code == 1 and "no runtime matches 'nothing-here'" in one_line(res)
    assert Store().list("model") == []


def test_model_dockerfile_only_needs_an_empty_or_new_folder(cli, swcli_home, tmp_path):
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "Dockerfile").write_text("mine")
    res = cli("model", "build", tiny_model(tmp_path), "--skip-gen-env", "--runtime", "swrt/x:1", "--dockerfile-only", out)
    assert res.code == 1 and "is not empty" in one_line(res)
    assert [p.name for p in out.iterdir()] == ["Dockerfile"] and (out / "Dockerfile").read_text() == "mine"


def test_a_runtime_image_without_a_slash_is_an_image(swcli_home):
    from builder.build.entry_image import image_for

    assert image_for("runtime", "python:3.11") == "python:3.11"
    with pytest.raises(Exception, match="no runtime matches 'cifar-env'"):
        image_for("runtime", "cifar-env")


def test_no_arguments_print_help_and_no_empty_error(cli):
    for args in ([], ["dataset"]):
        res = cli(*args)
        assert "Usage" in res.out and "swcli: error" not in res.err, res.err


def test_tags_are_ascii_and_outputs_stay_out_of_the_store(cli, swcli_home, model_dir, tiny_dataset):
    from builder.refs import image_ref_problem

    assert image_ref_problem("alpine:tëst") and image_ref_problem("alpine:3.19") is None
    assert cli("dataset", "build", tiny_dataset, "--no-image").code == 0
    for out in (swcli_home, swcli_home / "runs", swcli_home / "datasets" / "x"):
        res = cli("model", "eval", model_dir, "--dataset", "tiny", "-o", out)
        assert res.code == 2 and "inside the store" in one_line(res)
    assert not (swcli_home / "metrics.json").exists()
