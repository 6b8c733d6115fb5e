"""Push, pull, copy and login against a real registry on 127.0.0.1 (Debian's docker-registry), with NO Docker
engine: ``DOCKER_HOST`` points nowhere for every swcli call and images are built with ``--no-load``. What reached
the registry is counted from its own access log and checked with skopeo. One test (marked docker) pulls a pushed
model image with the engine and runs its ``eval``."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import threading
import time

import pytest

from builder.images.image import read_image
from builder.store import Store
from tests.helpers.capabilities import needs
from tests.helpers.engine import run_removed
from tests.registry_servers import Registry, uploaded_blobs, uploads


ENGINE_HOST = os.environ.get("DOCKER_HOST")  # for the one command that wants the engine: `pull --load`


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """Every swcli call here runs with no reachable engine (an engine fixture, module-scoped, is made before)."""


@pytest.fixture()
@needs("registry")
def secure_registry(tmp_path):
    reg = Registry(tmp_path / "secure", secure=True)
    yield reg
    reg.stop()




def build_model(cli, model_dir, runtime, *extra) -> None:  # noqa: F811
    res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", runtime, "--no-load", *extra)
    assert res.code == 0, res.err


def local_image(ref: str):
    image = read_image(Store().layout, ref)
    assert image is not None, ref
    return image


def uploaded_bytes(reg: Registry, since: int = 0) -> tuple[int, int]:
    """(blobs, bytes) uploaded after byte ``since`` of the registry's access log."""
    return uploads(reg.root, reg.log, since)


def test_push_sends_only_changed_layers_and_mounts_across_repositories(cli, project, runtime, plain_registry,
                                                                       tmp_path):
    reg = plain_registry
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v1")
    assert res.code == 0, res.err
    layers = len(local_image("swmp/modthree:latest").layers)
    time.sleep(0.3)  # the access log line is written as the request completes
    assert uploaded_blobs(reg.log) == layers + 1  # every layer and the config blob
    assert re.search(r"@sha256:[0-9a-f]{64}: \d+ blob\(s\) uploaded", res.out)
    inspect = reg.skopeo("inspect", f"docker://{reg.address}/team/modthree:v1")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Labels"]["io.swcli.name"] == "modthree"
    copied = reg.skopeo("copy", f"docker://{reg.address}/team/modthree:v1", f"oci:{tmp_path / 'check'}:v1")
    assert copied.returncode == 0, copied.stderr  # skopeo checks every blob against its digest
    raw = json.loads(reg.skopeo("inspect", "--raw", f"docker://{reg.address}/team/modthree:v1").stdout)
    assert raw["config"]["digest"] == local_image("swmp/modthree:latest").image_id  # same image id as here
    assert {layer["mediaType"] for layer in raw["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}

    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    build_model(cli, model_dir, runtime)
    since = len(reg.log.read_text())
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v2")
    assert res.code == 0, res.err
    time.sleep(0.3)
    blobs, size = uploaded_bytes(reg, since)
    assert blobs == 2 and size < 1 << 20  # the code layer (with the model's manifest) and the config
    assert "already there" in res.out
    # per-blob progress (one line per blob when stderr is not a terminal)
    assert res.err.count(": Pushed") == 2 and res.err.count(": Layer already exists") == layers - 1

    since = len(reg.log.read_text())
    res = cli("model", "push", "modthree", f"{reg.address}/other/modthree:v2")  # the same registry, another repo
    assert res.code == 0, res.err
    time.sleep(0.3)
    assert uploaded_bytes(reg, since) == (0, 0)
    assert res.err.count(": Mounted from team/modthree") == layers + 1
    first = json.loads(reg.skopeo("inspect", f"docker://{reg.address}/team/modthree:v2").stdout)["Digest"]
    assert json.loads(reg.skopeo("inspect", f"docker://{reg.address}/other/modthree:v2").stdout)["Digest"] == first


def test_pulled_images_work_on_a_fresh_store_as_if_built_there(cli, project, runtime, plain_registry,  # noqa: F811
                                                               tmp_path, monkeypatch):
    """Push model, dataset and runtime; pull them into an empty store: refs, `info` and `eval` work, the images
    are in the layout under their local names with the same ids, and the metrics equal those made before."""
    address = plain_registry.address
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir, "--no-load").code == 0
    res = cli("model", "build", model_dir, "--runtime", runtime, "--no-load")  # with its env lock
    assert res.code == 0, res.err
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "before").code == 0
    store = Store()
    lock = (store.resolve("model", "modthree").path / "env.lock").read_text()
    versions = {kind: store.resolve(kind, name).version
                for kind, name in (("model", "modthree"), ("dataset", "tiny"), ("runtime", runtime))}
    ids = {kind: local_image(f"{prefix}/{name}:latest").image_id
           for kind, prefix, name in (("model", "swmp", "modthree"), ("dataset", "swds", "tiny"),
                                      ("runtime", "swrt", runtime))}
    for kind, ref in (("model", "modthree"), ("dataset", "tiny"), ("runtime", runtime)):
        res = cli(kind, "push", ref, f"{address}/team/{ref}:v1")
        assert res.code == 0, res.err

    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    for name in ("modthree", "tiny", runtime):
        res = cli("pull", f"{address}/team/{name}:v1")
        assert res.code == 0, res.err
    for kind, prefix, name in (("model", "swmp", "modthree"), ("dataset", "swds", "tiny"), ("runtime", "swrt", runtime)):
        tag = versions[kind] + (f"-{ids[kind][7:19]}" if kind == "model" else "")  # a model's tag names its image
        assert local_image(f"{prefix}/{name}:{tag}").image_id == ids[kind]
        res = cli(kind, "info", name, "-o", "json")
        assert res.code == 0, res.err
        assert json.loads(res.out)["version"] == versions[kind]
    assert json.loads(cli("runtime", "info", runtime, "-o", "json").out)["image_id"] == ids["runtime"]
    assert cli("dataset", "info", "tiny", "--verify").code == 0  # the shards came out of the layers intact
    assert (Store().resolve("model", "modthree").path / "env.lock").read_text() == lock
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "after")
    assert res.code == 0, res.err
    assert (tmp_path / "after" / "metrics.json").read_bytes() == (tmp_path / "before" / "metrics.json").read_bytes()

    res = cli("pull", f"{address}/team/modthree:v1")  # everything is here already: nothing is fetched
    assert res.code == 0 and ": Pull complete" not in res.err, res.err


