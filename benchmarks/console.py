#!/usr/bin/env python3
"""`swcli console` at size (issue 21): page and API times, thumbnails, idle CPU and start-up, with their targets.

In a temporary store (``SWCLI_HOME``), made without evaluating:

- ``--runs`` runs in the history (default 1,000): small generated run folders (``tests/helpers/large_runs.py``, a few
  records each, models and accuracies varied), two of which are ``--records``-record runs (default 10,000) of one
  dataset of as many CIFAR-like records published in the store (``tests/helpers/record_datasets.py``), so their
  thumbnails decode. Their predictions differ, so the two have flipped records.
- The console runs as a real process (``python -m builder console --port 0``) read through HTTP with the printed
  token as a Bearer header. "cold" is the first request of a fresh process (nothing cached, the OS page cache warm),
  "warm" the median of ``--repeat`` more.

Measured: ``GET /runs`` (target < 0.5 s) and ``/api/runs``, with ``swcli eval list -o json`` over the same history
as the anchor; the evaluation page, a page of 200 records, filtered and sorted pages, a page of 200 records with its
200 thumbnails over 6 parallel connections (as a browser fetches them) and over one (target < 0.3 s), compare and
flipped records of the two big runs; the console's CPU while idle (``/proc/PID/stat``, after start and after the
load; target ~0); start-up to the URL line and to the first answer; ``swcli --version`` now against commit 7eb8368
(before the console; a temporary ``git worktree``); the import time of ``builder.console.app``, and whether any
console module is imported by ``swcli --version``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/console.py            # full size, ~3 minutes
    PYTHONPATH=$PWD .venv/bin/python benchmarks/console.py --runs 20 --records 500 --idle 1   # smoke
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.store import Store  # noqa: E402
from tests.helpers.console_server import running_console  # noqa: E402
from tests.helpers.large_runs import write_large_run  # noqa: E402
from tests.helpers.record_datasets import cifar_like, publish_records  # noqa: E402

BEFORE = "7eb8368"  # the head before the console (issue 21) work started
MODELS = ("resnet18", "resnet50", "vit-tiny", "mobilenet", "cifar_net", "efficientnet")
ROWS: list[tuple[str, float | str, str, bool | None]] = []  # (measure, value, target, met)


def row(measure: str, value: float | str, target: float | str | None = None, *, unit: str = "s") -> None:
    if isinstance(value, float):
        shown = f"{value * 1000:.1f} ms" if unit == "s" else f"{value:.2f} {unit}"
    else:
        shown = str(value)
    met = None
    if isinstance(target, float) and isinstance(value, float):
        met = value < target
        target = f"< {target * 1000:.0f} ms" if unit == "s" else f"< {target} {unit}"
    ROWS.append((measure, shown, target or "", met))


def _patch(folder: Path, i: int, model: str, started: str, rng: random.Random) -> None:
    """A model name, a start time and a headline accuracy of its own for run ``folder``."""
    run = json.loads((folder / "run.json").read_text())
    run["model"] = {"name": model, "version": f"v{i % 7}"}
    run["started"] = started
    (folder / "run.json").write_text(json.dumps(run))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["summary"]["accuracy"] = round(rng.uniform(0.5, 0.99), 4)
    metrics["summary"]["macro avg"]["f1-score"] = round(rng.uniform(0.5, 0.99), 4)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def make_store(home: Path, runs: int, records: int) -> tuple[str, str]:
    """``runs`` runs in ``home``'s history, two of them of ``records`` records over a dataset in the store."""
    store = Store(home)
    entry = publish_records(store, "cifar", cifar_like(records))
    rng = random.Random(21)
    for i in range(runs - 2):
        folder = write_large_run(store.runs_dir / f"run-{i:05d}", 20, 10, seed=i, failed_every=9)
        _patch(folder, i, MODELS[i % len(MODELS)], f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00+00:00", rng)
    big = []
    for seed, model in ((1, "big-a"), (2, "big-b")):
        folder = write_large_run(store.runs_dir / f"{model}-run", records, 10, seed=seed, failed_every=97,
                                 dataset=("cifar", entry.version))
        _patch(folder, seed, model, f"2026-12-0{seed}T00:00:00+00:00", rng)
        big.append(folder.name)
    return big[0], big[1]


class Client:
    """Keep-alive HTTP/1.1 to the console, one connection per thread, with its Host and Bearer headers."""

    def __init__(self, console):
        self.host, self.headers = console.host, {"Host": console.host, "Authorization": f"Bearer {console.token}"}
        self.conns: dict[int, http.client.HTTPConnection] = {}

    def get(self, path: str, retry: bool = True) -> bytes:
        """The body of a 200 answer; a kept-alive connection the server closed meanwhile (uvicorn's keep-alive
        timeout is 5 s) is opened again once, as a browser does."""
        import threading

        key = threading.get_ident()
        if key not in self.conns:
            name, port = self.host.rsplit(":", 1)
            self.conns[key] = http.client.HTTPConnection(name, int(port), timeout=120)
        conn = self.conns[key]
        try:
            conn.request("GET", path, headers=self.headers)
            res = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            conn.close()
            del self.conns[key]
            if not retry:
                raise
            return self.get(path, retry=False)
        body = res.read()
        if res.status != 200:
            raise SystemExit(f"GET {path}: {res.status} {body[:300]!r}")
        return body

    @staticmethod
    def once(client: Client, path: str) -> bytes:
        """GET on a connection of its own, closed after the answer."""
        name, port = client.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(name, int(port), timeout=120)
        try:
            conn.request("GET", path, headers=client.headers)
            res = conn.getresponse()
            body = res.read()
        finally:
            conn.close()
        if res.status != 200:
            raise SystemExit(f"GET {path}: {res.status} {body[:300]!r}")
        return body

    def timed(self, path: str) -> float:
        started = time.perf_counter()
        self.get(path)
        return time.perf_counter() - started

    def cold_warm(self, path: str, repeat: int) -> tuple[float, float]:
        cold = self.timed(path)
        return cold, statistics.median(self.timed(path) for _ in range(repeat))

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def serve(home: Path):
    return running_console(env={"SWCLI_HOME": str(home), "PYTHONPATH": str(REPO)}, timeout=60)


def bench_history(home: Path, repeat: int, runs: int) -> None:
    for path, target in (("/runs", 0.5), ("/api/runs", None)):
        with serve(home) as console:  # each first in a process of its own: cold is cold
            client = Client(console)
            cold, warm = client.cold_warm(path, repeat)
            listed = len(json.loads(client.get("/api/runs"))["runs"])
            client.close()
        assert listed == runs, f"/api/runs lists {listed} runs, {runs} written"
        row(f"GET {path} ({runs} runs), cold", cold, target)
        row(f"GET {path} ({runs} runs), warm median", warm, target)
    env = {**os.environ, "SWCLI_HOME": str(home), "PYTHONPATH": str(REPO)}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "builder", "eval", "list", "-o", "json"], env=env,
                              capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - started)
    assert len(json.loads(done.stdout)) >= runs - 1, done.stdout[:200]
    row(f"anchor: swcli eval list -o json ({runs} runs), median of 3", statistics.median(times), "peer")


