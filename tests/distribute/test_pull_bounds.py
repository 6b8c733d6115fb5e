"""`swcli pull` of hostile images pushed as raw bytes to a real registry (tests/hostile_images.py): what it keeps.

Disk is bounded and a refused pull leaves nothing (hard links, sparse members, unlisted files, sizes bigger than
the manifest says, declared sizes that cannot be right, oversized manifest.json); pulled entries hold exactly what
their manifest lists (links, chains, `info --verify`); a pull never repoints a local name (versions recomputed,
image tags never moved); hostile member names and wrong-typed fields are one line, exit 5. `swcli gc` reclaims what
nothing reaches and leaves alone what a live process has pinned. No engine anywhere (``DOCKER_HOST`` nowhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.store import Store
from tests import hostile_images as h

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION = "abcd1234efgh5678"


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """Every swcli call here runs with no reachable engine."""


# --- what a pull leaves ---------------------------------------------------------------------------------------------

def blobs(home: Path) -> set[str]:
    folder = home / "oci" / "blobs" / "sha256"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def bytes_on_disk(home: Path) -> int:
    """Bytes the store's files take on disk (blocks, so a sparse file counts for what it really holds)."""
    total = 0
    for path in home.rglob("*") if home.exists() else []:
        if path.is_file() and not path.is_symlink():
            total += path.lstat().st_blocks * 512
    return total


def refused(cli, home: Path, ref: str, *words: str, before: set[str] | None = None) -> str:
    """Pull ``ref``: one error line, exit 5, every word in it; no entry, staging, swcli ref or new blob left."""
    kept = blobs(home) if before is None else before
    entries = _entries()
    res = cli("pull", ref)
    lines = [line for line in res.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("swcli: error: ")]
    assert res.code == 5 and len(errors) == 1 and lines[-1] == errors[0], res.err
    assert "Traceback" not in res.err and str(home) not in errors[0], errors[0]  # no staging path
    for word in words:
        assert word in errors[0], errors[0]
    assert _entries() == entries
    tmp = home / "tmp"
    assert not [p for p in tmp.glob("*") if not p.name.endswith(".lock")] if tmp.exists() else True
    assert blobs(home) <= kept, "the refused pull left blobs"
    layout = Store().layout
    refs = layout.refs() if (layout.root / "index.json").exists() else {}
    assert not [r for r in refs if r.startswith(("swds/evil", "swmp/evil", "swrt/evil"))]
    return errors[0]


def _entries() -> set:
    store = Store()
    return {(kind, e.name, e.version) for kind in ("dataset", "model", "runtime") for e in store.list(kind)}


def run_swcli(home: Path, *args: str) -> tuple[int, str, int, float]:
    """``swcli ARGS`` in a child process under /usr/bin/time (so the child's peak is its own, not that of the
    big test process it would be forked from): exit code, stderr, peak RSS in KiB, seconds. Its tests carry the
    `gnu_time` marker."""
    env = dict(os.environ, SWCLI_HOME=str(home), PYTHONPATH=str(REPO_ROOT), DOCKER_HOST="unix:///nonexistent")
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak-kib=%M", sys.executable, "-c",
                           "import sys; from builder.cli import main; sys.exit(main())", *args],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    seconds = time.monotonic() - started
    err, _, peak = proc.stderr.rpartition("peak-kib=")
    return proc.returncode, err, int(peak.strip()), seconds


# --- images made here -----------------------------------------------------------------------------------------------

@pytest.fixture()
def tiny(cli, tiny_dataset, tmp_path, monkeypatch, swcli_home):
    """The files of a real 50-record dataset entry (built in another store): {name: bytes}, and its manifest as an
    image carries it. The test's own store stays empty."""
    from builder.images.build import image_manifest

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "maker"))
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    entry = Store().resolve("dataset", "tiny")
    files = {p.name: p.read_bytes() for p in sorted(entry.path.iterdir()) if p.name != "manifest.json"}
    files["manifest.json"] = image_manifest(entry.manifest)
    monkeypatch.setenv("SWCLI_HOME", str(swcli_home))
    return {"files": files, "manifest": entry.manifest, "version": entry.version}


