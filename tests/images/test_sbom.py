"""The CycloneDX SBOM in every runtime image: what it lists (the env's dists with licenses and purls, swcli's own
dependencies, a conda env's packages, the base's Debian packages), that it is the same bytes on every build and
valid against the CycloneDX schema, where it sits in the image, and `swcli runtime info --sbom`.

The image builds write into the store only (no engine) on swcli's Debian base, made from the reproducible rootfs;
they carry the `base_rootfs` marker (that rootfs found or buildable). The `docker run` check is marked docker.
"""

from __future__ import annotations

import importlib.metadata as md
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.images.sbom import SBOM_MEDIA_TYPE, SBOM_PATH, read_image_file, read_sbom
from tests.helpers.capabilities import needs
from tests.helpers.engine import run_removed

DIST_INFOS = {  # folder -> METADATA: each way a distribution can state its license
    "Demo_Expr-1.2.dist-info": "Name: Demo_Expr\nVersion: 1.2\nLicense-Expression: MIT OR Apache-2.0\n"
                               "License: ignored when an expression is there\n",
    "shortlic-0.3.dist-info": "Name: shortlic\nVersion: 0.3\nLicense: BSD-3-Clause\n",
    "ownlic-1.0.dist-info": "Name: ownlic\nVersion: 1.0\nLicense: The Own License of Someone\n",
    "classy-2.0.dist-info": "Name: classy\nVersion: 2.0\nLicense: " + "Permission is hereby granted " * 10
                            + "\nClassifier: License :: OSI Approved :: MIT License\nClassifier: Programming Language :: Python\n",
    "nolicense-0.1.dist-info": "Name: nolicense\nVersion: 0.1\nLicense: UNKNOWN\n",
    "umlaut-0.2.dist-info": "Name: umlaut\nVersion: 0.2\nAuthor: Jürgen Müller\nLicense: Lizenz für alle\n",
}


def sbom_venv(path: Path) -> Path:
    """A real venv (no pip) whose site-packages holds distributions as installers leave them, plus a copy
    vendored inside a package (not importable as a dist: left out of the SBOM)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python3.*/site-packages"))
    for folder, metadata in DIST_INFOS.items():
        (site / folder).mkdir()
        (site / folder / "METADATA").write_text("Metadata-Version: 2.4\n" + metadata + "\nA long description.\n")
        (site / folder / "INSTALLER").write_text("pip\n")
    (site / "demo_expr" / "_vendor" / "inner-9.9.dist-info").mkdir(parents=True)
    (site / "demo_expr" / "__init__.py").write_text("")
    (site / "demo_expr" / "_vendor" / "inner-9.9.dist-info" / "METADATA").write_text("Name: inner\nVersion: 9.9\n")
    return path


@pytest.fixture(scope="module")
@needs("base_rootfs")
def base_ready():
    """swcli's Debian base rootfs is cached or buildable here (the `base_rootfs` marker)."""


def build(name: str, env: Path, **kw):
    from builder.images.runtime_image import build_runtime_image
    from builder.store import Store
    from builder.images.image import read_image

    result, manifest = build_runtime_image(name, env, load=False, **kw)
    layout = Store().layout
    return layout, read_image(layout, result.tags[0]), manifest


def components(doc: dict) -> dict[str, dict]:
    return {c["purl"]: c for c in doc["components"]}


def license_of(component: dict):
    (lic,) = component.get("licenses") or [None]
    return lic if lic is None or "expression" in lic else lic["license"]


@pytest.fixture(scope="module")
def venv_runtime(base_ready, tmp_path_factory):
    """One runtime from the venv above, built into its own store; (layout, image, manifest, venv, home)."""
    root = tmp_path_factory.mktemp("sbom")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWCLI_HOME", str(root / "home"))
        mp.delenv("SOURCE_DATE_EPOCH", raising=False)
        venv = sbom_venv(root / "venv")
        layout, image, manifest = build("sbomtest", venv)
    return layout, image, manifest, venv, root / "home"


