"""Hostile evaluation artifacts, referrer listings, model configs and registry datasets, pushed raw (manifests and
blobs as an attacker writes them) to Debian's docker-registry, which takes any blob; it has no referrers API, so a
listing is the `sha256-<hex>` fallback index, an ordinary tag anyone with push rights writes. It parses the
manifests it is given, so the ones with wrong-typed fields are served by a fault proxy in front of it (a registry
that stores what it is sent, or one that lies), everything else passing through to it.

Every wrong-typed field is one line and exit 5; nothing is left in the run history; sizes are refused from what a
descriptor declares, before a byte is fetched or parsed; concurrent pulls record one run."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from builder.store import Store
from tests.runs.test_eval_attach import REPO, attached_digest, world  # noqa: F401  (fixture reused)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EVAL = "application/vnd.swcli.evaluation.v1+json"
TITLE = "org.opencontainers.image.title"
ROOT = Path(__file__).resolve().parents[2]


def client_of(registry):
    from builder.registry.client import RegistryClient

    return RegistryClient(registry.address)


def blob(client, data: bytes, repo: str = REPO, media: str = "application/json", **extra) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if client.blob_size(repo, digest) != len(data):
        client.upload_blob(repo, digest, len(data), lambda: io.BytesIO(data))
    return {"mediaType": media, "digest": digest, "size": len(data), **extra}


def put(client, document: dict, ref: str | None = None, repo: str = REPO, media: str = OCI_MANIFEST) -> str:
    """Put ``document`` as it is (no check of ours) under its digest, or under tag ``ref``; its digest."""
    data = json.dumps(document).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return client.put_manifest(repo, ref or digest, data, media)


@pytest.fixture()
def proxy(registry):
    from tests.registry_servers import FaultProxy

    served = FaultProxy(registry.address, [])
    yield served
    served.stop()


def serve(proxy, document, ref: str | None = None, repo: str = REPO, media: str = OCI_MANIFEST) -> str:
    """Have ``proxy`` answer GET of manifest ``ref`` (default: the document's digest) with ``document``, whatever its
    fields; its digest."""
    from tests.registry_servers import Rule

    data = json.dumps(document).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    proxy.rules.insert(0, Rule("GET", rf"^/v2/{repo}/manifests/{re.escape(ref or digest)}$", "status", status=200,
                               body=data, content_type=media))
    return digest


def one_line(res, code: int = 5, *says: str) -> None:
    assert res.code == code, (res.code, res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swcli: error: "), res.err
    for said in says:
        assert said in res.err, res.err


def run_files(run_id: str) -> dict[str, bytes]:
    run_dir = Store().runs_dir / run_id
    return {name: (run_dir / name).read_bytes() for name in ("metrics.json", "run.json", "results.jsonl")}


def artifact(client, subject: dict, files: dict[str, bytes], *, layers=None, annotations=None, proxy=None,
             **top) -> str:
    """An evaluation artifact of ``files`` (title -> bytes) whose subject is ``subject``; ``layers`` replaces the
    layer descriptors, ``top`` sets other top-level fields as they are; put in the registry, or served by
    ``proxy``."""
    from builder.distribute.artifact import EMPTY, EMPTY_DESCRIPTOR

    blob(client, EMPTY)
    descs = [blob(client, data, annotations={TITLE: title}) for title, data in files.items()]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": EVAL, "config": EMPTY_DESCRIPTOR,
                "layers": descs if layers is None else layers(descs), "subject": subject,
                "annotations": annotations if annotations is not None else {}, **top}
    return serve(proxy, manifest) if proxy else put(client, manifest)


def fallback_index(proxy, subject_digest: str, manifests: list) -> None:
    """The referrers listing of ``subject_digest`` as ``proxy`` serves it (the registry holds a good one, so its
    HEAD answers)."""
    serve(proxy, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
          ref=f"sha256-{subject_digest[7:]}", media=OCI_INDEX)


def empty_history(home: Path) -> bool:
    runs = home / "runs"
    return not runs.exists() or not any(runs.iterdir())


# ------------------------------------------------------------------------------------------- wrong-typed fields


LISTED = {  # a referrer descriptor of our type, broken one way each
    "annotations a list": lambda d: {**d, "annotations": ["io.swcli.evaluation.run", "x"]},
    "annotations a string": lambda d: {**d, "annotations": "run=x"},
    "an annotation an object": lambda d: {**d, "annotations": {"io.swcli.evaluation.run": {"id": "x"}}},
    "an annotation null": lambda d: {**d, "annotations": {"io.swcli.evaluation.run": None}},
    "size a string": lambda d: {**d, "size": str(d["size"])},
    "size null": lambda d: {**d, "size": None},
    "mediaType a list": lambda d: {**d, "mediaType": [OCI_MANIFEST]},
}


def test_a_wrong_typed_referrer_is_one_line_exit_5_for_list_and_pull(cli, world, proxy, monkeypatch, tmp_path):
    registry = world["registry"]
    first = attached_digest(cli("eval", "attach", world["runs"][0], world["image"]))
    image = f"{proxy.address}/{REPO}:v1"
    client = client_of(registry)
    good = [d for d in client.referrers(REPO, world["digest"]) if d["digest"] == first][0]
    home, own = tmp_path / "pull-home", os.environ["SWCLI_HOME"]
    for case, broken in LISTED.items():
        fallback_index(proxy, world["digest"], [broken(good)])
        res = cli("eval", "list", "--image", image)  # the client's listing check or ours, whichever sees it first
        one_line(res, 5)
        assert "referrer of" in res.err or "referrers index" in res.err, res.err
        one_line(cli("eval", "list", "--image", image, "-o", "json"), 5)
        monkeypatch.setenv("SWCLI_HOME", str(home))
        one_line(cli("eval", "pull", image, "--run", world["runs"][0]), 5)
        monkeypatch.setenv("SWCLI_HOME", own)
        assert empty_history(home), case
    fallback_index(proxy, world["digest"], [good, "not a descriptor"])  # referrers.py's own check
    one_line(cli("eval", "list", "--image", image), 5)
    fallback_index(proxy, world["digest"], [good, {**good, "artifactType": "application/x-other", "size": "1"}])
    listed = cli("eval", "list", "--image", image, "-o", "json")  # another tool's referrer is not looked at
    assert listed.code == 0 and [r["digest"] for r in json.loads(listed.out)] == [first], listed.err


ARTIFACTS = {  # an evaluation artifact's manifest, broken one way each: (layers, top-level fields)
    "layers an object": (lambda ds: {"run.json": ds[1]}, {}),
    "layers a string": (lambda ds: "metrics.json,run.json,results.jsonl", {}),
    "a layer null": (lambda ds: ds + [None], {}),
    "layer annotations a list": (lambda ds: [{**ds[0], "annotations": [TITLE, "metrics.json"]}] + ds[1:], {}),
    "a title a list": (lambda ds: [{**ds[0], "annotations": {TITLE: ["metrics.json"]}}] + ds[1:], {}),
    "layer size a string": (lambda ds: [{**ds[0], "size": str(ds[0]["size"])}] + ds[1:], {}),
    "layer digest a number": (lambda ds: [{**ds[0], "digest": 12}] + ds[1:], {}),
    "subject a string": (None, {"subject": "sha256:" + "0" * 64}),
    "annotations a list": (None, {"annotations": ["io.swcli.evaluation.run"]}),
    "run annotation an object": (None, {"annotations": {"io.swcli.evaluation.run": {"a": 1}}}),
}


def test_a_wrong_typed_artifact_manifest_is_one_line_exit_5_and_leaves_nothing(cli, world, proxy, monkeypatch,
                                                                                 tmp_path):
    client = client_of(world["registry"])
    subject = client.manifest_descriptor(REPO, "v1")
    files = run_files(world["runs"][0])
    home = tmp_path / "pull-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    for case, (layers, top) in ARTIFACTS.items():
        if "subject" in top:
            subject_field, top = top["subject"], {}
        else:
            subject_field = subject
        digest = artifact(client, subject_field, files, layers=layers, proxy=proxy, **top)
        res = cli("eval", "pull", f"{proxy.address}/{REPO}@{digest}")
        one_line(res, 5, f"{REPO}@{digest}")
        assert empty_history(home), case


def test_a_wrong_typed_model_config_is_one_line_exit_5(cli, world, proxy):
    """`eval attach` reads the model image's config labels: strings to strings, or one line."""
    client = client_of(world["registry"])
    real = json.loads(client.get_manifest(REPO, "v1").data)
    config = json.loads(client_config(client, real))
    shapes = {
        "Labels a list": {**config, "config": {**config["config"], "Labels": ["io.swcli.kind=model"]}},
        "a label a number": {**config, "config": {**config["config"], "Labels": {**config["config"]["Labels"],
                                                                                 "io.swcli.kind": 7}}},
        "config a string": {**config, "config": "Labels"},
        "the document a list": [config],
    }
    for n, (case, document) in enumerate(shapes.items()):
        desc = blob(client, json.dumps(document).encode(), media=real["config"]["mediaType"])
        put(client, {**real, "config": desc}, ref=f"hostile{n}")  # a config is a blob: the registry takes any
        one_line(cli("eval", "attach", world["runs"][0], f"{proxy.address}/{REPO}:hostile{n}"), 5, "config")
    for n, config in enumerate(({**real["config"], "size": "1234"}, "sha256:" + "0" * 64, None)):
        serve(proxy, {**real, "config": config}, ref=f"served{n}")
        one_line(cli("eval", "attach", world["runs"][0], f"{proxy.address}/{REPO}:served{n}"), 5, "config")


def client_config(client, manifest: dict) -> bytes:
    out = io.BytesIO()
    client.fetch_blob(REPO, manifest["config"]["digest"], out)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------ memory


def test_oversized_run_files_are_refused_from_their_declared_size(cli, world, monkeypatch, tmp_path):
    """A 64 MiB run.json (16x its cap) and a metrics.json over its cap are refused before a byte of them is
    fetched: the registry's access log shows no GET of their blobs."""
    from builder.runs import history as runs
    from tests.registry_servers import access_log

    registry = world["registry"]
    client = client_of(registry)
    subject = client.manifest_descriptor(REPO, "v1")
    files = run_files(world["runs"][0])
    home = tmp_path / "pull-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    for name, cap in (("run.json", getattr(runs, "MAX_RUN_JSON", 4 << 20)),
                      ("metrics.json", getattr(runs, "MAX_METRICS", 32 << 20))):
        big = b'{"pad": "' + b" " * (max(64 << 20, cap + 1)) + b'"}'
        digest = artifact(client, subject, {**files, name: big})
        big_digest = "sha256:" + hashlib.sha256(big).hexdigest()
        res = cli("eval", "pull", f"{registry.address}/{REPO}@{digest}")
        one_line(res, 5, f"layer {name} declares {len(big)} bytes, more than the {cap}")
        assert not [line for line in access_log(registry.log, big_digest) if line.startswith("GET")]
        assert empty_history(home)


