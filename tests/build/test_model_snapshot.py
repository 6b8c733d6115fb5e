"""`swcli model build`: credentials refused or left out, what went in reported, data-heavy snapshots warned about,
and one env-lock exporter whose failure is one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from builder.build.model import build_model
from builder.build.env_lock import EnvLockError, export_env_lock
from builder.store import Store
from tests.helpers.cli import one_line_error
from tests.helpers.fake_secrets import AWS_ID, AWS_SECRET, OPENSSH, SERVICE_ACCOUNT

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10"


def store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and not p.is_symlink())


def test_credential_files_are_left_out_and_listed(cli, model_dir, swcli_home):  # noqa: F811
    (model_dir / ".aws").mkdir()
    (model_dir / ".aws" / "credentials").write_text(f"[default]\naws_access_key_id = {AWS_ID}\n"
                                                    f"aws_secret_access_key = {AWS_SECRET}\n")
    (model_dir / ".env.local").write_text(f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n")
    (model_dir / ".netrc").write_text("machine x login y password z\n")
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0, res.err
    assert "left out by the default credential rules" in res.err
    for shown in (".aws/", ".env.local", ".netrc"):
        assert shown in res.err
    paths = [f["path"] for f in Store().resolve("model", "modthree").manifest["files"]]
    assert not any(p.startswith((".aws", ".env", ".netrc")) for p in paths)
    for secret in (AWS_ID, AWS_SECRET):
        assert secret not in res.out + res.err
        assert secret.encode() not in store_bytes(swcli_home)


@pytest.mark.parametrize(
    ("rel", "text", "kind"),
    [
        ("deploy/robot", OPENSSH, "private key"),  # a private key under no telling name
        ("conf/service.json", SERVICE_ACCOUNT, "service-account key"),
        ("code/settings.py", f"AWS_KEY = '{AWS_ID}'\n", "AWS access key id"),
    ],
)
def test_a_secret_in_a_kept_file_refuses_the_build_naming_it(cli, model_dir, swcli_home, rel, text, kind):  # noqa: F811
    (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    (model_dir / rel).write_text(text)
    (model_dir / "code" / "other.py").write_text("-----BEGIN RSA " + "PRIVATE KEY-----\nx\n")
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    one_line_error(res, rel, kind, "code/other.py", ".swignore", "'!PATH'")
    assert Store().list("model") == []
    assert not any((swcli_home / "tmp").iterdir())  # the staged copy went with the refusal
    for line in text.splitlines():
        if len(line) > 20:
            assert line not in res.err
    # consent: re-include exactly those paths
    (model_dir / ".swignore").write_text(f"models/\n!{rel}\n!code/other.py\n")
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0, res.err
    assert rel in [f["path"] for f in Store().resolve("model", "modthree").manifest["files"]]


def test_weights_named_in_model_yaml_are_scanned_too(cli, model_dir):  # noqa: F811
    (model_dir / "models" / "weights.json").write_text('{"offset": 0, "note": "' + "-----BEGIN " + 'PRIVATE KEY-----"}')
    one_line_error(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"), "models/weights.json", "private key")


def test_build_says_what_went_in_and_warns_when_data_dominates(cli, model_dir):  # noqa: F811
    (model_dir / "data").mkdir()
    (model_dir / "data" / "data_batch_1").write_bytes(b"\1" * (3 << 20))
    (model_dir / "out" / "run1").mkdir(parents=True)
    (model_dir / "out" / "run1" / "results.jsonl").write_bytes(b"\2" * (1 << 20))
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0, res.err
    assert "7 files" in res.out
    assert "biggest: data/data_batch_1 (3.0 MiB), out/run1/results.jsonl" in res.out
    warning = [line for line in res.err.splitlines() if line.startswith("swcli: warning:")]
    assert len(warning) == 1 and "data/ 3.0 MiB" in warning[0] and ".swignore" in warning[0] and "'data/'" in warning[0]
    # listed in .swignore: the same tree builds without the warning
    (model_dir / ".swignore").write_text("models/\ndata/\nout/\n")
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0 and "warning:" not in res.err and "5 files" in res.out


def test_small_or_weight_heavy_snapshots_do_not_warn(cli, model_dir):  # noqa: F811
    (model_dir / "models" / "weights.json").write_text('{"offset": 0, "pad": "' + "0" * (4 << 20) + '"}')
    (model_dir / "table.csv").write_bytes(b"1,2\n" * 1000)
    res = cli("model", "build", "--no-image", model_dir, "--skip-gen-env")
    assert res.code == 0 and "warning:" not in res.err


def test_cifar10_seed_model_leaves_data_and_outputs_out(cli, tmp_path):
    seed = tmp_path / "cifar10"
    shutil.copytree(EXAMPLE, seed, ignore=shutil.ignore_patterns("data", "models", "out", "__pycache__"))
    weights = yaml.safe_load((seed / "model.yaml").read_text())["model"][0]
    (seed / weights).parent.mkdir(parents=True)
    (seed / weights).write_bytes(b"\0" * 1000)
    (seed / "data" / "cifar-10-batches-py").mkdir(parents=True)
    (seed / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\3" * (2 << 20))
    (seed / "data" / "cifar-10-python.tar.gz").write_bytes(b"\4" * 1000)
    (seed / "out" / "eval").mkdir(parents=True)
    (seed / "out" / "eval" / "results.jsonl").write_bytes(b"{}\n" * 1000)
    (seed / "report.html").write_text("<html></html>")
    res = cli("model", "build", "--no-image", seed, "--skip-gen-env")
    assert res.code == 0, res.err
    paths = [f["path"] for f in Store().resolve("model", "cifar_net").manifest["files"]]
    assert weights in paths and "code/ppl.py" in paths
    assert not any(p.startswith(("data/", "out/")) or p.endswith((".html", ".tar.gz")) for p in paths), paths
    assert "warning:" not in res.err


def fake_env(root: Path, python_script: str) -> Path:
    """A venv-shaped folder whose bin/python is a real executable script (no mocks: the exporter runs it)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    python = root / "bin" / "python"
    python.write_text("#!/bin/sh\n" + python_script)
    python.chmod(0o755)
    return root


