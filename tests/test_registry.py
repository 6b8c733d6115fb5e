"""Push and pull against a real registry on 127.0.0.1 (Debian's docker-registry), checked with skopeo."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import threading
import time

import pytest

from builder.store import Store
from tests.test_images_docker import engine, project, tiny_runtime  # noqa: F401  (fixtures reused)
from tests.test_model import model_dir  # noqa: F401
from tests.registry_servers import Registry, uploaded_blobs  # noqa: F401

pytestmark = pytest.mark.docker


@pytest.fixture()
def plain_registry(tmp_path):
    reg = Registry(tmp_path / "plain")
    yield reg
    reg.stop()


@pytest.fixture()
def secure_registry(tmp_path):
    reg = Registry(tmp_path / "secure", secure=True)
    yield reg
    reg.stop()


@pytest.fixture()
def registry(plain_registry):
    return plain_registry.address, plain_registry.log


def test_push_sends_only_changed_layers(engine, cli, project, tiny_runtime, plain_registry):  # noqa: F811
    address, log = plain_registry.address, plain_registry.log
    model_dir, data_dir = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    res = cli("model", "push", "modthree", f"{address}/team/modthree:v1")
    assert res.code == 0, res.err
    first = uploaded_blobs(log)
    layers = len(engine.images.get("swmp/modthree:latest").attrs["RootFS"]["Layers"])
    assert first == layers + 1  # every layer and the config blob
    inspect = plain_registry.skopeo("inspect", f"docker://{address}/team/modthree:v1")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Labels"]["io.swcli.name"] == "modthree"
    assert re.search(r"@sha256:[0-9a-f]{64}: \d+ layer\(s\) uploaded", res.out)

    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    res = cli("model", "push", "modthree", f"{address}/team/modthree:v2")
    assert res.code == 0, res.err
    second = uploaded_blobs(log) - first
    assert second == 3  # the code layer, the manifest layer and the image config: env, swcli, weights not re-sent
    assert "already there" in res.out
    # per-layer progress (one line per layer when stderr is not a terminal)
    assert res.err.count(": Pushed") == 2 and res.err.count(": Layer already exists") == layers - 2


def test_pulled_images_work_on_a_fresh_store_as_if_built_there(engine, cli, project, tiny_runtime, plain_registry,  # noqa: F811
                                                               tmp_path, monkeypatch):
    """Push model, dataset and runtime; on an empty store with the local tags gone, pull them back: refs, `info`
    and `job run` work, and the metrics equal those of the run made before the push."""
    address = plain_registry.address
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir).code == 0
    assert cli("model", "build", model_dir, "--runtime", tiny_runtime).code == 0  # with its env lock
    assert cli("job", "run", "--model", "modthree", "--dataset", "tiny", "-o", tmp_path / "before").code == 0
    lock = (Store().resolve("model", "modthree").path / "env.lock").read_text()
    runtime_name, runtime_version = tiny_runtime.split("/", 1)[1].split(":")  # an image with no store entry
    for kind, ref, name in (("model", "modthree", "modthree"), ("dataset", "tiny", "tiny"),
                            ("runtime", tiny_runtime, runtime_name)):
        res = cli(kind, "push", ref, f"{address}/team/{name}:v1")
        assert res.code == 0, res.err
    store = Store()
    versions = {"model": store.resolve("model", "modthree").version, "dataset": store.resolve("dataset", "tiny").version,
                "runtime": runtime_version}

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    for prefix, name, kind in (("swmp", "modthree", "model"), ("swds", "tiny", "dataset")):
        for tag in (f"{prefix}/{name}:{versions[kind]}", f"{prefix}/{name}:latest", f"{address}/team/{name}:v1"):
            engine.images.remove(tag, force=True)
    for name in ("modthree", "tiny", runtime_name):
        res = cli("pull", f"{address}/team/{name}:v1")
        assert res.code == 0, res.err
    assert engine.images.get(f"swmp/modthree:{versions['model']}").labels["io.swcli.version"] == versions["model"]
    for kind, ref in (("model", "modthree"), ("dataset", "tiny"), ("runtime", runtime_name)):
        res = cli(kind, "info", ref, "-o", "json")
        assert res.code == 0, res.err
        assert json.loads(res.out)["version"] == versions[kind]
    assert cli("dataset", "info", "tiny", "--verify").code == 0  # the shards came out of the image intact
    assert (Store().resolve("model", "modthree").path / "env.lock").read_text() == lock
    res = cli("job", "run", "--model", "modthree", "--dataset", "tiny", "-o", tmp_path / "after")
    assert res.code == 0, res.err
    assert (tmp_path / "after" / "metrics.json").read_bytes() == (tmp_path / "before" / "metrics.json").read_bytes()


@pytest.fixture()
def docker_config(tmp_path, monkeypatch):
    """A private Docker config folder, so no test reads or writes the user's ~/.docker/config.json."""
    folder = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder / "config.json"


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_login_push_pull_over_tls_with_htpasswd(engine, cli, project, tiny_runtime, secure_registry,  # noqa: F811
                                                docker_config, monkeypatch):
    reg, user, password = secure_registry, Registry.USER, Registry.PASSWORD
    model_dir, _ = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    target = f"{reg.address}/team/modthree:v1"

    res = cli("model", "push", "modthree", target)  # no credentials anywhere yet
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert "push of" in res.err and "auth" in res.err.lower()

    stdin(monkeypatch, "wrong-password\n")
    res = cli("login", reg.address, "-u", user, "--password-stdin")
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert f"login to {reg.address} failed" in res.err and "401" in res.err
    assert not docker_config.exists()  # a failed login stores nothing

    stdin(monkeypatch, password + "\n")
    res = cli("login", reg.address, "-u", user, "--password-stdin")
    assert res.code == 0, res.err
    assert oct(docker_config.stat().st_mode & 0o777) == "0o600"
    assert reg.address in json.loads(docker_config.read_text())["auths"]

    res = cli("model", "push", "modthree", target)
    assert res.code == 0, res.err
    assert password not in res.out + res.err
    inspect = reg.skopeo("inspect", f"docker://{target}")  # TLS verified against our CA, with the credentials
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Labels"]["io.swcli.name"] == "modthree"
    assert reg.skopeo("inspect", f"docker://{target}", creds=False).returncode != 0  # the registry does ask

    # the password is nowhere in what was built or pushed: not in the image's config, labels or history
    image = engine.images.get("swmp/modthree:latest")
    secrets = (password, base64.b64encode(f"{user}:{password}".encode()).decode())
    written = json.dumps(image.attrs) + json.dumps(image.history())
    for blob in (reg.root / "blobs").rglob("data"):
        written += blob.read_bytes().decode("latin-1")
    assert not any(secret in written for secret in secrets)

    version = Store().resolve("model", "modthree").version
    for tag in (f"swmp/modthree:{version}", "swmp/modthree:latest", target):
        engine.images.remove(tag, force=True)
    res = cli("pull", target)
    assert res.code == 0, res.err
    assert engine.images.get(f"swmp/modthree:{version}").id == image.id

    assert cli("logout", reg.address).code == 0
    assert reg.address not in json.loads(docker_config.read_text())["auths"]
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v2")
    assert res.code == 5 and "auth" in res.err.lower(), res.err