@pytest.fixture()
def docker_config(tmp_path, monkeypatch):
    """A private Docker config folder, so no test reads or writes the user's ~/.docker/config.json."""
    folder = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    monkeypatch.setenv("SWCLI_DOCKER_CERTS_D", str(tmp_path / "no-certs.d"))
    return folder / "config.json"


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def trust_in_certs_d(reg: Registry, tmp_path, monkeypatch) -> None:
    """Docker's way to trust a private CA: certs.d/<host:port>/ca.crt (the root is moved for the test)."""
    certs_d = tmp_path / "certs.d"
    (certs_d / reg.address).mkdir(parents=True, exist_ok=True)
    shutil.copy(reg.certs / "ca.crt", certs_d / reg.address / "ca.crt")
    monkeypatch.setenv("SWCLI_DOCKER_CERTS_D", str(certs_d))


def test_login_push_pull_over_tls_with_htpasswd(cli, project, runtime, secure_registry, docker_config,
                                                tmp_path, monkeypatch):
    reg, user, password = secure_registry, Registry.USER, Registry.PASSWORD
    ca = str(reg.certs / "ca.crt")
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    target = f"{reg.address}/team/modthree:v1"

    res = cli("model", "push", "modthree", target)  # the CA is not trusted
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert "certificate" in res.err.lower()
    res = cli("model", "push", "modthree", target, "--ca-cert", ca)  # no credentials anywhere yet
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert "push of" in res.err and "swcli login" in res.err

    stdin(monkeypatch, "wrong-password\n")
    res = cli("login", reg.address, "-u", user, "--password-stdin", "--ca-cert", ca)
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert f"login to {reg.address} failed" in res.err and "401" in res.err
    assert not docker_config.exists()  # a failed login stores nothing

    stdin(monkeypatch, password + "\n")
    res = cli("login", reg.address, "-u", user, "--password-stdin", "--ca-cert", ca)
    assert res.code == 0, res.err
    assert oct(docker_config.stat().st_mode & 0o777) == "0o600"
    assert reg.address in json.loads(docker_config.read_text())["auths"]

    res = cli("model", "push", "modthree", target, "--ca-cert", ca)
    assert res.code == 0, res.err
    assert password not in res.out + res.err
    inspect = reg.skopeo("inspect", f"docker://{target}")  # TLS verified against our CA, with the credentials
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Labels"]["io.swcli.name"] == "modthree"
    assert reg.skopeo("inspect", f"docker://{target}", creds=False).returncode != 0  # the registry does ask

    # the password is nowhere in what was built or pushed, nor in swcli's caches
    secrets = (password, base64.b64encode(f"{user}:{password}".encode()).decode())
    written = "".join(p.read_bytes().decode("latin-1") for p in (reg.root / "blobs").rglob("data"))
    written += "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "swcli-home" / "cache").rglob("*.json"))
    assert not any(secret in written for secret in secrets)

    image_id = local_image("swmp/modthree:latest").image_id
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    trust_in_certs_d(reg, tmp_path, monkeypatch)
    res = cli("pull", target)  # the CA from certs.d this time
    assert res.code == 0, res.err
    version = Store().resolve("model", "modthree").version  # a model's tag names its image id (issue 18)
    assert local_image(f"swmp/modthree:{version}-{image_id.split(':')[1][:12]}").image_id == image_id

    assert cli("logout", reg.address).code == 0
    assert reg.address not in json.loads(docker_config.read_text())["auths"]
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v2")
    assert res.code == 5 and "swcli login" in res.err, res.err


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


