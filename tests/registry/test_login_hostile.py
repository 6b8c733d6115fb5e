"""`swcli login`/`logout` take a registry name, not a URL or a path, and read and write credentials under the same
key rules `pull` reads them with."""

from __future__ import annotations

import base64
import io
import json

import pytest

from builder.registry.credstore import Credentials, stored_credentials
from tests.registry_servers import Answer, HostileServer, Registry, basic_challenge


@pytest.fixture()
def docker_dir(tmp_path, monkeypatch):
    folder = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


@pytest.mark.parametrize("arg", ["127.0.0.1:5000/../../x", "https://reg.example", "reg.example/path", "reg example",
                                 "reg.example\x1b[31m", "", ":5000", "reg.example:99999", "reg.example:0",
                                 "reg.example:5000\n", "..", "reg..example", "[::1", "http://127.0.0.1:5000/v2/"])
def test_login_refuses_what_is_not_a_registry(cli, docker_dir, monkeypatch, arg):
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    res = cli("login", arg, "-u", "alice", "--password-stdin")
    assert res.code == 2, res
    assert len(res.err.strip().splitlines()) == 1 and "\x1b" not in res.err, res.err
    assert not docker_dir.exists()  # nothing stored, not even an empty config
    assert cli("logout", arg).code == 2


def _basic_registry():
    return HostileServer(lambda seen: basic_challenge(seen) or Answer(200, {}, b"{}"))


def test_login_and_logout_use_the_keys_pull_reads(cli, docker_dir, monkeypatch):
    """A login Docker stored under ``https://HOST:PORT/v1/`` is the same registry: `login` replaces it (one entry,
    under the bare name), pull reads the new one, `logout` forgets every key naming it and leaves the others."""
    with _basic_registry() as reg:
        docker_dir.mkdir()
        old = base64.b64encode(b"alice:old").decode()
        other = {"auth": base64.b64encode(b"bob:x").decode()}
        (docker_dir / "config.json").write_text(json.dumps({"auths": {f"https://{reg.address}/v1/": {"auth": old},
                                                                      f"http://{reg.address}": {"auth": old},
                                                                      "other.example": other}}))
        monkeypatch.setattr("sys.stdin", io.StringIO(Registry.PASSWORD + "\n"))
        res = cli("login", reg.address, "-u", Registry.USER, "--password-stdin")
        assert res.code == 0, res.err
        auths = json.loads((docker_dir / "config.json").read_text())["auths"]
        assert sorted(auths) == sorted([reg.address, "other.example"])
        assert stored_credentials(reg.address) == Credentials(Registry.USER, Registry.PASSWORD)
        assert (docker_dir / "config.json").stat().st_mode & 0o777 == 0o600
        (docker_dir / "config.json").write_text(json.dumps({"auths": {f"https://{reg.address}/v1/": {"auth": old},
                                                                      "other.example": other}}))
        assert "logged out" in cli("logout", reg.address).out
        assert json.loads((docker_dir / "config.json").read_text())["auths"] == {"other.example": other}
        assert stored_credentials(reg.address) is None


def test_config_temp_file_is_never_written_through_a_link(cli, docker_dir, monkeypatch, tmp_path):
    """The config is written to a fresh, unpredictable temp name: links planted at the old fixed temp names
    (``.config.json.<pid>.tmp``) are left alone, and so are their targets."""
    import os

    victim = tmp_path / "victim"
    victim.write_text("keep")
    docker_dir.mkdir()
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (docker_dir / f".config.json.{pid}.tmp").symlink_to(victim)
    with _basic_registry() as reg:
        monkeypatch.setattr("sys.stdin", io.StringIO(Registry.PASSWORD + "\n"))
        assert cli("login", reg.address, "-u", Registry.USER, "--password-stdin").code == 0
    assert victim.read_text() == "keep"
    assert stored_credentials(reg.address) == Credentials(Registry.USER, Registry.PASSWORD)
