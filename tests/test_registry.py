"""Push and pull against a real registry on 127.0.0.1 (Debian's docker-registry), checked with skopeo."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import pytest

from builder.store import Store
from tests.test_images_docker import engine, project, tiny_runtime  # noqa: F401  (fixtures reused)
from tests.test_model import model_dir  # noqa: F401

pytestmark = pytest.mark.docker


@pytest.fixture()
def registry(tmp_path):
    """A registry on a free loopback port, its access log in a file; stopped afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'blobs'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = tmp_path / "registry.log"
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"127.0.0.1:{port}", log
    proc.terminate()
    proc.wait(timeout=10)


def uploaded_blobs(log) -> int:
    """Blob uploads the registry completed (PUT .../blobs/uploads/<id>?digest=...), from its own access log."""
    return len(re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ]+digest=sha256', log.read_text()))


def test_push_sends_only_changed_layers_and_pull_restores_the_image(engine, cli, project, tiny_runtime, registry):  # noqa: F811
    address, log = registry
    model_dir, data_dir = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    res = cli("model", "push", "modthree", f"{address}/team/modthree:v1")
    assert res.code == 0, res.err
    first = uploaded_blobs(log)
    layers = len(engine.images.get("swmp/modthree:latest").attrs["RootFS"]["Layers"])
    assert first == layers + 1  # every layer and the config blob
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{address}/team/modthree:v1"],
                             capture_output=True, text=True, check=True) if shutil.which("skopeo") else None
    if inspect is not None:
        assert json.loads(inspect.stdout)["Labels"]["io.swcli.name"] == "modthree"

    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    res = cli("model", "push", "modthree", f"{address}/team/modthree:v2")
    assert res.code == 0, res.err
    second = uploaded_blobs(log) - first
    assert second == 3  # the code layer, the manifest layer and the image config: env, swcli, weights not re-sent
    assert "already there" in res.out

    version = Store().resolve("model", "modthree").version
    for tag in (f"swmp/modthree:{version}", "swmp/modthree:latest", f"{address}/team/modthree:v2"):
        engine.images.remove(tag, force=True)
    res = cli("pull", f"{address}/team/modthree:v2")
    assert res.code == 0, res.err
    assert engine.images.get(f"swmp/modthree:{version}").labels["io.swcli.version"] == version


def test_unreachable_registry_is_one_line(engine, cli, project, tiny_runtime):  # noqa: F811
    model_dir, _ = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    res = cli("model", "push", "modthree", f"127.0.0.1:{dead}/team/modthree:v1")
    assert res.code == 5 and "push of" in res.err and len(res.err.strip().splitlines()) == 1
    res = cli("pull", f"127.0.0.1:{dead}/team/modthree:v1")
    assert res.code == 5 and "pull of" in res.err
