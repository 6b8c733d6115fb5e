"""The image writer against its readable recipe and against independent readers, on the real Docker engine.

For each kind (dataset, runtime from a tiny venv, model on that runtime) the image swcli writes is compared with
the image `docker build` makes of the `--dockerfile-only` context of the same inputs: the files the layers add
(type, mode, owner, link target, sha256) and the run-time config. Then skopeo and umoci read what we wrote, the
images still run as before, and two copies of a project built apart give the same image ids.

Skipped when no engine answers a ping. Everything runs against one store and one set of images built once for the
module; only the images made here (`swds/parity-ds`, `swrt/parity-env`, `swmp/parity-model`, and the untagged
images `docker build` made) are removed afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.engine import run_removed
from tests.helpers.models import HANDLER, MODEL_YAML

BASE = "swcli/base:bookworm-py3.11"
KINDS = ("dataset", "runtime", "model")
NAMES = {"dataset": "parity-ds", "runtime": "parity-env", "model": "parity-model"}
REPOS = {"dataset": "swds/parity-ds", "runtime": "swrt/parity-env", "model": "swmp/parity-model"}
# where each kind's own layers land: the filesystems are compared under these (the parent's layers are shared)
ROOTS = {"dataset": "/dataset", "runtime": "/opt/swcli", "model": "/opt/swcli/model"}
DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io CLI, the one whose BuildKit matches the 20.10 engine
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # what Dockerfile builders add
CONFIG_FIELDS = ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "Volumes", "Labels")
pytestmark = pytest.mark.docker


def swcli(*args) -> None:
    from builder.cli import main

    code = main([str(a) for a in args])
    assert code == 0, f"swcli {' '.join(map(str, args))} exited {code}"


@pytest.fixture(scope="module")
def engine(base_engine):
    return base_engine


def tiny_venv(path: Path) -> Path:
    """A venv whose site-packages holds a folder, an executable, symlinks to a file and a folder, a hard link."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3.*/site-packages"))
    pkg = site / "paritypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 3\n")
    (pkg / "sub" / "data.txt").write_text("parity data\n")
    (pkg / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(pkg / "tool.sh", 0o750)
    os.chmod(pkg / "sub" / "data.txt", 0o600)  # normalised to 0644 by both paths
    os.symlink("sub/data.txt", pkg / "link.txt")
    os.symlink("sub", pkg / "sublink")
    os.link(pkg / "sub" / "data.txt", pkg / "hard.txt")
    (site / "paritypkg.pth").write_text("# nothing to add\n")
    return path


def model_project(root: Path) -> Path:
    (root / "code" / "util").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "code" / "util" / "__init__.py").write_text("")
    (root / "code" / "util" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "code" / "util" / "run.sh", 0o755)
    (root / "models").mkdir()
    (root / "models" / "weights.json").write_text(json.dumps({"offset": 0}))
    (root / "model.yaml").write_text(MODEL_YAML.replace("name: modthree", f"name: {NAMES['model']}"))
    return root


def dataset_project(root: Path) -> Path:
    write_tiny_dataset(root, [(bytes([i]) * (10 + i), i % 3) for i in range(50)], files=3)
    spec = root / "dataset.yaml"
    spec.write_text(spec.read_text().replace("name: tiny", f"name: {NAMES['dataset']}"))
    return root


def build_all(projects: dict[str, Path], *extra) -> None:
    """dataset, runtime, model: the same CLI calls a user makes (``extra``: --no-load or --dockerfile-only)."""
    swcli("dataset", "build", projects["dataset"], *extra)
    swcli("runtime", "build", "--venv", projects["runtime"], "--name", NAMES["runtime"], "--skip-gen-env", *extra)
    swcli("model", "build", projects["model"], "--skip-gen-env", "--runtime", NAMES["runtime"], *extra)


