"""Against the real Docker engine: the base copied into an OCI layout, images of ours loaded back, only new layers sent.

Marked docker (an engine with the base image). Every image made here is removed afterwards (tags by the ``engine``
fixture, untagged ones by id); the base is only read.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from builder.errors import DockerError
from builder.images import daemon
from builder.images.context import ContextEntry
from builder.images.image import ConfigChanges, Image, NewLayer, read_image, write_image
from builder.images.layers import write_layer
from builder.images.oci import MEDIA_CONFIG, Layout
from tests.helpers.engine import run_removed
from tests.helpers.engine import BASE

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def made(engine):  # noqa: F811
    """Image ids this module creates; removed at the end whether tagged or not."""
    from docker.errors import NotFound

    ids: set[str] = set()
    yield ids
    for image_id in ids:
        try:
            engine.images.remove(image_id, force=True)
        except NotFound:
            pass


@pytest.fixture(scope="module")
def layout(engine, tmp_path_factory):  # noqa: F811
    """A layout holding the base, copied from the engine once for the module."""
    lay = Layout(tmp_path_factory.mktemp("oci") / "oci")
    daemon.import_image(engine, BASE, lay, "base")
    return lay


def _image(layout: Layout, parent: Image | None, files: dict[str, bytes], *more: dict[str, bytes], ref: str = "",
           **changes) -> Image:
    """``parent`` plus one layer per dict of files, tagged ``ref`` in the layout when given."""
    layers = [NewLayer(write_layer(layout, [ContextEntry(name, data=data) for name, data in layer.items()]),
                       ", ".join(layer)) for layer in (files, *more)]
    return write_image(layout, parent, layers, ConfigChanges(**changes), [ref] if ref else [])


def _blobs(layout: Layout) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in layout.root.rglob("*") if p.is_file()}


def test_imported_base_keeps_its_image_id_and_reads_in_skopeo(engine, layout, monkeypatch):  # noqa: F811
    base = read_image(layout, "base")
    attrs = engine.images.get(BASE).attrs
    assert base.image_id == attrs["Id"]
    assert base.diff_ids == attrs["RootFS"]["Layers"] == [b.digest for b in base.layers]
    out = subprocess.run(["skopeo", "inspect", f"oci:{layout.root}:base"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["Layers"] == base.diff_ids
    config = subprocess.run(["skopeo", "inspect", "--config", "--raw", f"oci:{layout.root}:base"],
                            capture_output=True, check=True).stdout
    assert config == layout.blob_path(base.image_id).read_bytes()

    # everything is in the layout now: a second import reads nothing from the engine but its inspect data
    monkeypatch.setattr("docker.models.images.Image.save", lambda *a, **k: pytest.fail("saved again"))
    again = daemon.import_image(engine, BASE, layout, "base-again")
    assert again.manifest.digest == base.manifest.digest


def test_import_of_a_missing_image_is_one_line(engine, tmp_path):  # noqa: F811
    lay = Layout(tmp_path / "oci")
    with pytest.raises(DockerError) as err:
        daemon.import_image(engine, "swcli-test-daemon/none:nothing", lay, "x")
    assert "\n" not in str(err.value) and "swcli-test-daemon/none:nothing" in str(err.value)
    assert not (tmp_path / "oci" / "index.json").exists()


def test_load_runs_and_later_loads_send_only_the_new_layer(engine, layout, made):  # noqa: F811
    base = read_image(layout, "base")
    hello = _image(layout, base, {"srv/hello.txt": b"hello from the layout\n"}, cmd=["cat", "/srv/hello.txt"],
                   ref="t/hello")
    made.add(hello.image_id)
    first = daemon.load(engine, layout, hello, ["swcli-test-daemon/hello:1"])
    print(f"\nnew image on the base (base skipped): {first.bytes_sent} bytes in {first.seconds:.3f} s")
    assert first.image_id == hello.image_id == engine.images.get("swcli-test-daemon/hello:1").id
    assert (first.layers_sent, first.layers_skipped) == (1, 1)
    assert first.bytes_sent < hello.layers[-1].size + (16 << 10)  # config, layer, manifest: not the 200 MB base
    out = run_removed(engine, "swcli-test-daemon/hello:1")
    assert out == b"hello from the layout\n"

    more = _image(layout, hello, {"srv/more.bin": os.urandom(1 << 20)}, ref="t/more")
    made.add(more.image_id)
    second = daemon.load(engine, layout, more, ["swcli-test-daemon/hello:2"])
    print(f"one more 1 MiB layer: {second.bytes_sent} bytes in {second.seconds:.3f} s")
    assert second.image_id == more.image_id == engine.images.get("swcli-test-daemon/hello:2").id
    assert (second.layers_sent, second.layers_skipped) == (1, 2)
    assert more.layers[-1].size <= second.bytes_sent < more.layers[-1].size + (16 << 10)

    # back from the engine: the same config bytes and layers give the same manifest; the base is not rewritten
    base_blob = layout.blob_path(base.layers[0].digest)
    before = base_blob.stat().st_mtime_ns
    back = daemon.import_image(engine, "swcli-test-daemon/hello:2", layout, "t/back")
    assert back.manifest.digest == more.manifest.digest and base_blob.stat().st_mtime_ns == before

    again = daemon.load(engine, layout, more, ["swcli-test-daemon/hello:3"])
    print(f"the same image again, one more tag: {again.bytes_sent} bytes in {again.seconds:.3f} s")
    assert (again.layers_sent, again.layers_skipped) == (0, 3) and again.bytes_sent < 16 << 10
    assert "swcli-test-daemon/hello:3" in engine.images.get(more.image_id).tags


def test_a_code_only_change_sends_the_code_layer(engine, layout, made):  # noqa: F811
    """Weights then code on a runtime that is not tagged anywhere: the previous model version proves the chain."""
    base = read_image(layout, "base")
    runtime = _image(layout, base, {"opt/env/lib.py": b"X = 1\n"})
    weights = {"opt/model/weights.bin": os.urandom(2 << 20)}
    v1 = _image(layout, runtime, weights, {"opt/model/code.py": b"print('v1')\n"}, ref="t/model:v1")
    v2 = _image(layout, runtime, weights, {"opt/model/code.py": b"print('v2')\n"}, ref="t/model:v2")
    made.update({v1.image_id, v2.image_id})
    cold = daemon.load(engine, layout, v1, ["swcli-test-daemon/model:v1"])
    print(f"model v1 (runtime, weights, code on the base): {cold.bytes_sent} bytes in {cold.seconds:.3f} s")
    assert cold.layers_skipped == 1 and cold.bytes_sent > 2 << 20
    code = daemon.load(engine, layout, v2, ["swcli-test-daemon/model:v2"])
    print(f"model v2, code only: {code.bytes_sent} bytes in {code.seconds:.3f} s")
    assert (code.layers_sent, code.layers_skipped) == (1, 3)
    assert code.bytes_sent < v2.layers[-1].size + (16 << 10)  # the code layer and some headers, no weights
    out = run_removed(engine, "swcli-test-daemon/model:v2", ["cat", "/opt/model/code.py"])
    assert out == b"print('v2')\n"


@pytest.mark.parametrize("damage", ["append", "flip"])
def test_a_corrupt_blob_fails_the_load_in_one_line_and_leaves_the_layout(engine, layout, made, damage):  # noqa: F811
    base = read_image(layout, "base")
    image = _image(layout, base, {"srv/data.bin": os.urandom(3 << 20)})
    made.add(image.image_id)
    blob = layout.blob_path(image.layers[-1].digest)
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as fh:
        if damage == "append":
            fh.seek(0, os.SEEK_END)
            fh.write(b"!")
        else:
            fh.seek(2 << 20)
            byte = fh.read(1)
            fh.seek(2 << 20)
            fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(daemon.CorruptBlobError) as err:
        daemon.load(engine, layout, image, ["swcli-test-daemon/corrupt:1"])
    assert "\n" not in str(err.value) and str(blob) in str(err.value)
    assert not blob.exists()
    assert not [i for i in engine.images.list(all=True) if i.id == image.image_id]
    assert read_image(layout, "base") is not None  # the rest of the layout is untouched


def test_a_refused_load_is_one_line_and_changes_nothing(engine, layout, made):  # noqa: F811
    image = _image(layout, None, {"windows.txt": b"not here"})
    config = {**image.config_json, "os": "windows"}
    windows = Image(image.manifest, layout.put_json(config, MEDIA_CONFIG), config, image.layers)
    made.add(windows.image_id)
    before = _blobs(layout)
    with pytest.raises(DockerError) as err:
        daemon.load(engine, layout, windows, ["swcli-test-daemon/windows:1"])
    assert "\n" not in str(err.value) and "swcli-test-daemon/windows:1" in str(err.value)
    assert "windows" in str(err.value).split("failed:")[1]
    assert _blobs(layout) == before


def test_an_unreachable_engine_is_one_line(layout, tmp_path):
    import docker

    nowhere = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41")
    image = read_image(layout, "base")
    with pytest.raises(DockerError) as err:
        daemon.load(nowhere, layout, image, ["swcli-test-daemon/nowhere:1"])
    assert "\n" not in str(err.value) and "swcli-test-daemon/nowhere:1" in str(err.value)


def test_a_layer_the_engine_lost_is_sent_on_a_second_try(engine, layout, made, monkeypatch):  # noqa: F811
    image = _image(layout, None, {"a.txt": b"a layer the engine never saw"})
    made.add(image.image_id)
    answers = iter([1, 0])  # first a wrong "it has the layer", then the truth
    monkeypatch.setattr(daemon, "engine_has", lambda *a: next(answers))
    result = daemon.load(engine, layout, image, ["swcli-test-daemon/retry:1"])
    assert result.image_id == image.image_id and result.layers_skipped == 0