def test_login_goes_through_the_configured_credential_helper(cli, project, runtime, secure_registry,  # noqa: F811
                                                             docker_config, tmp_path, monkeypatch):
    """With `credsStore` set, the secret goes to the helper and the config file holds no password at all; pushes
    get it back from the helper."""
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
    trust_in_certs_d(reg, tmp_path, monkeypatch)

    stdin(monkeypatch, Registry.PASSWORD + "\n")
    res = cli("login", reg.address, "-u", Registry.USER, "--password-stdin")
    assert res.code == 0, res.err
    assert json.loads(secrets.read_text())[reg.address] == {"Username": Registry.USER, "Secret": Registry.PASSWORD}
    config = docker_config.read_text()
    assert Registry.PASSWORD not in config and json.loads(config)["auths"][reg.address] == {}

    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    res = cli("model", "push", "modthree", f"{reg.address}/team/modthree:v1")  # the client asks the helper
    assert res.code == 0, res.err

    assert cli("logout", reg.address).code == 0
    assert reg.address not in json.loads(secrets.read_text())
    assert "logged out" not in cli("logout", reg.address).out  # nothing left to forget


def test_wrong_credentials_on_the_command_line_are_one_line(cli, project, runtime, secure_registry,  # noqa: F811
                                                             docker_config, tmp_path, monkeypatch):
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    trust_in_certs_d(secure_registry, tmp_path, monkeypatch)
    target = f"{secure_registry.address}/team/modthree:v1"
    stdin(monkeypatch, "not-the-password\n")
    res = cli("model", "push", "modthree", target, "-u", Registry.USER, "--password-stdin")
    assert res.code == 5 and len(res.err.strip().splitlines()) == 1, res.err
    assert "401" in res.err and "not-the-password" not in res.out + res.err
    stdin(monkeypatch, Registry.PASSWORD + "\n")
    res = cli("model", "push", "modthree", target, "-u", Registry.USER, "--password-stdin")
    assert res.code == 0, res.err
    assert not docker_config.exists()  # per-call credentials are not stored
    res = cli("model", "push", "modthree", target, "--password-stdin")
    assert res.code != 0 and "--password-stdin needs --username" in res.err


