"""A store with evaluations to attach: model modthree built with images on a stand-in runtime (no engine),
evaluated, and pushed by skopeo to a registry as ``REPO``; the world of the attach/list/pull tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

from builder.images.image import ConfigChanges, NewLayer, write_image
from builder.images.oci import MEDIA_LAYER
from builder.store import Store
from tests.helpers.models import HANDLER, MODEL_YAML

RUNTIME = "swcli-test/tinyrt:1"
REPO = "team/modthree"


def stand_in_runtime() -> None:
    """A one-file image tagged RUNTIME in the store's layout: a model image needs a parent, not a real runtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/tinyrt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"rt\n"))
    layout = Store().layout
    with layout.writer(MEDIA_LAYER) as out:
        out.write(buf.getvalue())
    write_image(layout, None, [NewLayer(out.descriptor, "stand-in runtime")], ConfigChanges(), refs=[RUNTIME])


def build_model(cli, root, offset: int) -> str:
    """Build modthree (weights offset ``offset``) and its image; returns the model version."""
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "weights.json").write_text(json.dumps({"offset": offset}))
    (root / "model.yaml").write_text(MODEL_YAML)
    res = cli("model", "build", root, "--skip-gen-env", "--runtime", RUNTIME, "--no-load")
    assert res.code == 0, res.err
    return Store().resolve("model", "modthree").version


def evaluate(cli, version: str) -> str:
    res = cli("model", "eval", f"modthree:{version}", "--dataset", "tiny")
    assert res.code == 0, res.err
    return max(Store().runs_dir.iterdir(), key=lambda p: p.stat().st_mtime).name


def model_image(version: str) -> str:
    """The store's image of model ``version`` (tagged ``<version>-<image id>`` since issue 18)."""
    from builder.build.pipeline import image_for

    return image_for("model", f"modthree:{version}")


def push_model(registry, version: str, tag: str) -> str:
    """skopeo copy of the store's image to REPO:tag; returns its manifest digest."""
    source = f"oci:{Store().layout.root}:{model_image(version)}"
    done = registry.skopeo("copy", "--format", "oci", source, f"docker://{registry.address}/{REPO}:{tag}")
    assert done.returncode == 0, done.stderr
    raw = registry.skopeo("inspect", "--raw", f"docker://{registry.address}/{REPO}:{tag}").stdout
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def attached_digest(res) -> str:
    assert res.code == 0, res.err
    return res.out.split("@", 1)[1].split()[0]
