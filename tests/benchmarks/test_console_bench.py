"""benchmarks/console.py at a tiny size, so the script cannot rot: it runs end to end against a real console
process and prints every measure of its table (the numbers themselves are the benchmark's business, not this test's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MEASURES = ("GET /runs (20 runs), cold", "GET /api/runs (20 runs), warm median", "anchor: swcli eval list -o json",
            "GET /runs/{id} (500 records), cold", "GET records?limit=200 (500), cold",
            "GET records?true=3&pred=5", "GET records?correct=wrong&sort=-confidence",
            "records page + 200 thumbs, 6 connections, cold",
            "records page + 200 thumbs, 1 connection, warm median",
            "page + 200 thumbs, a new connection per request, warm median",
            "GET /compare two 500 runs, warm median", "GET /api/compare/flipped", "idle CPU after start",
            "idle CPU after the load above", "swcli console: start to first answer",
            "GET /api/jobs on one kept-alive connection", "swcli --version now", "swcli --version at 7eb8368",
            "modules imported by swcli --version, now / before", "import builder.console.app: cumulative",
            "console modules imported by swcli --version")


def test_the_console_benchmark_runs_at_a_tiny_size(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "console.py"), "--runs", "20", "--records", "500",
                           "--repeat", "2", "--idle", "0.5"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout
    for measure in MEASURES:
        assert measure in table, f"{measure!r} missing from:\n{table}"
    assert "console modules imported by swcli --version" in table and "none" in table
    assert list(tmp_path.iterdir()) == [], "the benchmark left temporary files behind"