def page_with_thumbs(client: Client, run_id: str, offset: int, parallel: int, fresh: bool = False) -> float:
    """A records page of 200 and its 200 thumbnails, over ``parallel`` kept-alive connections (1: one after
    another), or with ``fresh`` a new connection for each request."""
    started = time.perf_counter()
    page = json.loads(client.get(f"/api/runs/{run_id}/records?limit=200&offset={offset}"))
    thumbs = [r["thumb"] for r in page["rows"]]
    if fresh:
        with ThreadPoolExecutor(parallel) as pool:
            sizes = list(pool.map(lambda t: len(Client.once(client, t)), thumbs))
    elif parallel == 1:
        sizes = [len(client.get(t)) for t in thumbs]
    else:
        with ThreadPoolExecutor(parallel) as pool:
            sizes = list(pool.map(client.get, thumbs))
            sizes = [len(s) for s in sizes]
    took = time.perf_counter() - started
    assert len(sizes) == len(page["rows"]) and min(sizes) > 60, "a thumbnail is missing or empty"
    return took


def bench_records(client: Client, a: str, b: str, records: int, repeat: int) -> None:
    n = f"{records // 1000}k" if records >= 1000 else str(records)
    cold, warm = client.cold_warm(f"/runs/{a}", repeat)
    row(f"GET /runs/{{id}} ({n} records), cold", cold, 0.5)
    row(f"GET /runs/{{id}} ({n} records), warm median", warm, 0.5)
    base = f"/api/runs/{a}/records?limit=200"
    cold, warm = client.cold_warm(base, repeat)
    row(f"GET records?limit=200 ({n}), cold (loads the table)", cold)
    row(f"GET records?limit=200 ({n}), warm median", warm)
    for query in ("true=3&pred=5", "correct=wrong&sort=-confidence"):
        cold, warm = client.cold_warm(f"{base}&{query}", repeat)
        row(f"GET records?{query}, first / warm", f"{cold * 1000:.1f} / {warm * 1000:.1f} ms")
    row("records page + 200 thumbs, 6 connections, cold", page_with_thumbs(client, a, 200, 6), 0.3)
    row("records page + 200 thumbs, 1 connection, cold", page_with_thumbs(client, a, 400, 1), 0.3)
    for parallel, name in ((6, "6 connections"), (1, "1 connection")):
        row(f"records page + 200 thumbs, {name}, warm median",
            statistics.median(page_with_thumbs(client, a, 200, parallel) for _ in range(repeat)), 0.3)
    # a new connection per request is not how a browser fetches a page: no target. Each new connection pays the
    # console's peer check (the owner of the peer socket, read from /proc/net/tcp: ~3.5 ms here)
    fresh = min(600, records - 100)  # a page not fetched yet (at --records 10000)
    row("page + 200 thumbs, a new connection per request, cold", page_with_thumbs(client, a, fresh, 6, True))
    row("page + 200 thumbs, a new connection per request, warm median",
        statistics.median(page_with_thumbs(client, a, fresh, 6, True) for _ in range(repeat)))
    cold, warm = client.cold_warm(f"/compare?runs={a}&runs={b}", repeat)
    row(f"GET /compare two {n} runs, cold", cold, 0.5)
    row(f"GET /compare two {n} runs, warm median", warm, 0.5)
    cold, warm = client.cold_warm(f"/api/compare/flipped?a={a}&b={b}", repeat)
    row("GET /api/compare/flipped, first / warm", f"{cold * 1000:.1f} / {warm * 1000:.1f} ms")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: every thread's