def dataset_members(tiny, *, manifest: dict | None = None) -> list:
    files = dict(tiny["files"])
    if manifest is not None:
        files["manifest.json"] = json.dumps(manifest).encode()
    return [h.folder("dataset")] + [h.file(f"dataset/{name}", data) for name, data in sorted(files.items())]


def push_dataset(registry, repo: str, tiny, extra: list, *, version: str | None = None, manifest=None,
                 more_layers: tuple = ()) -> str:
    version = version or tiny["version"]
    layer = h.tar_bytes(dataset_members(tiny, manifest=manifest) + extra)
    return h.push_image(registry.address, repo, [*more_layers, layer], h.labels("dataset", "tiny", version))


def model_image(registry, repo: str, files: dict[str, bytes], *, links: dict | None = None, members: list = (),
                name: str = "evil", version: str | None = None, spec: dict | None = None,
                more_layers: tuple = ()) -> tuple[str, str]:
    """A model image made by hand: ``files`` (path under src/ -> bytes) and ``links`` listed in its manifest,
    ``members`` added to the layer as they are; labelled with the version its files make (or ``version``)."""
    from builder.build.model import model_version

    links = links or {}
    listing = sorted([{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "role": "code",
                       "executable": False} for p, d in files.items()] +
                     [{"path": p, "size": 0, "sha256": hashlib.sha256(b"symlink:" + t.encode()).hexdigest(),
                       "role": "code", "executable": False, "link": t} for p, t in links.items()],
                     key=lambda f: f["path"])
    spec = spec or {"name": name}
    made = model_version(spec, listing, None, None)  # no env lock (env_lock: None below)
    version = version or made
    manifest = {"kind": "model", "name": name, "version": version, "spec": spec, "files": listing,
                "handler": "code.ppl:X", "env_lock": None}
    layer = [h.folder("opt/swcli/model"), h.file("opt/swcli/model/manifest.json", json.dumps(manifest).encode()),
             h.folder("opt/swcli/model/src")]
    for path in sorted({os.path.dirname(p) for p in [*files, *links]} - {""}):
        layer.append(h.folder(f"opt/swcli/model/src/{path}"))
    layer += [h.file(f"opt/swcli/model/src/{p}", d) for p, d in sorted(files.items())]
    layer += [h.symlink(f"opt/swcli/model/src/{p}", t) for p, t in sorted(links.items())]
    ref = h.push_image(registry.address, repo, [*more_layers, h.tar_bytes(layer + list(members))],
                       h.labels("model", name, version))
    return ref, made


def test_a_hand_made_dataset_image_pulls_like_a_built_one(cli, registry, swcli_home, tiny):
    """The baseline the hostile shapes below depart from: the same layout, nothing added, is recorded."""
    ref = push_dataset(registry, "good", tiny, [h.file("dataset/layers.json", b"{}")])
    res = cli("pull", ref)
    assert res.code == 0, res.err
    entry = Store().resolve("dataset", "tiny")
    assert entry.version == tiny["version"] and not (entry.path / "layers.json").exists()  # not part of the entry
    assert cli("dataset", "info", "tiny", "--verify").code == 0


# --- 3. disk is bounded, a refused pull leaves nothing ------------------------------------------------------------