def test_copy_between_registries_keeps_the_digest_and_sends_only_missing_blobs(
        cli, project, runtime, plain_registry, secure_registry, docker_config, tmp_path, monkeypatch):  # noqa: F811
    model_dir, _ = project
    plain, secure = plain_registry, secure_registry
    trust_in_certs_d(secure, tmp_path, monkeypatch)
    stdin(monkeypatch, Registry.PASSWORD + "\n")
    assert cli("login", secure.address, "-u", Registry.USER, "--password-stdin").code == 0
    build_model(cli, model_dir, runtime)
    assert cli("model", "push", "modthree", f"{plain.address}/team/modthree:v1").code == 0

    res = cli("copy", f"{plain.address}/team/modthree:v1", f"{secure.address}/mirror/modthree:v1")
    assert res.code == 0, res.err
    source = json.loads(plain.skopeo("inspect", f"docker://{plain.address}/team/modthree:v1").stdout)
    copied = json.loads(secure.skopeo("inspect", f"docker://{secure.address}/mirror/modthree:v1").stdout)
    assert copied["Digest"] == source["Digest"]  # the manifest went verbatim
    assert copied["Layers"] == source["Layers"] and copied["Labels"] == source["Labels"]
    time.sleep(0.3)
    full = uploaded_blobs(secure.log)
    assert full == len(source["Layers"]) + 1
    assert not list((tmp_path / "swcli-home" / "tmp").glob(".copy-*"))  # the temp blobs are gone

    with open(model_dir / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    build_model(cli, model_dir, runtime)
    assert cli("model", "push", "modthree", f"{plain.address}/team/modthree:v2").code == 0
    res = cli("copy", f"{plain.address}/team/modthree:v2", f"{secure.address}/mirror/modthree:v2")
    assert res.code == 0, res.err
    time.sleep(0.3)
    assert uploaded_blobs(secure.log) - full == 2  # the code layer and the config

    res = cli("copy", f"{plain.address}/team/modthree:v2", f"{plain.address}/again/modthree:v2")
    assert res.code == 0 and "0 blob(s) uploaded" in res.out, res.out  # within one registry: mounts only

    res = cli("copy", f"{plain.address}/team/nothing:v1", f"{secure.address}/mirror/nothing:v1")
    assert res.code == 5 and "copy of" in res.err and len(res.err.strip().splitlines()) == 1, res.err


def test_a_runtime_push_attaches_its_sbom_as_a_referrer_once(cli, runtime, plain_registry):
    from builder.images import sbom
    from builder.registry.client import RegistryClient

    expected = sbom.read_sbom(Store().layout, local_image(f"swrt/{runtime}:latest"))
    assert expected, "a runtime image carries its SBOM"
    target = f"{plain_registry.address}/team/env:v1"
    for _ in range(2):  # the second push attaches nothing new
        res = cli("runtime", "push", runtime, target)
        assert res.code == 0, res.err
    digest = json.loads(plain_registry.skopeo("inspect", f"docker://{target}").stdout)["Digest"]
    client = RegistryClient(plain_registry.address)
    found = client.referrers("team/env", digest, sbom.SBOM_MEDIA_TYPE)
    assert len(found) == 1 and found[0]["artifactType"] == sbom.SBOM_MEDIA_TYPE
    artifact = json.loads(client.get_manifest("team/env", found[0]["digest"]).data)
    assert artifact["subject"]["digest"] == digest
    held = io.BytesIO()
    client.fetch_blob("team/env", artifact["layers"][0]["digest"], held)
    assert held.getvalue() == expected


def test_registry_dying_mid_push_leaves_nothing_corrupt_and_the_next_push_completes(cli, runtime, plain_registry,
                                                                                   tmp_path):
    """Kill the registry as soon as it has started taking a blob; the push fails in one line, the registry has
    no tag for the half-sent image, and once it is back the same push completes and every blob verifies."""
    reg = plain_registry
    target = f"{reg.address}/team/env:v1"
    killed = threading.Event()

    def kill_on_first_upload() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if reg.log.exists() and re.search(r'"(POST|PATCH) /v2/team/env/blobs/uploads/', reg.log.read_text()):
                reg.kill()
                killed.set()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_on_first_upload, daemon=True)
    watcher.start()
    res = cli("runtime", "push", runtime, target)
    watcher.join(timeout=5)
    assert killed.is_set(), "the push finished before the registry could be killed"
    errors = [line for line in res.err.splitlines() if line.startswith("swcli: error:")]
    assert res.code == 5 and len(errors) == 1 and "push of" in errors[0], res.err
    assert res.err.strip().splitlines()[-1] == errors[0]  # above it only per-blob progress
    assert local_image(f"swrt/{runtime}:latest")  # the local image is untouched

    reg.start()
    assert reg.skopeo("inspect", f"docker://{target}").returncode != 0  # no tag points at a half-pushed image
    res = cli("runtime", "push", runtime, target)
    assert res.code == 0, res.err
    copied = reg.skopeo("copy", f"docker://{target}", f"oci:{tmp_path / 'verify'}:v1")  # checks every blob's digest
    assert copied.returncode == 0, copied.stderr
    manifest = json.loads(reg.skopeo("inspect", "--raw", f"docker://{target}").stdout)
    assert len(manifest["layers"]) == len(local_image(f"swrt/{runtime}:latest").layers)


def test_unreachable_registry_is_one_line(cli, project, runtime, swcli_home):  # noqa: F811
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    res = cli("model", "push", "modthree", f"127.0.0.1:{dead}/team/modthree:v1")
    assert res.code == 5 and "push of" in res.err and len(res.err.strip().splitlines()) == 1, res.err
    res = cli("pull", f"127.0.0.1:{dead}/team/modthree:v1")
    assert res.code == 5 and "pull of" in res.err and len(res.err.strip().splitlines()) == 1, res.err