def idle_cpu(pid: int, seconds: float) -> float:
    """The process's CPU over ``seconds`` of wall time, in percent of one core."""
    before, started = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.perf_counter() - started)


def bench_big_runs(home: Path, a: str, b: str, records: int, repeat: int, idle: float) -> None:
    with serve(home) as console:
        time.sleep(3)
        row(f"idle CPU after start ({idle:g} s sampled)", idle_cpu(console.process.pid, idle), 1.0, unit="%")
        client = Client(console)
        bench_records(client, a, b, records, repeat)
        client.close()
        time.sleep(3)
        row(f"idle CPU after the load above ({idle:g} s)", idle_cpu(console.process.pid, idle), 1.0, unit="%")


def bench_startup(home: Path, repeat: int) -> None:
    to_line, to_answer = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        with serve(home) as console:
            to_line.append(time.perf_counter() - started)
            client = Client(console)
            client.get("/api/jobs")
            to_answer.append(time.perf_counter() - started)
            reused = statistics.median(client.timed("/api/jobs") for _ in range(repeat))  # the last start's
            client.close()
            fresh = []
            for _ in range(repeat):
                one = Client(console)
                fresh.append(one.timed("/api/jobs"))
                one.close()
    row(f"swcli console: start to URL line, median of {repeat}", statistics.median(to_line))
    row(f"swcli console: start to first answer, median of {repeat}", statistics.median(to_answer))
    row(f"GET /api/jobs on a new connection each, median of {repeat}", statistics.median(fresh))
    row(f"GET /api/jobs on one kept-alive connection, median of {repeat}", reused)