def test_hard_links_stay_links_inside_the_entry_and_unlisted_ones_are_refused(cli, registry, swcli_home, tiny):
    from builder.build.model import model_version

    weights = os.urandom(1 << 20)
    listing = [{"path": p, "size": len(weights), "sha256": hashlib.sha256(weights).hexdigest(), "role": "weights",
                "executable": False} for p in ("w1.bin", "w2.bin")]
    version = model_version({"name": "hl"}, listing, None, None)
    manifest = {"kind": "model", "name": "hl", "version": version, "spec": {"name": "hl"}, "files": listing,
                "env_lock": None}
    layer = [h.folder("opt/swcli/model"), h.file("opt/swcli/model/manifest.json", json.dumps(manifest).encode()),
             h.folder("opt/swcli/model/src"), h.file("opt/swcli/model/src/w1.bin", weights),
             h.hardlink("opt/swcli/model/src/w2.bin", "opt/swcli/model/src/w1.bin")]
    ref = h.push_image(registry.address, "hardlinks", [h.tar_bytes(layer)], h.labels("model", "hl", version))
    res = cli("pull", ref)
    assert res.code == 0, res.err
    src = Store().resolve("model", "hl").path / "src"
    assert (src / "w1.bin").stat().st_ino == (src / "w2.bin").stat().st_ino  # one copy of the bytes
    assert cli("model", "info", "hl", "--verify").code == 0

    many = [h.hardlink(f"dataset/copy-{n:04d}", "dataset/data-00001.swds") for n in range(500)]
    line = refused(cli, swcli_home, push_dataset(registry, "evil-hardlinks", tiny, many), "dataset/copy-0000",
                   "hard link the entry's manifest does not list", before=blobs(swcli_home))
    assert "not recording it" in line


@pytest.mark.parametrize("shape", ["gnu-shard", "pax-manifest", "gnu-outside", "pax-unlisted"])
def test_sparse_members_are_refused_before_a_byte_is_written(cli, registry, swcli_home, tiny, shape):
    big = 1 << 30
    extra = {"gnu-shard": [], "pax-manifest": [], "gnu-outside": [], "pax-unlisted": [h.pax_sparse("dataset/z", big)]}
    members = dataset_members(tiny) + extra[shape]
    if shape == "gnu-shard":
        members = [m for m in members if m.name != "dataset/data-00001.swds"] + [h.gnu_sparse("dataset/data-00001.swds",
                                                                                             big)]
    elif shape == "pax-manifest":
        members = [m for m in members if m.name != "dataset/manifest.json"] + [h.pax_sparse("dataset/manifest.json",
                                                                                           big)]
    elif shape == "gnu-outside":
        members = [h.gnu_sparse("var/big", big)] + members
    ref = h.push_image(registry.address, f"sparse-{shape}", [h.tar_bytes(members)],
                       h.labels("dataset", "tiny", tiny["version"]))
    refused(cli, swcli_home, ref, "sparse member")
    assert bytes_on_disk(swcli_home) < 1 << 20


@pytest.mark.gnu_time
def test_a_sparse_manifest_costs_no_memory(registry, swcli_home, tiny, tmp_path):
    """A 1 GiB sparse manifest.json in a 1 KB layer, and a 256 MiB PAX header: one line, RSS of a normal pull."""
    members = [m for m in dataset_members(tiny) if m.name != "dataset/manifest.json"]
    sparse = h.push_image(registry.address, "sparse-rss", [h.tar_bytes(members + [h.pax_sparse(
        "dataset/manifest.json", 1 << 30)])], h.labels("dataset", "tiny", tiny["version"]))
    header = h.Member("dataset/manifest.json", tiny["files"]["manifest.json"], pax={"comment": "x" * (256 << 20)})
    pax = h.push_image(registry.address, "pax-rss", [h.tar_bytes(members + [header])],
                       h.labels("dataset", "tiny", tiny["version"]))
    for ref, word in ((sparse, "sparse member"), (pax, "extended tar header")):
        code, err, peak_kib, _ = run_swcli(tmp_path / "child-home", "pull", ref)
        assert code == 5 and word in err and "Traceback" not in err, err
        assert peak_kib < 200 << 10, f"{ref}: peak RSS {peak_kib} KiB"
        assert bytes_on_disk(tmp_path / "child-home") < 1 << 20


def test_unlisted_files_are_refused_at_the_first(cli, registry, swcli_home, tiny):
    spam = [h.file(f"dataset/x{n:05d}") for n in range(20_000)]
    started = time.monotonic()
    refused(cli, swcli_home, push_dataset(registry, "unlisted", tiny, spam), "/dataset/x00000",
            "a file the entry's manifest does not list")
    assert time.monotonic() - started < 30
    assert bytes_on_disk(swcli_home) < 1 << 20
    assert not (swcli_home / "cache" / "registry-blobs.json").exists()  # nothing learnt from a refused pull
    refused(cli, swcli_home, push_dataset(registry, "unlisted-dir", tiny, [h.folder("dataset/sub"),
                                                                           h.file("dataset/sub/a", b"a")]),
            "/dataset/sub", "a folder the entry's manifest does not list")