CREDENTIAL_HELPER = """#!/usr/bin/env python3
# A docker-credential-helpers protocol implementation keeping secrets in a JSON file: what `credsStore` runs.
import json, os, sys
path = os.environ["SWTEST_CREDS"]
creds = json.load(open(path)) if os.path.exists(path) else {}
action, data = sys.argv[1], sys.stdin.read().strip()
if action == "store":
    entry = json.loads(data)
    creds[entry["ServerURL"]] = {"Username": entry["Username"], "Secret": entry["Secret"]}
elif action == "get":
    if data not in creds:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({"ServerURL": data, **creds[data]}))
elif action == "erase":
    if creds.pop(data, None) is None:
        print("credentials not found in native keychain")
        sys.exit(1)
elif action == "list":
    print(json.dumps({url: c["Username"] for url, c in creds.items()}))
json.dump(creds, open(path, "w"))
"""


def test_login_goes_through_the_configured_credential_helper(engine, cli, project, tiny_runtime, secure_registry,  # noqa: F811
                                                             docker_config, tmp_path, monkeypatch):
    """With `credsStore` set, the secret goes to the helper and the config file holds no password at all."""
    bin_dir, secrets = tmp_path / "bin", tmp_path / "helper-secrets.json"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-swtest"
    helper.write_text(CREDENTIAL_HELPER)
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SWTEST_CREDS", str(secrets))
    docker_config.parent.mkdir()
    docker_config.write_text(json.dumps({"credsStore": "swtest"}))
    reg = secure_registry

    stdin(monkeypatch, Registry.PASSWORD + "\n")
    res = cli("login", reg.address, "-u", Registry.USER, "--password-stdin")
    assert res.code == 0, res.err
    assert json.loads(secrets.read_text())[reg.address] == {"Username": Registry.USER, "Secret": Registry.PASSWORD}
    config = docker_config.read_text()
    assert Registry.PASSWORD not in config and json.loads(config)["auths"][reg.address] == {}

    model_dir, _ = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v1")  # docker-py asks the helper
    assert res.code == 0, res.err

    assert cli("logout", reg.address).code == 0
    assert reg.address not in json.loads(secrets.read_text())
    assert "logged out" not in cli("logout", reg.address).out  # nothing left to forget