@pytest.mark.docker
def test_docker_pull_of_a_pushed_model_image_evaluates_like_in_process(engine, cli, project, runtime,  # noqa: F811
                                                                       plain_registry, tmp_path):
    """What swcli pushed with no engine is an image Docker pulls and runs: `eval` with the dataset mounted gives
    the metrics of the in-process evaluation."""
    model_dir, data_dir = project
    assert cli("dataset", "build", data_dir, "--no-load").code == 0
    build_model(cli, model_dir, runtime)
    assert cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "local").code == 0
    target = f"{plain_registry.address}/team/modthree:v1"
    assert cli("model", "push", "modthree", target).code == 0
    engine.images.pull(target)
    try:
        assert engine.images.get(target).id == local_image("swmp/modthree:latest").image_id
        out = tmp_path / "container"
        out.mkdir()
        os.chmod(out, 0o777)
        dataset = Store().resolve("dataset", "tiny").path
        run_removed(engine, target, ["eval"], user=f"{os.getuid()}:{os.getgid()}",
                    volumes={str(dataset): {"bind": "/dataset", "mode": "ro"},
                             str(out): {"bind": "/output", "mode": "rw"}})
        assert (out / "metrics.json").read_bytes() == (tmp_path / "local" / "metrics.json").read_bytes()
    finally:
        engine.images.remove(target, force=True)



@pytest.mark.docker
def test_pull_load_puts_the_image_in_the_engine_under_its_local_names(engine, cli, project, runtime,  # noqa: F811
                                                                      plain_registry, tmp_path, monkeypatch):
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    image_id = local_image("swmp/modthree:latest").image_id
    target = f"{plain_registry.address}/team/modthree:v1"
    assert cli("model", "push", "modthree", target).code == 0
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    if ENGINE_HOST is None:
        monkeypatch.delenv("DOCKER_HOST")
    else:
        monkeypatch.setenv("DOCKER_HOST", ENGINE_HOST)
    res = cli("pull", target, "--load")
    assert res.code == 0, res.err
    version = Store().resolve("model", "modthree").version
    for tag in (f"swmp/modthree:{version}-{image_id.split(':')[1][:12]}", "swmp/modthree:latest", target):
        assert engine.images.get(tag).id == image_id
    engine.images.remove(target, force=True)

# --- bad input: a registry (behind a fault proxy) that answers garbage, hangs, fails one blob, flips a byte -------

@pytest.fixture()
def pushed_model(cli, project, runtime, plain_registry, tmp_path, monkeypatch):  # noqa: F811
    """The model pushed (directly) to the plain registry, then a fresh empty store: what a pull starts from.
    Returns the remote manifest (layers, config)."""
    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    assert cli("model", "push", "modthree", f"{plain_registry.address}/team/modthree:v1").code == 0
    raw = json.loads(plain_registry.skopeo("inspect", "--raw",
                                           f"docker://{plain_registry.address}/team/modthree:v1").stdout)
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    return raw


def refused(res, *words) -> str:
    errors = [line for line in res.err.splitlines() if line.startswith("swcli: error:")]
    assert res.code == 5 and len(errors) == 1 and res.err.strip().splitlines()[-1] == errors[0], res.err
    assert "Traceback" not in res.err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_nothing_pulled(tmp_path) -> None:
    """No store entry, no ref in the layout, no staging folder and no temp blob left behind."""
    store = Store()
    assert store.list("dataset") == store.list("model") == store.list("runtime") == []
    layout = Store().layout
    assert (layout.refs() if (layout.root / "index.json").exists() else {}) == {}
    assert not list(layout.blobs.glob(".tmp-*")) if layout.blobs.exists() else True
    tmp = tmp_path / "fresh-home" / "tmp"
    assert not [p for p in tmp.glob("*") if not p.name.endswith(".lock")] if tmp.exists() else True


def test_a_pull_from_a_registry_answering_garbage_is_one_line_and_leaves_nothing(cli, pushed_model,
                                                                                plain_registry, tmp_path):
    from tests.registry_servers import FaultProxy, Rule

    proxy = FaultProxy(plain_registry.address, [Rule("GET", r"/manifests/", "garbage")])
    try:
        refused(cli("pull", f"{proxy.address}/team/modthree:v1"), "pull of", "not a manifest")
    finally:
        proxy.stop()
    assert_nothing_pulled(tmp_path)