def docker_build(client, context: Path) -> str:
    """The oracle: `docker build` of the --dockerfile-only folder, untagged (only its id names it). BuildKit through
    Debian's docker CLI when there is one (twice as fast here), else the engine's legacy builder."""
    if Path(DOCKER_CLI).is_file():
        iid = context.parent / f"{context.name}.iid"
        run = subprocess.run([DOCKER_CLI, "build", "-q", "--iidfile", str(iid), str(context)], capture_output=True,
                             text=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        assert run.returncode == 0, run.stderr
        return iid.read_text().strip()
    image_id = None
    for chunk in client.api.build(path=str(context), rm=True, forcerm=True, decode=True, pull=False):
        assert "error" not in chunk and "errorDetail" not in chunk, chunk
        image_id = (chunk.get("aux") or {}).get("ID", image_id)
    assert image_id, f"docker build of {context} gave no image id"
    return image_id


@dataclass
class Built:
    home: Path
    projects: dict[str, Path]
    contexts: dict[str, Path]
    tags: dict[str, str] = field(default_factory=dict)  # kind -> swxx/name:version
    oracle: dict[str, str] = field(default_factory=dict)  # kind -> id of the docker-built image

    @property
    def layout(self):
        from builder.images.oci import Layout

        return Layout(self.home / "oci")

    def image(self, kind: str):
        from builder.images.image import read_image

        return read_image(self.layout, self.tags[kind])


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory):
    """The three images built once by swcli (loaded into the engine), their --dockerfile-only contexts, and what
    the legacy builder makes of those contexts."""
    from builder.build.entry_image import image_for
    from builder.store import Store

    root = tmp_path_factory.mktemp("parity")
    projects = {"dataset": dataset_project(root / "ds"), "runtime": tiny_venv(root / "venv"),
                "model": model_project(root / "model")}
    contexts = {kind: root / "ctx" / kind for kind in KINDS}
    out = Built(root / "home", projects, contexts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWCLI_HOME", str(out.home))
        build_all(projects)
        store = Store()
        for kind in KINDS:
            entry = store.resolve(kind, NAMES[kind])
            out.tags[kind] = f"{REPOS[kind]}:{entry.version}"
        out.tags["model"] = image_for("model", NAMES["model"])  # `<version>-<image id>` (issue 18)
        assert Store().layout.root == out.home / "oci"
        old = os.umask(0o022)
        try:
            swcli("dataset", "build", projects["dataset"], "--dockerfile-only", contexts["dataset"])
            swcli("runtime", "build", "--venv", projects["runtime"], "--name", NAMES["runtime"], "--skip-gen-env",
                  "--dockerfile-only", contexts["runtime"])
            swcli("model", "build", projects["model"], "--skip-gen-env", "--runtime", NAMES["runtime"],
                  "--dockerfile-only", root / "ctx" / "model-out")
        finally:
            os.umask(old)
        contexts["model"] = root / "ctx" / "model-out" / "model"
        try:
            for kind in KINDS:
                if kind == "model":  # its FROM is our runtime image
                    in_engine(engine, out, "runtime")
                out.oracle[kind] = docker_build(engine, contexts[kind])
            yield out
        finally:
            for image_id in out.oracle.values():
                _remove(engine, image_id)
            for repo in REPOS.values():
                for image in engine.images.list(name=repo):
                    for tag in image.tags:
                        _remove(engine, tag)


def _remove(client, ref: str) -> None:
    import docker

    try:
        client.images.remove(ref, force=True)
    except docker.errors.NotFound:
        pass


def in_engine(engine, built: Built, kind: str) -> str:
    """Our image's tag, loaded again if the engine lost it meanwhile (another session's cleanup): only missing
    layers are sent."""
    from builder.images.daemon import load
    from builder.images.engine import image_exists

    tag = built.tags[kind]
    if not image_exists(engine, tag):
        load(engine, built.layout, built.image(kind), [tag])
    return tag


# --------------------------------------------------------------------------------------- filesystem parity


class _Stream(io.RawIOBase):
    def __init__(self, chunks):
        self.chunks, self.rest = iter(chunks), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.rest:
            try:
                self.rest = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self.rest))
        buffer[:n], self.rest = self.rest[:n], self.rest[n:]
        return n


def filesystem(client, image: str, root: str) -> dict[str, tuple]:
    """``{path: (type, mode, uid, gid, link target or sha256)}`` of everything under ``root`` in ``image``, read
    from the engine's archive of a created container (what `docker export` / `docker cp` stream). A hard link
    counts as the file it links to: only the context-folder route cannot keep it, and a reader sees the same."""
    container = client.containers.create(image, command=["true"])
    try:
        chunks, _ = container.get_archive(root)
        top = os.path.dirname(root.rstrip("/"))
        files: dict[str, tuple] = {}
        with tarfile.open(fileobj=io.BufferedReader(_Stream(chunks), 1 << 20), mode="r|") as tar:
            for m in tar:
                path = f"{top}/{m.name}".replace("//", "/").rstrip("/")
                meta = (oct(m.mode & 0o7777), m.uid, m.gid)
                if m.isdir():
                    files[path] = ("dir", *meta, "")
                elif m.issym():
                    files[path] = ("symlink", *meta, m.linkname)
                elif m.islnk():
                    target = f"{top}/{m.linkname}".replace("//", "/")
                    files[path] = ("file", *meta, files[target][4])
                elif m.isfile():
                    files[path] = ("file", *meta, hashlib.sha256(tar.extractfile(m).read()).hexdigest())
                else:
                    files[path] = (f"type {m.type!r}", *meta, "")
        return files
    finally:
        container.remove(v=True, force=True)


