"""The installed `swcli` entry point, run as a user runs it: a subprocess of the console script, away from the
source tree. `make wheel-test` runs these against a wheel installed into a clean venv (SWCLI_BIN); in the normal
suite they run against the project venv's script. They catch what an editable install hides: an import of a
package we do not declare (click), templates left out of the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.models import HANDLER, MODEL_YAML

pytestmark = pytest.mark.entrypoint

SWCLI = Path(os.environ.get("SWCLI_BIN") or Path(sys.executable).parent / "swcli")
PYTHON = SWCLI.parent / "python"


def run(*args, cwd: Path, home: Path, exe: Path = SWCLI) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWCLI_TEMPLATES")}
    env.update(SWCLI_HOME=str(home), COLUMNS="200")
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("swcli: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_the_script_is_the_one_under_test(tmp_path):
    assert SWCLI.is_file(), f"{SWCLI} does not exist"
    proc = run("--version", cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 0 and proc.stdout.startswith("swcli "), proc.stderr
    # away from the source tree, the package comes from the install, not from a checkout on sys.path
    where = subprocess.run([str(PYTHON), "-c", "import builder; print(builder.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(SWCLI.parent.parent) or "SWCLI_BIN" not in os.environ, where


@pytest.mark.parametrize("args, words", [
    (["dataset", "build", "--bogus"], "No such option: --bogus"),
    (["model", "eval"], "Missing argument"),
    (["model", "eval", "m", "--dataset", "d", "--batch-size", "x"], "--batch-size"),
    (["job", "k8s", "--model", "m", "--dataset", "d", "--shards", "abc"], "--shards"),
    (["eval", "show", "--fail-under"], "requires an argument"),
    (["nonsense"], "No such command"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, words):
    proc = run(*args, cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert words in one_error_line(proc)


@pytest.mark.parametrize("args, words", [
    (["eval", "--batch-size", "x"], "--batch-size"),
    (["eval", "--batch-size"], "requires an argument"),
    (["merge", "/parts", "--output", "/o", "--wait", "soon"], "--wait"),
    (["merge"], "Missing argument"),
    (["train"], "No such command"),
])
def test_the_model_image_entrypoint_shares_the_mapping(tmp_path, args, words):
    proc = run("-m", "builder.container", *args, cwd=tmp_path, home=tmp_path / "home", exe=PYTHON)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert words in one_error_line(proc)


def test_a_user_error_is_one_line_with_its_exit_code(tmp_path):
    proc = run("dataset", "info", "nothing-here", cwd=tmp_path, home=tmp_path / "home")
    assert proc.returncode == 1 and "no dataset matches 'nothing-here'" in one_error_line(proc)


def test_templates_ship_with_the_install(tmp_path):
    """The Dockerfile template renders (no engine needed with --dockerfile-only) and the HTML report renders."""
    home = tmp_path / "home"
    project = write_tiny_dataset(tmp_path / "ds", [(bytes([i]) * (10 + i), i % 3) for i in range(30)])
    out = tmp_path / "ctx"
    proc = run("dataset", "build", project, "--dockerfile-only", out, cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    assert (out / "Dockerfile").read_text().count("FROM ") == 1

    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "__init__.py").write_text("")
    (model / "code" / "ppl.py").write_text(HANDLER)
    (model / "model.yaml").write_text(MODEL_YAML)
    (model / "models").mkdir()
    (model / "models" / "weights.json").write_text('{"offset": 0}')
    proc = run("model", "eval", model, "--dataset", "tiny", "-o", tmp_path / "run", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    proc = run("eval", "report", tmp_path / "run", "-o", tmp_path / "report.html", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "<html" in (tmp_path / "report.html").read_text()[:500].lower()


def test_the_console_serves_its_pages_from_the_install(tmp_path):
    """`swcli console`'s templates and static files ship with the install: the first URL signs in, the pages render."""
    import http.client
    import select
    import signal
    from urllib.parse import urlsplit

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWCLI_TEMPLATES")}
    env.update(SWCLI_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([str(SWCLI), "console", "--port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no URL line within 60 s"
        url = proc.stdout.readline().decode().split(" ", 1)[1].strip()
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", f"/?{parts.query}")
        res = conn.getresponse()
        res.read()
        assert res.status == 303
        cookie = res.getheader("set-cookie").split(";")[0]
        for path, words in (("/runs", b"Evaluations"), ("/static/console.js", b"textContent"), ("/api", b"/api/jobs")):
            conn.request("GET", path, headers={"Cookie": cookie})
            res = conn.getresponse()
            body = res.read()
            assert res.status == 200 and words in body, (path, res.status, body[:200])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


@pytest.mark.docker
@pytest.mark.slow
def test_the_readme_without_a_checkout_runs_as_written(tmp_path):
    """README's "Without a checkout" section, its shell blocks verbatim, with only the installed script on PATH."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Without a checkout (from `pip install`)\n", 1)[1].split("\n## ", 1)[0]
    script = "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))
    assert "swcli model build ." in script and "swmp/parity:latest eval" in script
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWCLI_TEMPLATES")}
    env.update(SWCLI_HOME=str(tmp_path / "home"), PATH=f"{SWCLI.parent}:{env.get('PATH', '')}")
    try:
        proc = subprocess.run(["bash", "-euc", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", "numbers-data"], capture_output=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "building runtime parity-env for model parity" in proc.stderr
    for out in ("out", "out-by-hand"):
        metrics = (tmp_path / "parity" / out / "metrics.json").read_text()
        assert '"accuracy": 1.0' in metrics, metrics[:300]