def test_a_hanging_registry_times_out_in_seconds(cli, project, runtime, plain_registry, monkeypatch):  # noqa: F811
    from tests.registry_servers import FaultProxy, Rule

    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    monkeypatch.setenv("SWCLI_REGISTRY_TIMEOUT", "2")
    proxy = FaultProxy(plain_registry.address, [Rule("HEAD", r"/blobs/", "hang")])
    try:
        started = time.monotonic()
        res = cli("model", "push", "modthree", f"{proxy.address}/team/modthree:v1")
        assert time.monotonic() - started < 20
    finally:
        proxy.stop()
    refused(res, "push of")
    assert plain_registry.skopeo("inspect", f"docker://{plain_registry.address}/team/modthree:v1").returncode != 0


def test_a_5xx_on_one_blob_fails_the_push_with_no_tag_and_the_pull_with_nothing_written(
        cli, project, runtime, plain_registry, tmp_path, monkeypatch):  # noqa: F811
    from tests.registry_servers import FaultProxy, Rule

    model_dir, _ = project
    build_model(cli, model_dir, runtime)
    config = local_image("swmp/modthree:latest").image_id.partition(":")[2]
    proxy = FaultProxy(plain_registry.address, [Rule("PUT", rf"/blobs/uploads/.*digest=sha256%3A{config}", "status",
                                                     status=503)])
    try:
        res = cli("model", "push", "modthree", f"{proxy.address}/team/modthree:v1")
    finally:
        proxy.stop()
    refused(res, "push of", "503")
    assert plain_registry.skopeo("inspect", f"docker://{plain_registry.address}/team/modthree:v1").returncode != 0

    assert cli("model", "push", "modthree", f"{plain_registry.address}/team/modthree:v1").code == 0
    layer = json.loads(plain_registry.skopeo("inspect", "--raw", f"docker://{plain_registry.address}/team/modthree:v1")
                       .stdout)["layers"][-1]["digest"]
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh-home"))
    proxy = FaultProxy(plain_registry.address, [Rule("GET", rf"/blobs/{layer}", "status", status=500)])
    try:
        refused(cli("pull", f"{proxy.address}/team/modthree:v1"), "pull of", "500")
    finally:
        proxy.stop()
    assert_nothing_pulled(tmp_path)


def test_a_digest_mismatch_on_pull_is_refused_and_leaves_nothing(cli, pushed_model, plain_registry, tmp_path):
    from tests.registry_servers import FaultProxy, Rule

    layer = pushed_model["layers"][-1]["digest"]
    proxy = FaultProxy(plain_registry.address, [Rule("GET", rf"/blobs/{layer}", "flip")])
    try:
        refused(cli("pull", f"{proxy.address}/team/modthree:v1"), "pull of", layer, "digest")
    finally:
        proxy.stop()
    assert_nothing_pulled(tmp_path)
    res = cli("pull", f"{plain_registry.address}/team/modthree:v1")  # the same pull, unharmed, completes
    assert res.code == 0, res.err


def test_known_blobs_keep_the_newest_per_registry_and_merge_concurrent_pushes(tmp_path, monkeypatch):
    """registry-blobs.json (where a cross-repository mount can come from) is a bounded cache: what a push just
    learnt goes last, the oldest digests go when a registry holds more than KNOWN_PER_REGISTRY."""
    from builder.distribute import blobs as reg

    monkeypatch.setattr(reg, "KNOWN_PER_REGISTRY", 3)
    path = tmp_path / "registry-blobs.json"
    first, second = reg.KnownBlobs("r:5000", path), reg.KnownBlobs("r:5000", path)  # two pushes at once
    for n in (5, 1, 2):  # learning order, not sorted order, says which are the oldest
        first.learn(f"sha256:{n}", "team/a")
    second.learn("sha256:0", "team/b")
    other = reg.KnownBlobs("q:5000", path)
    other.learn("sha256:0", "team/q")
    first.save(), second.save(), other.save()
    data = json.loads(path.read_text())
    assert list(data["r:5000"]) == ["sha256:1", "sha256:2", "sha256:0"] and data["q:5000"] == {"sha256:0": "team/q"}
    again = reg.KnownBlobs("r:5000", path)
    again.learn("sha256:1", "team/c")  # learnt again: newest now, with its new holder
    again.save()
    assert list(json.loads(path.read_text())["r:5000"].items()) == [
        ("sha256:2", "team/a"), ("sha256:0", "team/b"), ("sha256:1", "team/c")]
    assert reg.KnownBlobs("r:5000", path).holder("sha256:1", besides="team/x") == "team/c"