def test_a_huge_results_line_is_refused_while_read(cli, world, monkeypatch, tmp_path):
    """results.jsonl may be large, but each line is parsed whole: one longer than the cap is refused after the
    cap's worth of it is read, not after the whole 40 MiB line."""
    from builder.runs import history as runs

    registry = world["registry"]
    client = client_of(registry)
    files = run_files(world["runs"][0])
    monkeypatch.setattr(runs, "MAX_RESULT_LINE", 1 << 20, raising=False)
    line = b'{"index": 0, "label": 1, "result": 1, "pr": [' + b"0," * (2 << 20) + b'0]}\n'
    digest = artifact(client, client.manifest_descriptor(REPO, "v1"), {**files, "results.jsonl": line})
    home = tmp_path / "pull-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    one_line(cli("eval", "pull", f"{registry.address}/{REPO}@{digest}"), 1, "results.jsonl:1: a line longer than")
    assert empty_history(home)


# ------------------------------------------------------------------------------------------------ run ids


def test_an_artifacts_run_id_never_escapes_nor_takes_latest_nor_replaces_a_run(cli, world, monkeypatch, tmp_path):
    registry = world["registry"]
    client = client_of(registry)
    subject = client.manifest_descriptor(REPO, "v1")
    files = run_files(world["runs"][0])
    home = tmp_path / "pull-home"
    monkeypatch.setenv("SWCLI_HOME", str(home))
    for n, wanted in enumerate(("../../escaped", "latest", "a/b", ".hidden", "x" * 300, "ok\x1b[2J")):
        run = {**json.loads(files["run.json"]), "note": n}  # another artifact each time
        digest = artifact(client, subject, {**files, "run.json": json.dumps(run).encode()},
                          annotations={"io.swcli.evaluation.run": wanted})
        res = cli("eval", "pull", f"{registry.address}/{REPO}@{digest}")
        assert res.code == 0, res.err
        assert f"pulled run pulled-{digest[7:19]} " in res.out, (wanted, res.out)
    assert all(p.name.startswith("pulled-") for p in (home / "runs").iterdir())
    assert not (tmp_path / "escaped").exists() and not (home / "escaped").exists()
    # a run already named like the artifact's is kept: the pulled one takes the next id
    digest = artifact(client, subject, {**files, "run.json": json.dumps({**json.loads(files["run.json"]),
                                                                           "note": "x"}).encode()},
                      annotations={"io.swcli.evaluation.run": "pulled-" + "0" * 12})
    (home / "runs" / ("pulled-" + "0" * 12)).mkdir()
    (home / "runs" / ("pulled-" + "0" * 12) / "mine").write_text("kept")
    res = cli("eval", "pull", f"{registry.address}/{REPO}@{digest}")
    assert res.code == 0 and "pulled-000000000000-2" in res.out, res.err
    assert (home / "runs" / ("pulled-" + "0" * 12) / "mine").read_text() == "kept"


