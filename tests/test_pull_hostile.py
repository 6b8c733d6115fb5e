"""`swcli pull` of images made to hurt: hostile labels, a dataset with no shards or with names out of its entry, a
corrupted shard, a model whose files leave src/ or differ from its manifest. Each is one line, exit 5, and leaves
no store entry, no staging folder and no local swcli tag. Images are built here with tiny Dockerfiles."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tarfile

import pytest

docker = pytest.importorskip("docker")

from builder.store import Store
from tests.test_images_docker import BASE, engine  # noqa: F401  (fixture reused)
from tests.test_registry import plain_registry  # noqa: F401  (fixture reused)

pytestmark = pytest.mark.docker
VERSION = "abcd1234efgh5678"


def build_and_push(client, registry, repo: str, labels: dict, files: dict[str, bytes] | None = None,
                   copy: str = "") -> str:
    """Build FROM the base with ``labels`` and ``files`` (context paths) and push it; returns the remote ref."""
    label_line = " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    dockerfile = f"FROM {BASE}\n{copy}\nLABEL {label_line}\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    ref = f"{registry.address}/{repo}:1"
    client.images.build(fileobj=buf, custom_context=True, tag=ref, rm=True)
    for event in client.api.push(ref, stream=True, decode=True):
        assert "error" not in event, event
    with contextlib.suppress(docker.errors.ImageNotFound):  # the engine is shared: another test may clean up first
        client.images.remove(ref, force=True)
    return ref


def assert_refused(cli, engine, swcli_home, ref, *words):  # noqa: F811
    res = cli("pull", ref)
    lines = [line for line in res.err.splitlines() if line.strip()]  # layer progress may come before the error
    errors = [line for line in lines if line.startswith("swcli: error: ")]
    assert res.code == 5 and len(errors) == 1 and lines[-1] == errors[0], res.err
    assert "Traceback" not in res.err
    for word in words:
        assert word in errors[0], errors[0]
    store = Store()
    assert store.list("dataset") == [] and store.list("model") == [] and store.list("runtime") == []
    assert not list((swcli_home / "tmp").glob("*")) if (swcli_home / "tmp").exists() else True
    with contextlib.suppress(docker.errors.ImageNotFound):  # the pulled image got no local swcli tag
        assert not [t for t in engine.images.get(ref).tags if t.startswith(("swds/", "swmp/", "swrt/"))]


HOSTILE = [
    ({"io.swcli.kind": "dataset", "io.swcli.name": "../../evil", "io.swcli.version": VERSION}, "io.swcli.name"),
    ({"io.swcli.kind": "model", "io.swcli.name": "evil/sub", "io.swcli.version": VERSION}, "io.swcli.name"),
    ({"io.swcli.kind": "dataset", "io.swcli.name": "evil", "io.swcli.version": "../../../tmp/x"}, "io.swcli.version"),
    ({"io.swcli.kind": "dataset", "io.swcli.name": "evil", "io.swcli.version": "a:b"}, "io.swcli.version"),
    ({"io.swcli.kind": "../x", "io.swcli.name": "evil", "io.swcli.version": VERSION}, "io.swcli.kind"),
]


def test_hostile_labels_are_refused_before_any_tag_or_path(engine, cli, swcli_home, plain_registry):  # noqa: F811
    for n, (labels, field) in enumerate(HOSTILE):
        ref = build_and_push(engine, plain_registry, f"hostile{n}", labels)
        assert_refused(cli, engine, swcli_home, ref, field, "label")
    assert not (swcli_home.parent / "evil").exists()


def dataset_labels(name: str) -> dict:
    return {"io.swcli.kind": "dataset", "io.swcli.name": name, "io.swcli.version": VERSION}


def test_a_dataset_image_with_no_shards_is_not_recorded(engine, cli, swcli_home, plain_registry):  # noqa: F811
    manifest = {"kind": "dataset", "name": "bare", "version": VERSION, "records": 0}
    ref = build_and_push(engine, plain_registry, "bare", dataset_labels("bare"),
                         {"dataset/manifest.json": json.dumps(manifest).encode()}, "COPY dataset/ /dataset/")
    assert_refused(cli, engine, swcli_home, ref, "/dataset/manifest.json", "'shards'", "not recording")
    empty = build_and_push(engine, plain_registry, "bare2", dataset_labels("bare"),
                           {"dataset/.keep": b""}, "COPY dataset/ /dataset/")
    assert_refused(cli, engine, swcli_home, empty, "manifest.json", "missing")
    nothing = build_and_push(engine, plain_registry, "bare3", dataset_labels("bare"))
    assert_refused(cli, engine, swcli_home, nothing, "cannot copy /dataset out")


def test_a_dataset_manifest_naming_files_outside_is_not_followed(engine, cli, swcli_home, plain_registry):  # noqa: F811
    hostname = b"not-a-shard\n"
    manifest = {"kind": "dataset", "name": "evil", "version": VERSION, "records": 1,
                "shards": [{"file": "../etc/hostname", "records": 1, "size": len(hostname),
                            "sha256": hashlib.sha256(hostname).hexdigest()}],
                "index": {"file": "index.swidx", "size": 0}}
    ref = build_and_push(engine, plain_registry, "evil", dataset_labels("evil"),
                         {"dataset/manifest.json": json.dumps(manifest).encode(), "dataset/index.swidx": b""},
                         "COPY dataset/ /dataset/")
    assert_refused(cli, engine, swcli_home, ref, "/dataset/manifest.json", "shards[0].file", "../etc/hostname")


def test_a_dataset_whose_shard_differs_from_its_manifest_is_not_recorded(engine, cli, swcli_home, tiny_dataset,  # noqa: F811
                                                                         plain_registry):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    entry = Store().resolve("dataset", "tiny")
    files = {f"dataset/{p.name}": p.read_bytes() for p in sorted(entry.path.iterdir())}
    shard = bytearray(files["dataset/data-00001.swds"])
    shard[40] ^= 1
    files["dataset/data-00001.swds"] = bytes(shard)
    labels = {"io.swcli.kind": "dataset", "io.swcli.name": "tiny", "io.swcli.version": entry.version}
    ref = build_and_push(engine, plain_registry, "badtiny", labels, files, "COPY dataset/ /dataset/")
    shutil.rmtree(entry.path.parent)  # a fresh store: the pull must not find the good copy
    assert_refused(cli, engine, swcli_home, ref, "/dataset/data-00001.swds", "sha256")


@pytest.mark.parametrize("path, content, words", [
    ("../../../etc/passwd", b"x", ["files[0].path", "../../../etc/passwd"]),
    ("handler.py", b"tampered", ["files[0].sha256", "src/handler.py"]),
])
def test_a_model_whose_files_leave_src_or_differ_is_not_recorded(engine, cli, swcli_home, plain_registry,  # noqa: F811
                                                                 path, content, words):
    original = b"print('hi')\n"
    manifest = {"kind": "model", "name": "badmodel", "version": VERSION,
                "files": [{"path": path, "size": len(original), "sha256": hashlib.sha256(original).hexdigest(),
                           "role": "code", "executable": False}]}
    labels = {"io.swcli.kind": "model", "io.swcli.name": "badmodel", "io.swcli.version": VERSION}
    files = {"meta/manifest.json": json.dumps(manifest).encode(), "code/handler.py": content.ljust(len(original))}
    ref = build_and_push(engine, plain_registry, "badmodel", labels, files,
                         "COPY code/ /opt/swcli/model/src/\nCOPY meta/ /opt/swcli/model/")
    assert_refused(cli, engine, swcli_home, ref, "/opt/swcli/model/manifest.json", *words)
