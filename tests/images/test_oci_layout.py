"""The OCI layout and layer writer without an engine: determinism, hard links, temp files of killed writers,
refs that never point at a missing blob, corrupt blobs caught by verification."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap

import pytest

from builder.images.context import from_tree
from builder.images.image import ConfigChanges, NewLayer, read_image, write_image
from builder.images.layers import LayerCache, placed, stat_key, write_layer
from builder.images.oci import Layout, LayoutError


def tree(root, mtime=None):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "run").write_text("#!/bin/sh\n")
    os.chmod(root / "pkg" / "run", 0o750)
    os.link(root / "pkg" / "a.py", root / "pkg" / "b.py")
    os.symlink("a.py", root / "pkg" / "c.py")
    if mtime is not None:
        for p in root.rglob("*"):
            os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


def test_the_same_files_give_the_same_layer_whatever_the_folder_and_mtimes(tmp_path):
    one, two = tree(tmp_path / "one", 1_000_000), tree(tmp_path / "elsewhere" / "two", 2_000_000)
    layout = Layout(tmp_path / "oci")
    a = write_layer(layout, placed(from_tree("src", one), "src", "/opt/x"))
    b = write_layer(layout, placed(from_tree("src", two), "src", "/opt/x"))
    assert a == b
    with tarfile.open(layout.blob_path(a.digest)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["opt/x/pkg/b.py"].islnk() and members["opt/x/pkg/b.py"].linkname == "opt/x/pkg/a.py"
    assert members["opt/x/pkg/c.py"].issym() and members["opt/x/pkg/run"].mode == 0o755
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members.values()} == {(0, 0, "", "", 0)}
    assert not any(m.pax_headers for m in members.values())


def test_images_have_no_build_time_and_refs_point_at_complete_images(tmp_path, monkeypatch):
    layout = Layout(tmp_path / "oci")
    blob = write_layer(layout, placed(from_tree("src", tree(tmp_path / "t")), "src", "/opt/x"))
    image = write_image(layout, None, [NewLayer(blob, "x")], ConfigChanges(cmd=["true"]), refs=["a/b:1"])
    assert image.config_json["created"] == "1970-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    later = write_image(layout, None, [NewLayer(blob, "x")], ConfigChanges(cmd=["true"]), refs=["a/b:2"])
    assert later.config_json["created"] == "2023-11-14T22:13:20Z" and later.image_id != image.image_id
    assert read_image(layout, "a/b:1").image_id == image.image_id
    layout.discard(blob.digest)
    with pytest.raises(LayoutError, match="is missing"):
        read_image(layout, "a/b:1")
    with pytest.raises(LayoutError, match="not in the layout"):
        write_image(layout, None, [NewLayer(blob, "x")], ConfigChanges(), refs=["a/b:3"])
    assert layout.resolve("a/b:3") is None


def test_a_killed_writer_leaves_a_temp_blob_the_next_build_removes(tmp_path):
    layout = Layout(tmp_path / "oci")
    script = textwrap.dedent(f"""
        import sys, time
        from builder.images.oci import Layout
        with Layout({str(tmp_path / 'oci')!r}).writer("x") as out:
            out.write(b"half")
            out.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    live = list(layout.blobs.glob(".tmp-*"))
    assert len(live) == 1 and layout.clean_temp() == []  # a live writer's file stays
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert layout.clean_temp() == live and not list(layout.blobs.glob(".tmp-*"))
    assert list(layout.blobs.iterdir()) == []  # nothing under a digest name


def test_a_corrupt_cached_layer_is_rewritten_under_verify(tmp_path):
    layout = Layout(tmp_path / "oci")
    entries = placed(from_tree("src", tree(tmp_path / "t")), "src", "/opt/x")
    cache = LayerCache(layout)
    key = stat_key("x", entries)
    good = cache.layer(key, lambda: entries)
    path = layout.blob_path(good.digest)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:  # same size, other bytes: only a re-hash can tell
        fh.seek(600)
        fh.write(b"X")
    assert cache.layer(key, lambda: entries) == good  # the cheap path trusts size
    assert not layout.verify(good.digest)
    again = cache.layer(key, lambda: entries, verify=True)
    assert again == good and layout.verify(good.digest) and cache.misses == 2
    assert json.loads((cache.folder / f"{key}.json").read_text())["digest"] == good.digest