def test_a_file_bigger_than_its_manifest_says_is_refused_while_extracting(cli, registry, swcli_home, tiny):
    members = [m for m in dataset_members(tiny) if m.name != "dataset/data-00001.swds"]
    members.append(h.file("dataset/data-00001.swds", bytes(64 << 20)))  # 64 MiB of zeros: a 64 KB gzip layer
    ref = h.push_image(registry.address, "bigger", [h.tar_bytes(members)], h.labels("dataset", "tiny", tiny["version"]))
    refused(cli, swcli_home, ref, "/dataset/data-00001.swds", f"{64 << 20} bytes in the layer", "allows")
    assert bytes_on_disk(swcli_home) < 1 << 20
    big_manifest = json.loads(tiny["files"]["manifest.json"])
    big_manifest["desc"] = " " * (5 << 20)
    refused(cli, swcli_home, push_dataset(registry, "big-manifest", tiny, [], manifest=big_manifest),
            "/dataset/manifest.json", "allows")


def test_declared_sizes_that_cannot_be_right_are_refused_before_any_layer_is_fetched(cli, registry, swcli_home, tiny):
    from tests.registry_servers import access_log

    layer = h.tar_bytes(dataset_members(tiny))
    lab = h.labels("dataset", "tiny", tiny["version"])
    tib = h.push_image(registry.address, "tib", [layer], lab, layer_sizes={0: 1 << 40})
    refused(cli, swcli_home, tib, "layers[0]", str(1 << 40), "more than")
    many = h.push_image(registry.address, "many", [layer, layer + b"\0" * 512, layer + b"\0" * 1024], lab,
                        layer_sizes={0: 60 << 30, 1: 60 << 30, 2: 60 << 30})
    refused(cli, swcli_home, many, "would leave less than", "free")
    nosize = h.push_image(registry.address, "nosize", [layer], lab, manifest_edit=lambda m: m["config"].pop("size"))
    refused(cli, swcli_home, nosize, "config", "size must be a non-negative integer")
    time.sleep(0.3)
    fetched = [line for line in access_log(registry.log, r"/(tib|many)/blobs/sha256") if line.startswith("GET")]
    assert len(fetched) == 1 and "/many/" in fetched[0], fetched  # many's config only: no layer came down


def test_a_refused_pull_removes_its_own_blobs_and_keeps_what_others_reach(cli, registry, swcli_home, tiny):
    shared = h.tar_bytes([h.folder("etc"), h.file("etc/motd", b"shared base layer\n")])
    good, _ = model_image(registry, "good", {"a.py": b"x = 1\n"}, name="other", more_layers=(shared,))
    assert cli("pull", good).code == 0
    kept = blobs(swcli_home)
    evil = push_dataset(registry, "evil-shared", tiny, [h.file("dataset/zzz", b"x" * 100_000)],
                        more_layers=(shared,))
    refused(cli, swcli_home, evil, "/dataset/zzz", before=kept)
    assert blobs(swcli_home) == kept  # the shared layer stays, the refused image's own are gone
    assert cli("model", "info", "other", "--verify").code == 0


# --- gc -------------------------------------------------------------------------------------------------------------

PINNER = """
import sys, time
from builder.images.oci import Layout
Layout(sys.argv[1]).has(sys.argv[2])
print("pinned", flush=True)
time.sleep(60)
"""


