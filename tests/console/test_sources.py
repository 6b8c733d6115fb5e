"""The console's store source (`builder.console.sources`): entries with their sizes (links not followed, cached),
images and where they were pushed (the push records `swcli push` writes, read back bounded and shape-checked),
and the image a run's model could be attached to."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest

from builder.console import sources
from builder.distribute import push as push_module
from builder.distribute.push import MAX_PUSHES, PUSHES, push_records, record_push
from builder.registry.reference import Reference
from builder.runs.history import resolve_run
from builder.store import Store
from tests.helpers.console_world import pushed_world
from tests.helpers.store import publish

IMAGE_ID = "sha256:" + "1" * 64
DIGEST = "sha256:" + "2" * 64


def _image(kind="model", name="modthree", version="aaaabbbbcccc", image_id=IMAGE_ID):
    """What record_push reads of an image: its labels and id (builder.images.image.Image's two properties)."""
    return SimpleNamespace(labels={"io.swcli.kind": kind, "io.swcli.name": name, "io.swcli.version": version},
                           image_id=image_id)


def _run(model: dict):
    return SimpleNamespace(run={"model": model})


def test_sizes_count_files_once_and_never_follow_links(swcli_home, tmp_path):
    store = Store()
    entry = publish(store, "tiny", "x" * 1000, "2026-01-01T00:00:00+00:00")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"y" * 5_000_000)
    (entry.path / "link").symlink_to(outside)
    (entry.path / "folder-link").symlink_to(tmp_path)
    os.link(entry.path / "payload", entry.path / "payload-again")
    expected = 1000 + (entry.path / "manifest.json").stat().st_size
    [item] = sources.overview(store)["datasets"]
    assert item["size"] == expected
    assert (item["name"], item["version"], item["short_version"]) == ("tiny", entry.version, entry.version[:12])
    assert item["created"] == "2026-01-01T00:00:00+00:00"
    assert item["image"] == {"ref": None, "digest": None} and item["pushed"] == []


def test_a_hundred_entries_are_walked_once(swcli_home, monkeypatch):
    store = Store()
    for i in range(100):
        publish(store, f"d{i}", f"content {i}" * 100, f"2026-01-01T00:00:{i % 60:02d}+00:00")
    walked = []
    real = sources._walk_size
    monkeypatch.setattr(sources, "_walk_size", lambda path: walked.append(path) or real(path))
    first = sources.overview(store)
    started = time.monotonic()
    second = sources.overview(store)
    assert first == second and len(first["datasets"]) == 100
    assert len(walked) == 100  # the second listing walked nothing
    assert time.monotonic() - started < 2.0


def test_unreadable_entries_are_problems_beside_the_rest(swcli_home):
    store = Store()
    publish(store, "good", "x", "2026-01-01T00:00:00+00:00")
    bad = store.kind_dir("dataset") / "bad" / "aaaabbbbcccc"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    out = sources.overview(store)
    assert [d["name"] for d in out["datasets"]] == ["good"]
    assert any("bad/aaaabbbbcccc" in line for line in out["problems"]), out["problems"]
    assert out["models"] == [] and out["runtimes"] == []


def test_push_records_are_bounded_and_newest_last(swcli_home):
    store = Store()
    dest = Reference.parse("127.0.0.1:5000/team/modthree:v1")
    for i in range(MAX_PUSHES + 10):
        assert record_push(store, _image(), Reference.parse(f"127.0.0.1:5000/team/m:{i}"), DIGEST)
    assert record_push(store, _image(), dest, DIGEST)
    assert record_push(store, _image(), dest, DIGEST)  # the same push again: listed once, as the newest
    records = push_records(store)
    assert len(records) == MAX_PUSHES and records[-1]["ref"] == str(dest)
    assert [r["ref"] for r in records].count(str(dest)) == 1
    assert records[0]["ref"] == "127.0.0.1:5000/team/m:11"
    assert not record_push(store, SimpleNamespace(labels={}, image_id=IMAGE_ID), dest, DIGEST)  # not swcli's