def differences(ours: dict, theirs: dict) -> list[str]:
    out = [f"{p}: only in swcli's image {ours[p]}" for p in sorted(set(ours) - set(theirs))]
    out += [f"{p}: only in docker build's image {theirs[p]}" for p in sorted(set(theirs) - set(ours))]
    out += [f"{p}: swcli {ours[p]} != docker build {theirs[p]}" for p in sorted(set(ours) & set(theirs))
            if ours[p] != theirs[p]]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_written_image_has_the_files_docker_build_makes_of_the_template(engine, built, kind):
    ours = filesystem(engine, in_engine(engine, built, kind), ROOTS[kind])
    theirs = filesystem(engine, built.oracle[kind], ROOTS[kind])
    assert len(ours) > 3
    diff = differences(ours, theirs)
    assert not diff, "\n".join(diff)
    if kind == "runtime":  # the venv's odd entries made it, as what they are
        site = next(p for p in ours if p.endswith("site-packages/paritypkg"))
        assert ours[f"{site}/link.txt"][::4] == ("symlink", "sub/data.txt")
        assert ours[f"{site}/sublink"][::4] == ("symlink", "sub")
        assert ours[f"{site}/tool.sh"][1] == "0o755" and ours[f"{site}/sub/data.txt"][1] == "0o644"
        assert ours[f"{site}/hard.txt"] == ours[f"{site}/sub/data.txt"]


def run_config(engine, image: str) -> dict:
    return {f: engine.images.get(image).attrs["Config"].get(f) for f in CONFIG_FIELDS}


@pytest.mark.parametrize("kind", KINDS)
def test_written_image_has_the_config_docker_build_makes_of_the_template(engine, built, kind):
    """Env (with the PATH a Dockerfile builder adds to a parent without one), entrypoint, cmd, user, workdir,
    volumes and labels are the same."""
    ours, theirs = run_config(engine, in_engine(engine, built, kind)), run_config(engine, built.oracle[kind])
    assert ours == theirs
    assert ours["Labels"]["io.swcli.kind"] == kind and ours["User"] == "1000:1000"
    # both sit on the same parent layers; the engine's id is the digest of the config we wrote
    attrs = engine.images.get(built.tags[kind]).attrs
    parent = engine.images.get(built.tags["runtime"] if kind == "model" else BASE).attrs["RootFS"]["Layers"]
    oracle_layers = engine.images.get(built.oracle[kind]).attrs["RootFS"]["Layers"]
    assert attrs["RootFS"]["Layers"][:len(parent)] == oracle_layers[:len(parent)] == parent
    assert attrs["Id"] == built.image(kind).image_id


@pytest.mark.parametrize("kind", KINDS)
def test_written_env_equals_docker_builds_env(engine, built, kind):
    assert run_config(engine, in_engine(engine, built, kind))["Env"] == run_config(engine, built.oracle[kind])["Env"]


@pytest.mark.parametrize("kind", KINDS)
def test_written_layers_add_nothing_outside_their_folder(built, kind):
    image = built.image(kind)
    parent_layers = len(built.image("runtime").layers) if kind == "model" else None
    from builder.images.image import read_image

    if parent_layers is None:
        parent_layers = len(read_image(built.layout, BASE).layers)
    root = ROOTS[kind].strip("/")
    ancestors = {str(p) for p in Path(root).parents if str(p) != "."}
    for blob in image.layers[parent_layers:]:
        with built.layout.open_blob(blob.digest) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for m in tar:
                assert m.name == root or m.name.startswith(root + "/") or (m.name in ancestors and m.isdir()), m.name
                assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0), m.name