def test_sbom_lists_the_envs_dists_with_versions_licenses_and_purls(venv_runtime):
    layout, image, manifest, _, _ = venv_runtime
    doc = json.loads(read_sbom(layout, image))
    found = components(doc)
    site = "/opt/swcli/env/lib/python3.11/site-packages"
    expr = found["pkg:pypi/demo-expr@1.2"]
    assert (expr["name"], expr["version"], expr["type"]) == ("demo-expr", "1.2", "library")
    assert license_of(expr) == {"expression": "MIT OR Apache-2.0"}
    assert expr["properties"] == [{"name": "swcli:path", "value": f"{site}/Demo_Expr-1.2.dist-info"}]
    assert license_of(found["pkg:pypi/shortlic@0.3"]) == {"id": "BSD-3-Clause"}
    assert license_of(found["pkg:pypi/ownlic@1.0"]) == {"name": "The Own License of Someone"}
    assert license_of(found["pkg:pypi/classy@2.0"]) == {"id": "MIT"}  # the License field was a text: the classifier
    assert license_of(found["pkg:pypi/nolicense@0.1"]) is None
    assert license_of(found["pkg:pypi/umlaut@0.2"]) == {"name": "Lizenz für alle"}  # non-ASCII metadata
    assert not [p for p in found if "inner" in p]  # a vendored copy is not a distribution of the env
    # swcli's own dependencies in /opt/swcli/lib, at the host's versions
    numpy = found[f"pkg:pypi/numpy@{md.version('numpy')}"]
    assert numpy["properties"][0]["value"].startswith("/opt/swcli/lib/numpy-")
    assert f"pkg:pypi/typer@{md.version('typer')}" in found
    # the described component, the tool and the clock
    meta = doc["metadata"]
    assert (meta["component"]["name"], meta["component"]["version"]) == ("sbomtest", manifest["version"])
    assert meta["component"]["type"] == "container"
    assert [(t["name"], t["version"]) for t in meta["tools"]["components"]] == [("swcli", __import__("builder").__version__)]
    assert meta["timestamp"].startswith("1970-01-01T00:00:00")
    assert doc["serialNumber"].startswith("urn:uuid:") and doc["specVersion"] == "1.6"
    root_deps = next(d for d in doc["dependencies"] if d["ref"] == meta["component"]["bom-ref"])
    assert set(root_deps["dependsOn"]) == {c["bom-ref"] for c in doc["components"]}


def test_sbom_lists_the_base_images_debian_packages(venv_runtime):
    layout, image, _, _, _ = venv_runtime
    debs = {c["name"]: c for c in json.loads(read_sbom(layout, image))["components"] if c["purl"].startswith("pkg:deb/")}
    assert {"python3", "libc6", "ca-certificates", "dpkg"} <= set(debs)
    libc = debs["libc6"]
    assert libc["purl"] == f"pkg:deb/debian/libc6@{libc['version'].replace('+', '%2B')}?arch=amd64"
    assert debs["ca-certificates"]["purl"].endswith("?arch=all")
    assert len(debs) > 50


def test_sbom_validates_against_the_cyclonedx_schema(venv_runtime):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    layout, image, _, _, _ = venv_runtime
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(read_sbom(layout, image).decode())
    assert errors is None, errors
    broken = json.loads(read_sbom(layout, image))
    broken["components"][0]["type"] = "not-a-type"  # the validator does reject what is not CycloneDX
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(broken)) is not None


def test_sbom_is_its_own_last_layer_at_the_documented_path(venv_runtime):
    layout, image, _, _, _ = venv_runtime
    assert SBOM_PATH == "/opt/swcli/sbom.cdx.json" and SBOM_MEDIA_TYPE == "application/vnd.cyclonedx+json"
    assert image.config_json["history"][-1]["created_by"] == "swcli: sbom"
    with tarfile.open(layout.blob_path(image.layers[-1].digest)) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
        assert [m.name for m in files] == ["opt/swcli/sbom.cdx.json"]
        assert (files[0].mode, files[0].uid, files[0].mtime) == (0o644, 0, 0)
        assert tar.extractfile(files[0]).read() == read_sbom(layout, image)
    assert image.layers[-1].size < 200 << 10