def test_gc_frees_what_nothing_reaches_and_keeps_what_a_live_process_pinned(cli, registry, swcli_home, tiny):
    ref = push_dataset(registry, "good", tiny, [])
    assert cli("pull", ref).code == 0
    kept = blobs(swcli_home)
    folder = swcli_home / "oci" / "blobs" / "sha256"
    orphans = []
    for n in range(3):
        data = os.urandom(100_000 + n)
        orphans.append(hashlib.sha256(data).hexdigest())
        (folder / orphans[-1]).write_bytes(data)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (swcli_home / "tmp").mkdir(exist_ok=True)
    (swcli_home / "tmp" / f".copy-{pid}-abc").write_bytes(b"x" * 50_000)
    (swcli_home / "tmp" / "dataset-stale").mkdir()
    (swcli_home / "tmp" / "dataset-stale" / "shard").write_bytes(b"y" * 10_000)
    pinner = subprocess.Popen([sys.executable, "-c", PINNER, str(swcli_home / "oci"), f"sha256:{orphans[0]}"],
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert pinner.stdout.readline().strip() == "pinned"
        res = cli("gc")
        assert res.code == 0, res.err
        assert "freed 250003 bytes: 2 blob(s), 1 temp file(s), 1 staging folder(s)" in res.out, res.out
        assert blobs(swcli_home) == kept | {orphans[0]}  # pinned by a live process: kept
    finally:
        pinner.kill()
        pinner.wait()
    res = cli("gc")  # the pinning process is gone: its pin goes, and so does the blob
    assert res.code == 0 and "freed 100000 bytes: 1 blob(s)" in res.out, res.out
    assert blobs(swcli_home) == kept
    assert cli("dataset", "info", "tiny", "--verify").code == 0
    res = cli("pull", ref)  # the image is whole: nothing to fetch again
    assert res.code == 0 and "Pull complete" not in res.err, res.err


# --- 4. pulled entries hold exactly what they claim -------------------------------------------------------------------

def test_links_in_a_pulled_dataset_are_refused(cli, registry, swcli_home, tiny):
    refused(cli, swcli_home, push_dataset(registry, "link", tiny, [h.symlink("dataset/alias", "data-00001.swds")]),
            "/dataset/alias", "a link the entry's manifest does not list")
    chain = [h.symlink("dataset/s", "."), h.symlink("dataset/t", "s/" * 12 + "../" * 12 + "etc/hostname")]
    refused(cli, swcli_home, push_dataset(registry, "chain", tiny, chain), "/dataset/s", "a link")


def test_model_links_are_kept_when_they_stay_in_src_and_refused_when_a_chain_leaves(cli, registry, swcli_home):
    ref, version = model_image(registry, "inside", {"w/a.bin": b"weights"}, links={"latest": "w/a.bin",
                                                                                   "dir": "w"}, name="okmodel")
    res = cli("pull", ref)
    assert res.code == 0, res.err
    src = Store().resolve("model", "okmodel").path / "src"
    assert os.readlink(src / "latest") == "w/a.bin" and (src / "dir" / "a.bin").read_bytes() == b"weights"
    assert cli("model", "info", "okmodel", "--verify").code == 0
    for n, links in enumerate([{"s": ".", "t": "s/" * 12 + "../" * 12 + "etc/hostname"},
                               {"a": "b", "b": "a"},
                               {"up": "w/../..", "w/x": "."}]):
        ref, _ = model_image(registry, f"chain{n}", {"w/a.bin": b"weights"}, links=links)
        refused(cli, swcli_home, ref, "/opt/swcli/model/manifest.json", "is a link that")


def test_info_verify_fails_on_unlisted_files_and_links(cli, swcli_home, tiny_dataset, tmp_path):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    entry = Store().resolve("dataset", "tiny")
    assert cli("dataset", "info", "tiny", "--verify").code == 0
    for plant, word in ((lambda p: (p / "extra.bin").write_bytes(b"x"), "extra.bin"),
                        (lambda p: (p / "alias").symlink_to("/etc/hostname"), "alias"),
                        (lambda p: (p / "sub").mkdir(), "sub")):
        plant(entry.path)
        res = cli("dataset", "info", "tiny", "--verify")
        assert res.code == 3 and word in res.err and "does not list" in res.err, res.err
        target = entry.path / word
        target.rmdir() if target.is_dir() and not target.is_symlink() else target.unlink()
    project = tmp_path / "m"
    (project / "code").mkdir(parents=True)
    (project / "code" / "ppl.py").write_text("class X:\n    pass\n")
    (project / "model.yaml").write_text("name: mini\nrun:\n  ppl: code.ppl:X\n")
    res = cli("model", "build", "--no-image", "--skip-gen-env", project)
    assert res.code == 0, res.err
    model = Store().resolve("model", "mini")
    assert cli("model", "info", "mini", "--verify").code == 0
    (model.path / "src" / "code" / "evil.py").write_text("import os\n")
    res = cli("model", "info", "mini", "--verify")
    assert res.code == 3 and "src/code/evil.py" in res.err, res.err


# --- 5. a pull never repoints a local name ----------------------------------------------------------------------------

def test_an_image_whose_content_does_not_make_its_version_is_refused(cli, registry, swcli_home, tiny):
    other = "zz" + tiny["version"][2:]
    manifest = dict(json.loads(tiny["files"]["manifest.json"]), version=other)
    refused(cli, swcli_home, push_dataset(registry, "evil-version", tiny, [], version=other, manifest=manifest),
            "makes version", tiny["version"], other)
    manifest = dict(json.loads(tiny["files"]["manifest.json"]), spec={"name": "tiny", "desc": "changed"})
    refused(cli, swcli_home, push_dataset(registry, "evil-spec", tiny, [], manifest=manifest), "makes version")
    ref, made = model_image(registry, "evil-model", {"a.py": b"x"}, version=VERSION)
    refused(cli, swcli_home, ref, "makes version", made, VERSION)


def test_a_pull_never_repoints_a_local_version_tag(cli, registry, swcli_home, tiny):
    """The store holds tiny:VERSION as one image; an image with the same entry but another config (another
    image id) is refused naming both, and the local tags stay where they were."""
    first = push_dataset(registry, "first", tiny, [])
    assert cli("pull", first).code == 0
    layout = Store().layout
    before = {r: d.digest for r, d in layout.refs().items()}
    local_id = layout.read_json(layout.resolve(f"swds/tiny:{tiny['version']}"))["config"]["digest"]
    layer = h.tar_bytes(dataset_members(tiny))
    second = h.push_image(registry.address, "second", [layer], h.labels("dataset", "tiny", tiny["version"],
                                                                        extra="a label more"))
    line = refused(cli, swcli_home, second, f"swds/tiny:{tiny['version']}", local_id, "refusing to repoint",
                   before=blobs(swcli_home))
    assert line.count("sha256:") == 2
    assert {r: d.digest for r, d in layout.refs().items()} == before


def test_a_runtime_in_the_store_is_not_replaced_by_another_image_of_its_version(cli, registry, swcli_home):
    """The same environment layers (so the same version) on another base: a second image. With the local tags
    gone, the store's entry still names its image, and the pull is refused naming both."""
    from builder.images.runtime_image import runtime_version
    from builder.images.image import NewLayer
    from builder.images.oci import MEDIA_LAYER, Descriptor

    env, sbom = h.tar_bytes([h.file("opt/env", b"e")]), h.tar_bytes([h.file("sbom", b"s")])
    version = runtime_version("venv", [NewLayer(Descriptor(MEDIA_LAYER, h.sha256(env), len(env)), "")])
    lab = h.labels("runtime", "rt", version, **{"io.swcli.env-mode": "venv"})
    first = h.push_image(registry.address, "rt-first", [h.tar_bytes([h.file("base", b"1")]), env, sbom], lab)
    assert cli("pull", first).code == 0
    local_id = Store().resolve("runtime", "rt").manifest["image_id"]
    layout = Store().layout
    index = json.loads((layout.root / "index.json").read_text())
    index["manifests"] = []  # the local tags gone (an older swcli, a hand edit): the store entry remains
    (layout.root / "index.json").write_text(json.dumps(index))
    second = h.push_image(registry.address, "rt-second", [h.tar_bytes([h.file("base", b"2")]), env, sbom], lab)
    refused(cli, swcli_home, second, f"runtime rt:{version}", local_id, "refusing it", before=blobs(swcli_home))
    assert Store().resolve("runtime", "rt").manifest["image_id"] == local_id


def test_a_runtime_whose_layers_do_not_make_its_version_is_refused(cli, registry, swcli_home):
    layers = [h.tar_bytes([h.file("base", b"b")]), h.tar_bytes([h.file("env", b"e")]),
              h.tar_bytes([h.file("sbom", b"s")])]
    ref = h.push_image(registry.address, "evil-runtime", layers, h.labels("runtime", "evil", VERSION,
                                                                           **{"io.swcli.env-mode": "venv"}))
    refused(cli, swcli_home, ref, "not the runtime it names", VERSION)


# --- one line, exit 5 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shown", [
    ("dataset/\x1b[2Jevil", "\\x1b[2Jevil"),
    ("dataset/a\x00b", "\\x00"),
    ("dataset/" + "a" * 300, "a name longer than a file system takes"),
    ("dataset/" + "/".join(["b" * 200] * 25), "a name longer than a file system takes"),
    ("dataset/../../../tmp/evil", "an absolute or '..' name"),
])
def test_hostile_member_names_are_one_line_naming_the_image_and_member(cli, registry, swcli_home, tiny, name, shown):
    member = h.Member("dataset/placeholder", b"x", pax={"path": name})
    ref = push_dataset(registry, "names", tiny, [member])
    line = refused(cli, swcli_home, ref, ref, shown)
    assert "\x1b" not in line and "\x00" not in line and len(line) < 700, line