@pytest.mark.parametrize("plant", ["link", "fifo", "huge", "not-json", "wrong-shape"])
def test_a_planted_push_record_is_a_problem_not_a_hang(swcli_home, tmp_path, plant):
    store = Store()
    publish(store, "tiny", "x", "2026-01-01T00:00:00+00:00")
    path = store.root / PUSHES
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"pushes": []}))
    if plant == "link":
        path.symlink_to(secret)
    elif plant == "fifo":
        os.mkfifo(path)
    elif plant == "huge":
        with open(path, "wb") as out:
            out.truncate(push_module.MAX_PUSHES_FILE + 1)
    else:
        path.write_text("{nope" if plant == "not-json" else json.dumps({"pushes": {"a": 1}}))
    started = time.monotonic()
    out = sources.overview(store)
    assert time.monotonic() - started < 5
    assert [d["name"] for d in out["datasets"]] == ["tiny"]
    assert len(out["problems"]) == 1 and str(path) in out["problems"][0], out["problems"]
    assert "\n" not in out["problems"][0]
    recorded = record_push(store, _image(), Reference.parse("127.0.0.1:5000/team/m:1"), DIGEST)
    assert json.loads(secret.read_text()) == {"pushes": []}  # never written through the link
    if plant in ("link", "fifo"):  # refused and left for the user to see, like any planted file (builder.outdir)
        assert recorded is False and (path.is_symlink() or path.is_fifo())
    else:  # a damaged record is started over
        assert recorded is True and [r["ref"] for r in push_records(store)] == ["127.0.0.1:5000/team/m:1"]


def test_records_of_the_wrong_shape_are_passed_over(swcli_home):
    store = Store()
    good = {"kind": "model", "name": "modthree", "version": "aaaabbbbcccc", "image_id": IMAGE_ID,
            "ref": "127.0.0.1:5000/team/modthree:v1", "digest": DIGEST, "at": "2026-01-01T00:00:00+00:00"}
    bad = [dict(good, ref="127.0.0.1:5000/Team/../x"), dict(good, name="../x"), dict(good, digest="sha256:x"),
           dict(good, kind="run"), dict(good, at=7), dict(good, version="A" * 200), "x", None, dict(good, at="x" * 65)]
    (store.root).mkdir(parents=True, exist_ok=True)
    (store.root / PUSHES).write_text(json.dumps({"pushes": bad + [good]}))
    assert push_records(store) == [good]


def test_attach_target_from_the_push_records(swcli_home):
    store = Store()
    evaluated = _run({"name": "modthree", "version": "aaaabbbbcccc", "image": IMAGE_ID})
    assert sources.attach_target(evaluated, store) is None
    record_push(store, _image(), Reference.parse("127.0.0.1:5000/team/modthree:v1"), DIGEST)
    other = "sha256:" + "3" * 64
    record_push(store, _image(image_id=other), Reference.parse("127.0.0.1:5000/team/modthree:v2"), DIGEST[:-1] + "4")
    by_image = sources.attach_target(_run({"name": "modthree", "version": "aaaabbbbcccc", "image": IMAGE_ID}), store)
    assert by_image == f"127.0.0.1:5000/team/modthree:v1@{DIGEST}"
    by_version = sources.attach_target(_run({"name": "modthree", "version": "aaaabbbbcccc"}), store)
    assert by_version == f"127.0.0.1:5000/team/modthree:v2@{DIGEST[:-1]}4"  # the newest push of that version
    assert sources.attach_target(_run({"name": "modthree", "version": "zzzz1111"}), store) is None
    assert sources.attach_target(_run({"path": "/src/model"}), store) is None  # a source folder, not a store model
    assert sources.attach_target(SimpleNamespace(run={"model": "x"}), store) is None


def test_a_push_to_the_registry_is_shown_where_it_went(cli, registry, tmp_path, no_engine):
    """Real pushes (`swcli model|dataset push` to the registry fixture): the overview lists where each entry went,
    with its image in the store's layout, and the run's model can be attached to the image it was pushed as."""
    world = pushed_world(cli, registry, tmp_path)
    store = Store()
    out = sources.overview(store)
    assert out["problems"] == []
    [model] = out["models"]
    [dataset] = out["datasets"]
    assert model["version"] == world["version"]
    assert model["pushed"] == [world["refs"]["elsewhere"], world["refs"]["model"]]  # newest first
    assert dataset["pushed"] == [world["refs"]["dataset"]]
    assert model["image"]["ref"] == world["image"]
    assert model["image"]["digest"] == store.layout.resolve(world["image"]).digest
    assert dataset["image"]["ref"] == f"swds/tiny:{dataset['version']}" and dataset["image"]["digest"]
    assert model["size"] > 0 and dataset["size"] > 0
    run = resolve_run(world["run"], store)
    assert sources.attach_target(run, store) == f"{world['refs']['elsewhere']}@{world['digests']['elsewhere']}"