def test_sbom_is_byte_identical_when_built_apart_and_follows_source_date_epoch(venv_runtime, tmp_path, monkeypatch):
    """Another copy of the venv, elsewhere, with other mtimes, into an empty store: the same SBOM and image id."""
    layout, image, _, venv, _ = venv_runtime
    copy = tmp_path / "elsewhere" / "venv"
    shutil.copytree(venv, copy, symlinks=True)
    for path in copy.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1_500_000_000, 1_500_000_000))
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    layout2, image2, _ = build("sbomtest", copy)
    assert read_sbom(layout2, image2) == read_sbom(layout, image)
    assert image2.image_id == image.image_id
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    layout3, image3, _ = build("sbomtest", copy)
    doc = json.loads(read_sbom(layout3, image3))
    assert doc["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert doc["serialNumber"] != json.loads(read_sbom(layout, image))["serialNumber"]


def test_unchanged_rebuild_reads_the_sbom_from_the_cache(venv_runtime, monkeypatch):
    import builder.images.sbom as sbom

    layout, image, _, venv, home = venv_runtime
    monkeypatch.setenv("SWCLI_HOME", str(home))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)

    def refuse(*args, **kw):
        raise AssertionError("the SBOM of an unchanged env was made again")

    monkeypatch.setattr(sbom, "make_sbom", refuse)
    _, again, _ = build("sbomtest", venv)
    assert again.image_id == image.image_id


def test_dockerfile_only_context_carries_the_same_sbom(venv_runtime, tmp_path, monkeypatch):
    from builder.images.runtime_image import build_runtime_image

    layout, image, _, venv, home = venv_runtime
    monkeypatch.setenv("SWCLI_HOME", str(home))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    build_runtime_image("sbomtest", venv, dockerfile_only=tmp_path / "ctx")
    assert (tmp_path / "ctx" / "sbom.cdx.json").read_bytes() == read_sbom(layout, image)
    assert f"COPY --chown=0:0 sbom.cdx.json {SBOM_PATH}\n" in (tmp_path / "ctx" / "Dockerfile").read_text()


def test_runtime_info_sbom_prints_exactly_the_bytes_in_the_image(venv_runtime, cli, monkeypatch):
    from builder.build.runtime import build_runtime

    layout, image, _, venv, home = venv_runtime
    monkeypatch.setenv("SWCLI_HOME", str(home))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    build_runtime("sbomtest", venv, skip_gen_env=True, load=False)  # recorded in the store, as `runtime build` does
    res = cli("runtime", "info", "sbomtest", "--sbom")
    assert res.code == 0, res.err
    assert res.out.encode() == read_sbom(layout, image)
    refused = cli("model", "info", "anything", "--sbom")
    assert refused.code == 2 and "only runtime images carry an SBOM" in refused.err
    assert len(refused.err.strip().splitlines()) == 1


def test_runtime_whose_image_left_the_store_is_one_line(venv_runtime, cli, monkeypatch):
    from builder.build.runtime import build_runtime

    _, _, _, venv, home = venv_runtime
    monkeypatch.setenv("SWCLI_HOME", str(home))
    entry, _ = build_runtime("sbomgone", venv, skip_gen_env=True, load=False)
    manifest = json.loads((entry.path / "manifest.json").read_text())
    manifest["image"] = "swrt/sbomgone:notthere"
    (entry.path / "manifest.json").write_text(json.dumps(manifest))
    res = cli("runtime", "info", "sbomgone", "--sbom")
    assert res.code == 1 and "swrt/sbomgone:notthere is not in the store" in res.err
    assert len(res.err.strip().splitlines()) == 1 and res.out == ""


@pytest.mark.slow
@pytest.mark.umoci
def test_umoci_unpacks_the_sbom_without_an_engine(venv_runtime, tmp_path, monkeypatch):
    layout, image, _, _, _ = venv_runtime
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    tag = image.manifest.digest
    ref = next(r for r, d in layout.refs().items() if d.digest == tag)
    run = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout.root}:{ref}", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "b" / "rootfs" / SBOM_PATH.lstrip("/")).read_bytes() == read_sbom(layout, image)