def test_wrong_credentials_on_the_command_line_are_one_line(engine, cli, project, tiny_runtime, secure_registry,  # noqa: F811
                                                             docker_config, monkeypatch):
    model_dir, _ = project
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    target = f"{secure_registry.address}/team/modthree:v1"
    stdin(monkeypatch, "not-the-password\n")
    res = cli("model", "push", "modthree", target, "-u", Registry.USER, "--password-stdin")
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert "not-the-password" not in res.out + res.err
    stdin(monkeypatch, Registry.PASSWORD + "\n")
    res = cli("model", "push", "modthree", target, "-u", Registry.USER, "--password-stdin")
    assert res.code == 0, res.err
    assert not docker_config.exists()  # per-call credentials are not stored
    res = cli("model", "push", "modthree", target, "--password-stdin")
    assert res.code != 0 and "--password-stdin needs --username" in res.err


def test_copy_between_registries_sends_only_missing_layers(engine, cli, project, tiny_runtime, plain_registry,  # noqa: F811
                                                           secure_registry, docker_config, monkeypatch):
    model_dir, _ = project
    plain, secure = plain_registry, secure_registry
    stdin(monkeypatch, Registry.PASSWORD + "\n")
    assert cli("login", secure.address, "-u", Registry.USER, "--password-stdin").code == 0
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    assert cli("model", "push", "modthree", f"{plain.address}/team/modthree:v1").code == 0

    res = cli("copy", f"{plain.address}/team/modthree:v1", f"{secure.address}/mirror/modthree:v1")
    assert res.code == 0, res.err
    source = json.loads(plain.skopeo("inspect", f"docker://{plain.address}/team/modthree:v1").stdout)
    copied = json.loads(secure.skopeo("inspect", f"docker://{secure.address}/mirror/modthree:v1").stdout)
    assert copied["Layers"] == source["Layers"] and copied["Labels"] == source["Labels"]
    full = uploaded_blobs(secure.log)
    assert full == len(source["Layers"]) + 1

    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    assert cli("model", "build", model_dir, "--skip-gen-env", "--runtime", tiny_runtime).code == 0
    assert cli("model", "push", "modthree", f"{plain.address}/team/modthree:v2").code == 0
    res = cli("copy", f"{plain.address}/team/modthree:v2", f"{secure.address}/mirror/modthree:v2")
    assert res.code == 0, res.err
    assert uploaded_blobs(secure.log) - full == 3

    res = cli("copy", f"{plain.address}/team/nothing:v1", f"{secure.address}/mirror/nothing:v1")
    assert res.code == 5 and "pull of" in res.err and len(res.err.strip().splitlines()) == 1


def test_registry_dying_mid_push_leaves_nothing_corrupt_and_the_next_push_completes(engine, cli, tiny_runtime,
                                                                                   plain_registry, tmp_path):
    """Kill the registry as soon as it has started taking a layer; the push fails in one line, the registry
    has no tag for the half-sent image, and once it is back the same push completes and every blob verifies."""
    reg = plain_registry
    target = f"{reg.address}/team/env:v1"
    killed = threading.Event()

    def kill_on_first_upload() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if reg.log.exists() and re.search(r'"POST /v2/team/env/blobs/uploads/', reg.log.read_text()):
                reg.kill()
                killed.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_on_first_upload, daemon=True)
    watcher.start()
    res = cli("runtime", "push", tiny_runtime, target)
    watcher.join(timeout=5)
    assert killed.is_set(), "the push finished before the registry could be killed"
    errors = [line for line in res.err.splitlines() if line.startswith("swcli: error:")]
    assert res.code == 5 and len(errors) == 1 and "push of" in errors[0], res.err
    assert res.err.strip().splitlines()[-1] == errors[0]  # above it only per-layer progress ("Retrying in 5 seconds")
    assert engine.images.get(tiny_runtime)  # the local image is untouched

    reg.start()
    assert reg.skopeo("inspect", f"docker://{target}").returncode != 0  # no tag points at a half-pushed image
    res = cli("runtime", "push", tiny_runtime, target)
    assert res.code == 0, res.err
    copied = reg.skopeo("copy", f"docker://{target}", f"oci:{tmp_path / 'verify'}:v1")  # checks every blob's digest
    assert copied.returncode == 0, copied.stderr
    manifest = json.loads(reg.skopeo("inspect", "--raw", f"docker://{target}").stdout)
    assert len(manifest["layers"]) == len(engine.images.get(tiny_runtime).attrs["RootFS"]["Layers"])


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