def _edit(path: tuple, value):
    def edit(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize("path, value, words", [
    (("config", "Labels"), ["io.swcli.kind"], "config.Labels"),
    (("config",), "a string", "config"),
    (("rootfs",), [], "rootfs"),
    (("rootfs", "diff_ids"), "sha256:00", "rootfs.diff_ids"),
    (("config", "Labels", "io.swcli.name"), 7, "label io.swcli.name"),
])
def test_wrong_typed_config_fields_are_one_line(cli, registry, swcli_home, tiny, path, value, words):
    ref = h.push_image(registry.address, "typed", [h.tar_bytes(dataset_members(tiny))],
                       h.labels("dataset", "tiny", tiny["version"]), config_edit=_edit(path, value))
    refused(cli, swcli_home, ref, words)


@pytest.mark.parametrize("manifest, media_type, words", [
    ({"schemaVersion": 2, "config": "x", "layers": []}, h.OCI_MANIFEST, "config"),
    ({"schemaVersion": 2, "config": {"mediaType": h.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": "12"},
      "layers": []}, h.OCI_MANIFEST, "size"),
    ({"schemaVersion": 2, "config": {"mediaType": h.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
      "layers": {"a": 1}}, h.OCI_MANIFEST, "layers"),
    ({"schemaVersion": 2, "config": {"mediaType": h.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
      "layers": [{"mediaType": h.GZIP_LAYER, "digest": "sha256:" + "0" * 64, "size": 1, "annotations": []}]},
     h.OCI_MANIFEST, "annotations"),
])
def test_wrong_typed_manifest_fields_are_one_line(cli, swcli_home, manifest, media_type, words):
    fake = h.serve_image(manifest, {}, [], media_type)
    try:
        line = refused(cli, swcli_home, f"{fake.address}/typed:1", words)
        res = cli("copy", f"{fake.address}/typed:1", f"{fake.address}/copy:1")
        assert res.code == 5 and "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1, res.err
    finally:
        fake.stop()
    assert "pull of" in line


def test_copy_refuses_a_declared_size_it_cannot_hold(cli, registry, swcli_home, tiny):
    layer = h.tar_bytes(dataset_members(tiny))
    tib = h.push_image(registry.address, "tib", [layer], h.labels("dataset", "tiny", tiny["version"]),
                       layer_sizes={0: 1 << 40})
    res = cli("copy", tib, f"{registry.address}/copied:1")
    assert res.code == 5 and "more than" in res.err and "Traceback" not in res.err, res.err
    assert not list((swcli_home / "tmp").glob(".copy-*")) if (swcli_home / "tmp").exists() else True