def test_context_written_under_a_group_writable_umask_builds_the_same_files(engine, built, tmp_path, monkeypatch):
    """`--dockerfile-only` run by a user whose umask is 002 (Debian's default for user-private groups)."""
    monkeypatch.setenv("SWCLI_HOME", str(built.home))
    old = os.umask(0o002)
    try:
        swcli("model", "build", built.projects["model"], "--skip-gen-env", "--runtime", NAMES["runtime"],
              "--dockerfile-only", tmp_path / "out")
    finally:
        os.umask(old)
    in_engine(engine, built, "runtime")
    oracle = docker_build(engine, tmp_path / "out" / "model")
    try:
        ours = filesystem(engine, in_engine(engine, built, "model"), ROOTS["model"])
        diff = differences(ours, filesystem(engine, oracle, ROOTS["model"]))
        assert not diff, "\n".join(diff)
    finally:
        _remove(engine, oracle)


# --------------------------------------------------------------------------------------- independent readers

def essentials(config: dict) -> dict:
    run = config.get("config") or {}
    return {"run": {f: run.get(f) or None for f in CONFIG_FIELDS}, "rootfs": config["rootfs"],
            "history": config["history"], **{k: config[k] for k in ("created", "architecture", "os")}}


def plain_copy(layout, image, tag: str, dest: Path) -> Path:
    """A layout at ``dest`` holding only ``image`` under ``tag``, every blob a file (recipes read out)."""
    import shutil

    from builder.images.oci import Layout

    copy = Layout(dest)
    copy.blobs.mkdir(parents=True, exist_ok=True)
    for blob in (image.manifest, image.config, *image.layers):
        with layout.open_blob(blob.digest) as fh, open(copy.blob_path(blob.digest), "wb") as out:
            shutil.copyfileobj(fh, out)
    copy.tag(tag, image.manifest)
    return dest