def test_env_lock_failure_is_one_line_that_says_how_to_skip(cli, model_dir, tmp_path):  # noqa: F811
    env = fake_env(tmp_path / "env", 'echo "Traceback (most recent call last):" >&2\necho "OSError: disk on fire" >&2\nexit 2\n')
    with pytest.raises(EnvLockError) as info:
        build_model(model_dir, store=Store(tmp_path / "home"), env_lock=lambda: export_env_lock(env))
    message = str(info.value)
    assert "\n" not in message and str(env) in message and "exited 2" in message and "disk on fire" in message
    assert "--skip-gen-env" in message
    assert Store(tmp_path / "home").list("model") == []


def test_env_lock_of_an_env_without_python_or_pip(tmp_path):
    env = fake_env(tmp_path / "env", "exit 0\n")
    (env / "bin" / "python").unlink()
    with pytest.raises(EnvLockError, match="no bin/python"):
        export_env_lock(env)
    nopip = fake_env(tmp_path / "nopip", 'echo "/x/bin/python: No module named pip" >&2\nexit 1\n')
    dist = nopip / "lib" / "python3.11" / "site-packages" / "six-1.16.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n")
    lock = export_env_lock(nopip)
    assert (lock.kind, lock.text) == ("dist-info", "six==1.16.0\n")


def test_current_env_lock_is_pip_freeze_of_this_interpreter():
    lock = export_env_lock()
    assert lock.kind == "pip-freeze" and "numpy==" in lock.text and "swcli" not in lock.text.lower()  # editable left out