@pytest.mark.slow
def test_conda_env_lists_conda_packages_and_only_the_dists_pip_installed(base_ready, tmp_path, monkeypatch):
    from tests.helpers.conda import make_conda_env

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "home"))
    env = make_conda_env(tmp_path / "conda")
    record = env / "conda-meta" / "hello-1.0-0.json"
    doc = json.loads(record.read_text())
    site = env / "lib/python3.11/site-packages"
    (site / "hello-1.0.dist-info").mkdir()  # conda's own python package: listed once, as the conda package
    (site / "hello-1.0.dist-info" / "METADATA").write_text("Name: hello\nVersion: 1.0\n")
    (site / "hello-1.0.dist-info" / "INSTALLER").write_text("conda\n")
    doc.update(license="BSD-3-Clause", subdir="linux-64", channel="https://conda.anaconda.org/conda-forge/linux-64",
               files=doc["files"] + ["lib/python3.11/site-packages/hello-1.0.dist-info/METADATA",
                                     "lib/python3.11/site-packages/hello-1.0.dist-info/INSTALLER"])
    record.write_text(json.dumps(doc))
    (site / "pipped-0.5.dist-info").mkdir()  # installed with pip into the conda env
    (site / "pipped-0.5.dist-info" / "METADATA").write_text("Name: pipped\nVersion: 0.5\nLicense: MIT\n")
    (site / "pipped-0.5.dist-info" / "INSTALLER").write_text("pip\n")
    layout, image, manifest = build("sbomconda", env)
    assert manifest["mode"] == "conda"
    found = components(json.loads(read_sbom(layout, image)))
    hello = found["pkg:conda/hello@1.0?build=0&channel=conda-forge&subdir=linux-64"]
    assert license_of(hello) == {"id": "BSD-3-Clause"}
    assert hello["properties"][0]["value"] == "/opt/swcli/env/conda-meta/hello-1.0-0.json"
    assert "pkg:conda/python@3.11.2?build=0" in found
    assert license_of(found["pkg:pypi/pipped@0.5"]) == {"id": "MIT"}
    assert not [p for p in found if p.startswith("pkg:pypi/hello")]
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in found)


# --------------------------------------------------------------------------- reading files from an image's layers


def _tar(files: dict[str, bytes | None]) -> bytes:
    """A layer: name -> bytes (a file) or None (a folder)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _image(layout, layers: list[dict]):
    from builder.images.image import ConfigChanges, NewLayer, write_image
    from builder.images.oci import MEDIA_LAYER

    blobs = [NewLayer(layout.put_bytes(_tar(files), MEDIA_LAYER), f"layer {i}") for i, files in enumerate(layers)]
    return write_image(layout, None, blobs, ConfigChanges())


STATUS = b"""Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library
 several lines
 of description

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1
"""


def test_read_image_file_takes_the_topmost_layer_and_honours_whiteouts(tmp_path):
    from builder.images.oci import Layout
    from builder.images.sbom import base_packages

    layout = Layout(tmp_path / "oci")
    old, new = b"Package: old\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n", STATUS
    image = _image(layout, [{"./var/lib/dpkg/status": old}, {"opt": None}, {"./var/lib/dpkg/status": new}])
    assert read_image_file(layout, image.layers, "/var/lib/dpkg/status") == new
    assert [(p.name, p.version, p.purl) for p in base_packages(layout, image)] == [
        ("libc6", "2.36-9+deb12u4", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"),
        ("python3", "3.11.2-1+b1", "pkg:deb/debian/python3@3.11.2-1%2Bb1?arch=amd64")]
    with pytest.MonkeyPatch.context() as mp:  # remembered per base: a changed env does not read the base again
        mp.setattr("builder.images.sbom.read_image_file", lambda *a: pytest.fail("the base was read again"))
        assert [p.name for p in base_packages(layout, image)] == ["libc6", "python3"]
    sbom = {"opt/swcli/sbom.cdx.json": b"{}"}
    assert read_sbom(layout, _image(layout, [sbom, {"opt/swcli/model/code.py": b"x"}])) == b"{}"  # inherited
    assert read_sbom(layout, _image(layout, [sbom, {"opt/swcli/.wh.sbom.cdx.json": b""}])) is None
    assert read_sbom(layout, _image(layout, [sbom, {"opt/.wh.swcli": b""}])) is None
    assert read_sbom(layout, _image(layout, [sbom, {"opt/swcli/.wh..wh..opq": b""}])) is None
    assert read_sbom(layout, _image(layout, [{"opt/swcli/lib/x.py": b""}])) is None
    assert base_packages(layout, _image(layout, [{"etc/hostname": b"x"}])) == []  # a base without dpkg


@pytest.mark.docker
def test_docker_run_can_cat_the_sbom(base_ready, base_engine, tmp_path, monkeypatch):
    client = base_engine
    from builder.images.runtime_image import build_runtime_image
    from builder.store import Store
    from builder.images.image import read_image

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "home"))
    result, _ = build_runtime_image("swcli-test-sbom", sbom_venv(tmp_path / "venv"), client=client)
    try:
        out = run_removed(client, result.tags[0], ["cat", SBOM_PATH], entrypoint=[])
        assert out == read_sbom(Store().layout, read_image(Store().layout, result.tags[0]))
    finally:
        for tag in result.tags:
            client.images.remove(tag, force=True)