# ------------------------------------------------------------------------------------------------ concurrency

PULLER = """
import os, sys, time
from builder.cli import main
from builder.runs import attach_pull  # imported before the start line, so all five are at the door at once
start = sys.argv[1]
deadline = time.monotonic() + 60
while not os.path.exists(start):
    if time.monotonic() > deadline:
        sys.exit(99)
    time.sleep(0.005)
sys.exit(main(["eval", "pull", sys.argv[2]]))
"""


def test_five_concurrent_pulls_of_one_artifact_record_one_run(cli, world, tmp_path):
    registry = world["registry"]
    ref = f"{registry.address}/{REPO}@" + attached_digest(cli("eval", "attach", world["runs"][0], world["image"]))
    home = tmp_path / "concurrent-home"
    env = {**os.environ, "SWCLI_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, "-c", PULLER, str(start), ref], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    time.sleep(3)  # every process past its imports (2 cores, 5 interpreters)
    start.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    said = [out.strip() for out, _ in outs]
    assert sum(s.startswith("pulled run") for s in said) == 1, said
    assert sum(s.startswith("already in the history") for s in said) == 4, said
    assert [p.name for p in (home / "runs").iterdir()] == [world["runs"][0]]


# ------------------------------------------------------------------------------------------- registry datasets


def _gzip_layer(members: dict[str, bytes | int]) -> tuple[bytes, str]:
    """A gzip layer of ``dataset/<name>`` members (bytes, or an int: that many zero bytes, streamed) and its
    diff_id."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"dataset/{name}")
            info.size = data if isinstance(data, int) else len(data)
            tar.addfile(info, _Zeros(data) if isinstance(data, int) else io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, compresslevel=1), "sha256:" + hashlib.sha256(plain).hexdigest()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def dataset_image(client, *, labels: dict | None = None, members=None, config_extra=None, manifest_edit=None,
                  repo: str = "team/ds", proxy=None) -> str:
    """A dataset image pushed raw (its manifest served by ``proxy`` when given): one meta layer (its ``members``),
    a config with ``labels``; returns its ref, by digest."""
    layer, diff_id = _gzip_layer(members if members is not None else {"manifest.json": b"{}"})
    layer_desc = blob(client, layer, repo, "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "config": {"Labels": labels if labels is not None else {
                  "io.swcli.kind": "dataset", "io.swcli.name": "ds", "io.swcli.version": "a" * 12,
                  "io.swcli.dataset.layers": "0"}}, **(config_extra or {})}
    config_desc = blob(client, json.dumps(config).encode(), repo, "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]}
    if manifest_edit:
        manifest = manifest_edit(manifest)
    if proxy:
        return f"{proxy.address}/{repo}@{serve(proxy, manifest, repo=repo)}"
    return f"{client.registry}/{repo}@{put(client, manifest, repo=repo)}"


@pytest.fixture()
def source_model(tmp_path):
    from tests.build.test_model import HANDLER, MODEL_YAML

    root = tmp_path / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "models").mkdir()
    (root / "models" / "weights.json").write_text('{"offset": 0}')
    (root / "model.yaml").write_text(MODEL_YAML)
    return root


DATASET_SHAPES = {  # (what to break, a word the one line says)
    "layers a string": (dict(manifest_edit=lambda m: {**m, "layers": "abc"}), "layers"),
    "a layer a string": (dict(manifest_edit=lambda m: {**m, "layers": ["sha256:" + "0" * 64]}), "layers[0]"),
    "config a string": (dict(manifest_edit=lambda m: {**m, "config": m["config"]["digest"]}), "config"),
    "config size a string": (dict(manifest_edit=lambda m: {**m, "config": {**m["config"], "size": "99"}}), "size"),
    "config without size": (dict(manifest_edit=lambda m: {**m, "config": {
        k: v for k, v in m["config"].items() if k != "size"}}), "size"),
    "Labels a list": (dict(labels=["io.swcli.kind=dataset"]), "Labels"),
    "a label a list": (dict(labels={"io.swcli.kind": "dataset", "io.swcli.name": "ds", "io.swcli.version": "a" * 12,
                                    "io.swcli.dataset.layers": ["0"]}), "io.swcli.dataset.layers"),
    "diff_ids a string": (dict(config_extra={"rootfs": {"type": "layers", "diff_ids": "sha256:x"}}), "diff_ids"),
    "a diff_id an object": (dict(config_extra={"rootfs": {"type": "layers", "diff_ids": [{"d": 1}]}}), "diff_ids[0]"),
    "a name that is a path": (dict(labels={"io.swcli.kind": "dataset", "io.swcli.name": "../../../escaped",
                                           "io.swcli.version": "a" * 12, "io.swcli.dataset.layers": "0"}), "name"),
}


def test_a_wrong_typed_registry_dataset_is_one_line_exit_5(cli, registry, proxy, source_model, no_engine, tmp_path):
    client = client_of(registry)
    for case, (edit, says) in DATASET_SHAPES.items():
        ref = dataset_image(client, proxy=proxy, **edit)
        res = cli("model", "eval", source_model, "--dataset", ref)
        one_line(res, 5, says)
        assert not (tmp_path / "escaped").exists(), case


def test_a_registry_datasets_big_meta_files_are_refused_before_they_are_written(cli, registry, source_model,
                                                                                  no_engine, swcli_home):
    """A 256 MiB manifest.json (or layers.json) inside a tiny gzip layer is refused at its tar header: never
    written to the cache, never parsed."""
    client = client_of(registry)
    for name in ("manifest.json", "layers.json"):
        ref = dataset_image(client, members={name: 256 << 20})
        res = cli("model", "eval", source_model, "--dataset", ref)
        one_line(res, 5, f"dataset/{name} is {256 << 20} bytes, more than the {4 << 20}")
        cached = swcli_home / "cache" / "registry" / "layers"
        assert sum(f.stat().st_size for f in cached.rglob("*") if f.is_file()) < 8 << 20


# ------------------------------------------------------------------------------------------- the history read back


def test_planted_run_files_are_bounded_never_followed_never_waited_on(cli, swcli_home, tmp_path):
    """A run folder in runs/ may be planted (or pulled): its JSON is read bounded before it is parsed, through no
    link, and a FIFO in its place is refused at once (a real `swcli eval list` process, with a deadline)."""
    runs = Store().runs_dir
    good = {"status": "succeeded", "started": "2026-01-01T00:00:00+0000", "model": {}, "dataset": {}, "records": {}}
    for name in ("big", "link", "fifo"):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text("{}")
    (runs / "big" / "run.json").write_text(json.dumps({**good, "pad": " " * (5 << 20)}))
    (tmp_path / "elsewhere.json").write_text(json.dumps(good))
    (runs / "link" / "run.json").symlink_to(tmp_path / "elsewhere.json")
    os.mkfifo(runs / "fifo" / "run.json")
    env = {**os.environ, "SWCLI_HOME": str(swcli_home), "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-m", "builder", "eval", "list"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    warnings = sorted(done.stderr.strip().splitlines())
    assert len(warnings) == 3, done.stderr
    assert "big/run.json is unreadable: is larger than 4194304 bytes" in warnings[0]
    assert "fifo/run.json is unreadable: is a FIFO" in warnings[1]
    assert "link/run.json is unreadable: is a symbolic link" in warnings[2]
    one_line(cli("eval", "show", "big"), 1, "is larger than 4194304 bytes")
    one_line(cli("eval", "show", "link"), 1, "is a symbolic link")


def test_wrong_typed_shard_parts_are_one_line_exit_5_for_the_merge(world, proxy, tmp_path):
    """`--parts registry`: the merge pod lists the model image's parts; a part listed with wrong-typed fields is
    one line (exit 5), one whose index is not a number or out of range is not a part at all."""
    from builder.errors import RegistryError
    from builder.jobs.parts import PART_TYPE, P, pull_parts

    client = client_of(world["registry"])
    digest = world["digest"]
    part = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 10, "artifactType": PART_TYPE,
            "annotations": {f"{P}job": "j", f"{P}dataset": "tiny:v", f"{P}index": "0", f"{P}count": "1"}}
    # the registry must answer the fallback tag's HEAD: list something there first
    from builder.images.oci import canonical_json

    client.put_manifest(REPO, f"sha256-{digest[7:]}", canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}), OCI_INDEX)
    image = f"{proxy.address}/{REPO}:v1"
    for broken in ({**part, "annotations": [f"{P}job", "j"]}, {**part, "size": "10"},
                   {**part, "annotations": {**part["annotations"], f"{P}index": 0}}):
        fallback_index(proxy, digest, [broken])
        with pytest.raises(RegistryError) as err:
            pull_parts(image, "j", "tiny:v", 1, tmp_path / "parts")
        assert "\n" not in str(err.value)
        assert "referrer of" in str(err.value) or "referrers index" in str(err.value), err.value
    for skipped in ("x", "-1", "1"):
        fallback_index(proxy, digest, [{**part, "annotations": {**part["annotations"], f"{P}index": skipped}}])
        with pytest.raises(Exception, match="no part|missing") as err:
            pull_parts(image, "j", "tiny:v", 1, tmp_path / "parts")
        assert "\n" not in str(err.value)