def version_times(trees: list[Path], repeat: int) -> list[float]:
    """The median wall time of ``swcli --version`` from each tree, the trees alternated (a busy machine slows
    both alike)."""
    times: list[list[float]] = [[] for _ in trees]
    for _ in range(repeat):
        for tree, out in zip(trees, times):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "builder", "--version"], env={**os.environ, "PYTHONPATH": str(tree)},
                           cwd=tempfile.gettempdir(), capture_output=True, check=True)
            out.append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def import_times(code: list[str], tree: Path = REPO) -> dict[str, tuple[int, int]]:
    """``python -X importtime ...``: module -> (self us, cumulative us)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *code], env={**os.environ, "PYTHONPATH": str(tree)},
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
    found = re.findall(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(\S.*)", done.stderr)
    return {name.strip(): (int(own), int(cum)) for own, cum, name in found}


def bench_imports(work: Path, repeat: int) -> None:
    before = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), BEFORE], check=True,
                   capture_output=True)
    try:
        now, then = version_times([REPO, before], repeat)
        modules = [len(import_times(["-m", "builder", "--version"], tree)) for tree in (REPO, before)]
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)
    row(f"swcli --version now, median of {repeat}", now, then * 1.1)
    row(f"swcli --version at {BEFORE} (before the console)", then, "peer")
    row("modules imported by swcli --version, now / before", f"{modules[0]} / {modules[1]}", "peer", unit="")
    app = import_times(["-c", "import builder.console.app"])
    loaded = [m for m in app if m.startswith("builder.console")]
    row("import builder.console.app: cumulative", app["builder.console.app"][1] / 1e6)
    row("import builder.console.app: every module's self time", sum(own for own, _ in app.values()) / 1e6)
    row("  ... of which builder.console.* self time", sum(app[m][0] for m in loaded) / 1e6)
    version = import_times(["-m", "builder", "--version"])
    leaked = sorted(m for m in version if m.startswith("builder.console"))
    row("console modules imported by swcli --version", ", ".join(leaked) or "none", "none", unit="")
    ROWS[-1] = (*ROWS[-1][:3], not leaked)


def report() -> bool:
    width = max(len(r[0]) for r in ROWS)
    print(f"{'measure':<{width}}  {'value':>18}  {'target':<10} met?")
    for measure, value, target, met in ROWS:
        print(f"{measure:<{width}}  {value:>18}  {target:<10} {'' if met is None else 'yes' if met else 'NO'}")
    missed = [r[0] for r in ROWS if r[3] is False]
    print(f"{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else ""))
    return not missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="runs in the history (two of them big)")
    ap.add_argument("--records", type=int, default=10_000, help="records of the two big runs and their dataset")
    ap.add_argument("--repeat", type=int, default=5, help="warm requests and console starts per median")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampled")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    if args.runs < 3 or args.records < 500:
        ap.error("--runs must be at least 3 and --records at least 500")
    work = Path(tempfile.mkdtemp(prefix="swcli-bench-console-"))
    try:
        started = time.perf_counter()
        a, b = make_store(work / "home", args.runs, args.records)
        print(f"made {args.runs} runs (2 of {args.records} records) and a {args.records}-record dataset in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        bench_history(work / "home", args.repeat, args.runs)
        bench_big_runs(work / "home", a, b, args.records, args.repeat, args.idle)
        bench_startup(work / "home", args.repeat)
        bench_imports(work, 2 * args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = report()
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