@pytest.mark.skopeo
@pytest.mark.umoci
@pytest.mark.parametrize("kind", KINDS)
def test_skopeo_and_umoci_read_each_kind(engine, built, kind, tmp_path):
    from builder.images.image import read_image
    from builder.images.oci import Layout

    ours = built.image(kind)
    tag = in_engine(engine, built, kind)
    # from the engine: skopeo checks every layer against its digest and the config's diff_ids on the way
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-oci-accept-uncompressed-layers", f"docker-daemon:{tag}",
                    f"oci:{tmp_path / 'copy'}:x"], check=True)
    copied = read_image(Layout(tmp_path / "copy"), "x")
    # kept uncompressed, as we store them: the same blobs (skopeo 1.9 labels them tar+gzip all the same)
    assert [(b.digest, b.size) for b in copied.layers] == [(b.digest, b.size) for b in ours.layers]
    assert essentials(copied.config_json) == essentials(ours.config_json)  # skopeo rewrites the config it converts
    # our layout, as written
    doc = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{built.layout.root}:{tag}"], capture_output=True,
                                    text=True, check=True).stdout)
    assert doc["Digest"] == ours.manifest.digest and doc["Layers"] == [b.digest for b in ours.layers]
    assert doc["Labels"]["io.swcli.kind"] == kind and doc["Created"] == "1970-01-01T00:00:00Z"
    if kind == "runtime":  # its layers are the model image's first ones, unpacked below: here umoci reads its config
        stat = json.loads(subprocess.run(["umoci", "stat", "--json", "--image", f"{built.layout.root}:{tag}"],
                                         capture_output=True, text=True, check=True).stdout)
        said = [h.get("created_by") for h in stat["history"]]
        assert said == [h.get("created_by") for h in ours.config_json["history"]]
        return
    bundle = tmp_path / "bundle"
    # a dataset's volume layers are recipes over the store's volumes in our layout, which only swcli reads: umoci
    # unpacks a plain copy of the image, each blob written out as swcli reads it
    source = f"{plain_copy(built.layout, ours, tag, tmp_path / 'plain')}:{tag}" if kind == "dataset" else \
        f"{built.layout.root}:{tag}"
    run = subprocess.run(["umoci", "unpack", "--rootless", "--image", source, str(bundle)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rootfs = bundle / "rootfs"
    if kind == "dataset":
        assert json.loads((rootfs / "dataset/manifest.json").read_text())["name"] == NAMES["dataset"]
    else:
        assert json.loads((rootfs / "opt/swcli/model/src/models/weights.json").read_text()) == {"offset": 0}
        assert json.loads((rootfs / "opt/swcli/model/manifest.json").read_text())["name"] == NAMES["model"]
        site = rootfs / "opt/swcli/env/lib/python3.11/site-packages/paritypkg"  # from the runtime's layers
        assert (site / "__init__.py").read_text() == "VALUE = 3\n" and os.readlink(site / "link.txt") == "sub/data.txt"


# --------------------------------------------------------------------------------------- docker run


def test_dataset_image_copies_out_like_an_init_container_and_lists(engine, built, tmp_path):
    from builder.store import Store

    tag = in_engine(engine, built, "dataset")
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # the image runs as 1000:1000
    run_removed(engine, tag, ["cp", "-r", "/dataset/.", "/out/"], volumes={str(out): {"bind": "/out", "mode": "rw"}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWCLI_HOME", str(built.home))
        entry = Store().resolve("dataset", NAMES["dataset"])
    shards = sorted(p.name for p in entry.path.iterdir() if p.name != "manifest.json")
    assert sorted(p.name for p in out.iterdir()) == sorted([*shards, "manifest.json", "layers.json"])
    assert all((out / name).read_bytes() == (entry.path / name).read_bytes() for name in shards)
    listing = run_removed(engine, tag).decode()  # the default command: ls -l /dataset
    assert all(name in listing for name in shards)


def test_runtime_image_runs_help_and_imports_the_env(engine, built):
    tag = in_engine(engine, built, "runtime")
    assert b"Usage: docker run IMAGE" in run_removed(engine, tag)  # CMD --help
    out = run_removed(engine, tag, ["-c", "import paritypkg, builder; print(paritypkg.VALUE)"],
                      entrypoint=["python3"])
    assert out.strip() == b"3"


def test_model_image_evals_the_dataset_image_like_in_process(engine, built, tmp_path, monkeypatch):
    from builder.jobs.docker import run_job
    from builder.store import Store

    monkeypatch.setenv("SWCLI_HOME", str(built.home))
    for kind in ("dataset", "model"):
        in_engine(engine, built, kind)
    swcli("model", "eval", NAMES["model"], "--dataset", NAMES["dataset"], "-o", tmp_path / "local")
    logs: list[str] = []
    assert run_job(NAMES["model"], NAMES["dataset"], tmp_path / "container", store=Store(), client=engine,
                   log=logs.append) == 0, logs[-20:]
    for name in ("metrics.json", "results.jsonl"):
        assert (tmp_path / "container" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    run = json.loads((tmp_path / "container" / "run.json").read_text())
    assert run["status"] == "succeeded" and run["records"]["ok"] == 50 and run["runtime"] == built.tags["runtime"]


# --------------------------------------------------------------------------------------- reproducibility


def seed_base(src, dst) -> None:
    """Put the base image of layout ``src`` into layout ``dst`` (blobs hard-linked), as a first build would."""
    from builder.images.image import read_image

    base = read_image(src, BASE)
    dst.blobs.mkdir(parents=True, exist_ok=True)
    for blob in (base.manifest, base.config, *base.layers):
        os.link(src.blob_path(blob.digest), dst.blob_path(blob.digest))
    dst.tag(BASE, base.manifest)


def test_two_copies_built_apart_give_identical_image_ids(built, tmp_path, monkeypatch):
    """Different folders, file mtimes and SWCLI_HOME, no engine at all: the same dataset, runtime and model ids,
    which are also those of the images built for this module."""
    from builder.images.image import read_image
    from builder.images.oci import Layout

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # --no-load must not need one
    ids = []
    for n, copy in enumerate((tmp_path / "a" / "one", tmp_path / "b" / "two" / "three")):
        projects = {"dataset": dataset_project(copy / "ds"), "runtime": tiny_venv(copy / "venv"),
                    "model": model_project(copy / "model")}
        for i, path in enumerate(sorted(p for folder in projects.values() for p in folder.rglob("*"))):
            if not path.is_symlink():
                os.utime(path, (1_000_000_000 + n * 86_400_000 + i * 7, 1_000_000_000 + n * 86_400_000 + i * 7))
        home = copy / f"home-{n}"
        monkeypatch.setenv("SWCLI_HOME", str(home))
        seed_base(built.layout, Layout(home / "oci"))
        build_all(projects, "--no-load")
        layout = Layout(home / "oci")
        ids.append({kind: read_image(layout, f"{REPOS[kind]}:latest").image_id for kind in KINDS})
    assert ids[0] == ids[1] == {kind: built.image(kind).image_id for kind in KINDS}
