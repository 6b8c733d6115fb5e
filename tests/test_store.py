"""The local store: atomic publish, content versions, ref resolution."""

import hashlib
import json

import pytest

from builder.errors import RefNotFoundError
from builder.files import write_json_atomic
from builder.store import Store, make_version
from tests.helpers.store import publish


def test_make_version_is_lowercase_base32_and_stable():
    digest = hashlib.sha256(b"x").digest()
    assert make_version(digest) == make_version(digest)
    assert make_version(digest).isalnum() and make_version(digest).islower() and len(make_version(digest)) == 52


def test_publish_then_resolve_every_ref_form(tmp_path):
    store = Store(tmp_path)
    old = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    new = publish(store, "mnist", "b", "2026-02-01T00:00:00+00:00")
    assert store.resolve("dataset", "mnist") == new
    assert store.resolve("dataset", "mnist:latest") == new
    assert store.resolve("dataset", f"mnist:{old.version}") == old
    assert store.resolve("dataset", old.ref) == old
    assert store.resolve("dataset", f"mnist:{old.version[:6]}") == old
    assert store.resolve("dataset", str(old.path)) == old
    assert [e.version for e in store.list("dataset")] == [new.version, old.version]
    assert not any((tmp_path / "tmp").iterdir())


def test_publishing_the_same_content_twice_is_a_noop(tmp_path):
    store = Store(tmp_path)
    first = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    second = publish(store, "mnist", "a", "2026-03-01T00:00:00+00:00")
    assert first.path == second.path and first.created == second.created
    assert len(store.list("dataset")) == 1


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.stage("dataset") as staged:
            (staged / "half").write_text("x")
            raise RuntimeError("slicer died")
    assert store.list("dataset") == []
    assert not any((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize(
    ("ref", "words"),
    [("mnsit", "did you mean 'mnist'"), ("mnist:zzzzzz", "has versions"), ("mnist:ab", "at least 4"), ("other", "known: mnist")],
)
def test_unknown_refs_say_why(tmp_path, ref, words):
    store = Store(tmp_path)
    publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    with pytest.raises(RefNotFoundError, match=words):
        store.resolve("dataset", ref)


def test_empty_store_says_so(tmp_path):
    with pytest.raises(RefNotFoundError, match="store is empty"):
        Store(tmp_path).resolve("model", "x")


def test_remove_deletes_entry_and_empty_name_dir(tmp_path):
    store = Store(tmp_path)
    entry = publish(store, "mnist", "a", "2026-01-01T00:00:00+00:00")
    assert store.remove("dataset", "mnist") == entry
    assert not entry.path.exists() and not entry.path.parent.exists()
    with pytest.raises(RefNotFoundError):
        store.resolve("dataset", "mnist")


def test_write_json_atomic_refuses_nan_and_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_json_atomic_honours_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_latest_tells_apart_builds_within_one_second(tmp_path):
    from builder.store import utc_now

    store = Store(tmp_path)
    entries = [publish(store, "mnist", str(i), utc_now()) for i in range(5)]
    assert store.resolve("dataset", "mnist:latest") == entries[-1]
