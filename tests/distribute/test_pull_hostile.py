"""`swcli pull` of images made to hurt: hostile labels, a dataset with no shards or with names out of its entry, a
corrupted shard, a model whose files leave src/ or differ from its manifest, layers whose tars try to write outside
the folder being extracted. Each is one line, exit 5, and leaves no store entry, no staging folder and no local
swcli ref. Images are made here with tiny Dockerfiles on the engine (a tool to make bad input; marked docker) or
written by hand into an OCI layout and pushed by swcli; every pull runs with no engine (``DOCKER_HOST`` nowhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tarfile

import pytest

from builder.store import Store
from tests.helpers.engine import BASE

pytestmark = pytest.mark.usefixtures("no_engine")  # no engine in any swcli call here (`engine` is made before)

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
    import docker

    client.images.build(fileobj=buf, custom_context=True, tag=ref, rm=True)
    for event in client.api.push(ref, stream=True, decode=True):
        assert "error" not in event, event
    with contextlib.suppress(docker.errors.ImageNotFound):  # the engine is shared: another test may clean up first
        client.images.remove(ref, force=True)
    return ref


def assert_refused(cli, swcli_home, ref, *words):
    res = cli("pull", ref)
    lines = [line for line in res.err.splitlines() if line.strip()]  # layer progress may come before the error
    errors = [line for line in lines if line.startswith("swcli: error: ")]
    assert res.code == 5 and len(errors) == 1 and lines[-1] == errors[0], res.err
    assert "Traceback" not in res.err
    for word in words:
        assert word in errors[0], errors[0]
    store = Store()
    assert store.list("dataset") == [] and store.list("model") == [] and store.list("runtime") == []
    assert not [p for p in (swcli_home / "tmp").glob("*") if not p.name.endswith(".lock")] \
        if (swcli_home / "tmp").exists() else True
    layout = Store().layout  # the pulled image got no local swcli ref
    assert not [r for r in (layout.refs() if (layout.root / "index.json").exists() else {})
                if r.startswith(("swds/", "swmp/", "swrt/"))]
    assert not list(layout.blobs.glob(".tmp-*")) if layout.blobs.exists() else True


HOSTILE = [
    ({"io.swcli.kind": "dataset", "io.swcli.name": "../../evil", "io.swcli.version": VERSION}, "io.swcli.name"),
    ({"io.swcli.kind": "model", "io.swcli.name": "evil/sub", "io.swcli.version": VERSION}, "io.swcli.name"),
    ({"io.swcli.kind": "dataset", "io.swcli.name": "evil", "io.swcli.version": "../../../tmp/x"}, "io.swcli.version"),
    ({"io.swcli.kind": "dataset", "io.swcli.name": "evil", "io.swcli.version": "a:b"}, "io.swcli.version"),
    ({"io.swcli.kind": "../x", "io.swcli.name": "evil", "io.swcli.version": VERSION}, "io.swcli.kind"),
]


@pytest.mark.docker
def test_hostile_labels_are_refused_before_any_tag_or_path(engine, cli, swcli_home, plain_registry):  # noqa: F811
    for n, (labels, field) in enumerate(HOSTILE):
        ref = build_and_push(engine, plain_registry, f"hostile{n}", labels)
        assert_refused(cli, swcli_home, ref, field, "label")
    assert not (swcli_home.parent / "evil").exists()


def dataset_labels(name: str) -> dict:
    return {"io.swcli.kind": "dataset", "io.swcli.name": name, "io.swcli.version": VERSION}


@pytest.mark.docker
def test_a_dataset_image_with_no_shards_is_not_recorded(engine, cli, swcli_home, plain_registry):  # noqa: F811
    manifest = {"kind": "dataset", "name": "bare", "version": VERSION, "records": 0}
    ref = build_and_push(engine, plain_registry, "bare", dataset_labels("bare"),
                         {"dataset/manifest.json": json.dumps(manifest).encode()}, "COPY dataset/ /dataset/")
    assert_refused(cli, swcli_home, ref, "/dataset/manifest.json", "'shards'", "not recording")
    empty = build_and_push(engine, plain_registry, "bare2", dataset_labels("bare"),
                           {"dataset/.keep": b""}, "COPY dataset/ /dataset/")
    assert_refused(cli, swcli_home, empty, "manifest.json", "missing")
    nothing = build_and_push(engine, plain_registry, "bare3", dataset_labels("bare"))
    assert_refused(cli, swcli_home, nothing, "/dataset is not in the image")


@pytest.mark.docker
def test_a_dataset_manifest_naming_files_outside_is_not_followed(engine, cli, swcli_home, plain_registry):  # noqa: F811
    hostname = b"not-a-shard\n"
    manifest = {"kind": "dataset", "name": "evil", "version": VERSION, "records": 1,
                "shards": [{"file": "../etc/hostname", "records": 1, "size": len(hostname),
                            "sha256": hashlib.sha256(hostname).hexdigest()}],
                "index": {"file": "index.swidx", "size": 0}}
    ref = build_and_push(engine, plain_registry, "evil", dataset_labels("evil"),
                         {"dataset/manifest.json": json.dumps(manifest).encode(), "dataset/index.swidx": b""},
                         "COPY dataset/ /dataset/")
    assert_refused(cli, swcli_home, ref, "/dataset/manifest.json", "shards[0].file", "../etc/hostname")


@pytest.mark.docker
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
    assert_refused(cli, swcli_home, ref, "/dataset/data-00001.swds", "sha256")


@pytest.mark.parametrize("path, content, words", [
    ("../../../etc/passwd", b"x", ["files[0].path", "../../../etc/passwd"]),
    ("handler.py", b"tampered", ["files[0].sha256", "src/handler.py"]),
])
@pytest.mark.docker
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
    assert_refused(cli, swcli_home, ref, "/opt/swcli/model/manifest.json", *words)


# --- layers written by hand: what no Dockerfile makes, pushed by swcli and pulled with no engine -----------------

def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    return name, kind, data, link


def hostile_layer(layout, members) -> object:
    """A layer blob: a tar of ``members`` (written as given, nothing normalised), or raw bytes that are no tar."""
    from builder.images.oci import MEDIA_LAYER

    with layout.writer(MEDIA_LAYER) as out:
        if isinstance(members, bytes):
            out.write(members)
        else:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, kind, data, link in members:
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o755
                    if kind == tarfile.CHRTYPE:
                        info.devmajor, info.devminor = 1, 3
                    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.descriptor


GOOD_MANIFEST = json.dumps({"kind": "dataset", "name": "evil", "version": VERSION, "records": 0}).encode()
HAND_MADE = {
    "absolute-link": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/manifest.json", tarfile.SYMTYPE,
                                                                     link="/etc/passwd")]], "a link to '/etc/passwd'"),
    "climbing-link": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/up", tarfile.SYMTYPE, link="../..")]],
                      "outside /dataset"),
    "dotdot-name": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/../../evil", data=b"x")]], "'..' name"),
    "absolute-name": ([[member("/dataset/evil", data=b"x")]], "absolute"),
    "device": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/null", tarfile.CHRTYPE)]], "device"),
    "hard-link-out": ([[member("etc/passwd", data=b"root:x:0:0\n"), member("dataset/", tarfile.DIRTYPE),
                        member("dataset/manifest.json", tarfile.LNKTYPE, link="etc/passwd")]], "hard link"),
    "folder-is-a-link": ([[member("dataset", tarfile.SYMTYPE, link="/etc")]], "not a folder"),
    "through-a-link": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/sub", tarfile.SYMTYPE, link=".")],
                        [member("dataset/sub/manifest.json", data=GOOD_MANIFEST)]], "passes through the link"),
    "not-a-tar": ([b"\x7fELF" + bytes(2000)], "not a readable tar"),
    "whited-out": ([[member("dataset/", tarfile.DIRTYPE), member("dataset/manifest.json", data=GOOD_MANIFEST)],
                    [member("dataset/.wh.manifest.json")]], "manifest.json: missing"),
}


@pytest.mark.parametrize("case", sorted(HAND_MADE))
def test_layers_reaching_out_of_the_folder_are_refused(cli, swcli_home, plain_registry, tmp_path, monkeypatch, case):
    from builder.images.image import ConfigChanges, NewLayer, write_image
    from builder.images.oci import Layout

    layers, words = HAND_MADE[case]
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "maker"))
    layout = Layout(tmp_path / "maker" / "oci")
    blobs = [NewLayer(hostile_layer(layout, members), case) for members in layers]
    write_image(layout, None, blobs, ConfigChanges(labels=dataset_labels("evil")), refs=[f"swds/evil:{VERSION}"])
    ref = f"{plain_registry.address}/{case}:1"
    res = cli("dataset", "push", f"swds/evil:{VERSION}", ref)
    assert res.code == 0, res.err
    monkeypatch.setenv("SWCLI_HOME", str(swcli_home))
    assert_refused(cli, swcli_home, ref, "not recording it", *words.split("|"))
    assert not (tmp_path / "evil").exists() and not (swcli_home / "evil").exists()


def test_unpack_applies_layers_like_an_engine(tmp_path):
    """Later files win, whiteouts delete, an opaque whiteout empties its folder, links inside stay links."""
    from builder.images.oci import Layout
    from builder.images.unpack import Listing, unpack

    layout = Layout(tmp_path / "oci")
    layers = [hostile_layer(layout, [member("opt/", tarfile.DIRTYPE), member("dataset/", tarfile.DIRTYPE),
                                     member("dataset/a", data=b"old"), member("dataset/gone", data=b"x"),
                                     member("dataset/sub/b", data=b"b"), member("elsewhere", data=b"e")]),
              hostile_layer(layout, [member("dataset/a", data=b"new"), member("dataset/.wh.gone"),
                                     member("dataset/sub/.wh..wh..opq"), member("dataset/sub/c", data=b"c"),
                                     member("dataset/link", tarfile.SYMTYPE, link="sub/c")])]
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(layout, layers, "/dataset", dest, Listing({"a": 3, "gone": 1, "sub/b": 1, "sub/c": 1}, {"link": "sub/c"}))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["a", "link", "sub", "sub/c"]
    assert (dest / "a").read_bytes() == b"new" and (dest / "link").readlink().as_posix() == "sub/c"
    assert oct((dest / "a").stat().st_mode & 0o7777) == "0o755"
