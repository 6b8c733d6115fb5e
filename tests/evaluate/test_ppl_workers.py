"""`swcli model eval --workers N`: ppl in N forked processes writes what one process writes, byte for byte, and
keeps one process's meaning for every failure: a record that fails (logged in order, or stopping the run), a
corrupt record, a worker that dies, Ctrl-C, and kill -9 of the evaluating process followed by --resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import EvalError, ShardCorruptError, UsageError
from builder.evaluate.runner import ppl_workers
from builder.evaluate.runner.cpus import _cgroup_quota
from builder.evaluate.runner.ppl_workers import _pack, _unpack, choose_workers
from builder.volumes import INDEX_ENTRY, INDEX_HEADER, RECORD_HEADER, DatasetReader
from builder.store import Store
from tests.helpers.counted import HANDLERS, calls, same_files, write_model
from tests.helpers.datasets import write_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
RECORDS = 300  # record i: bytes([i % 251]) * (8 + i % 5), label i % 3; the handler fails records whose byte is 13

def use_handler(root: Path, name: str) -> Path:
    write_model(root)
    (root / "code" / "ppl.py").write_text(HANDLERS)
    (root / "model.yaml").write_text((root / "model.yaml").read_text().replace("code.ppl:Counted", f"code.ppl:{name}"))
    return root


@pytest.fixture()
def model(cli, tmp_path, monkeypatch):
    """The 300-record dataset and a model with handler ``name`` in the test's store; CALLS and BATCHES set."""
    data = write_tiny_dataset(tmp_path / "ds", [(bytes([i % 251]) * (8 + i % 5), i % 3) for i in range(RECORDS)],
                              files=3, volume="4k")
    assert cli("dataset", "build", "--no-image", data).code == 0
    monkeypatch.setenv("BATCHES", str(tmp_path / "batches"))

    def build(name: str) -> None:
        res = cli("model", "build", "--no-image", "--skip-gen-env", use_handler(tmp_path / f"model-{name}", name))
        assert res.code == 0, res.err

    return build


def run(cli, out: Path, workers: int, *extra: str):
    return cli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--workers", workers, *extra)


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(ppl_workers, "CHUNK", 7)  # 43 chunks over 300 records: every worker gets many


def test_workers_write_what_one_process_writes_and_log_failures_in_order(cli, model, tmp_path, monkeypatch,
                                                                         small_chunks):
    model("Counted")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls-1"))
    one = run(cli, tmp_path / "one", 1)
    monkeypatch.setenv("CALLS", str(tmp_path / "calls-3"))
    three = run(cli, tmp_path / "three", 3)
    assert one.code == 0 and three.code == 0, three.err
    same_files(tmp_path / "one", tmp_path / "three")
    assert sorted(calls(tmp_path / "calls-3")) == list(range(RECORDS))  # every record predicted once
    failures = [line for line in three.err.splitlines() if "thirteen" in line]
    assert failures == [line for line in one.err.splitlines() if "thirteen" in line]
    assert [line.split(":")[2].strip() for line in failures] == ["record 13", "record 264"]
    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in ("one", "three")}
    assert (runs["one"]["workers"], runs["three"]["workers"]) == (1, 3)
    # torch's threads: none when no code in this process imported torch (an earlier test may have), else 1 each
    assert runs["three"]["threads"] == (None if runs["one"]["threads"] is None else 1)
    assert runs["three"]["records"] == runs["one"]["records"] == {"total": RECORDS, "ok": RECORDS - 2, "failed": 2}


def test_a_batching_handler_gets_the_same_batches(cli, model, tmp_path, monkeypatch):
    model("Batched")
    batches = {}
    for workers in (1, 2):
        monkeypatch.setenv("BATCHES", str(tmp_path / f"batches-{workers}"))
        monkeypatch.setenv("CALLS", str(tmp_path / f"calls-{workers}"))
        assert run(cli, tmp_path / f"w{workers}", workers).code == 0
        batches[workers] = sorted((tmp_path / f"batches-{workers}").read_text().split(), key=lambda b: int(b.split(",")[0]))
    assert batches[1] == batches[2] and len(batches[1]) == -(-RECORDS // 8)
    same_files(tmp_path / "w1", tmp_path / "w2")


def test_a_failed_record_stops_the_run_after_the_lines_before_it(cli, model, tmp_path, monkeypatch, small_chunks):
    model("Strict")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    one, two = run(cli, tmp_path / "one", 1), run(cli, tmp_path / "two", 2)
    assert one.code == two.code == 1
    assert two.err.strip().splitlines()[-1] == one.err.strip().splitlines()[-1].replace(str(tmp_path / "one"),
                                                                                         str(tmp_path / "two"))
    assert "record 13: ppl raised ValueError: thirteen" in two.err
    same_files(tmp_path / "one", tmp_path / "two", names=("results.jsonl.partial",))
    assert len((tmp_path / "two" / "results.jsonl.partial").read_text().splitlines()) == 13


def test_a_corrupt_record_is_the_same_error_and_exit_code(cli, model, tmp_path, monkeypatch, small_chunks, swcli_home):
    model("Counted")
    entry = Store().resolve("dataset", "tiny")
    reader = DatasetReader(entry.path)
    volume, offset, *_ = INDEX_ENTRY.unpack_from(reader._index, INDEX_HEADER.size + 200 * INDEX_ENTRY.size)
    path = reader.volume_path(volume)
    reader.close()
    raw = bytearray(path.read_bytes())
    raw[offset + RECORD_HEADER.size] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(raw))
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    one, two = run(cli, tmp_path / "one", 1), run(cli, tmp_path / "two", 2)
    assert one.code == two.code == 3
    assert "(record 200): payload checksum mismatch" in two.err
    assert [line for line in two.err.splitlines() if "corrupt shard" in line][0].split("; partial")[0] == \
        [line for line in one.err.splitlines() if "corrupt shard" in line][0].split("; partial")[0]
    same_files(tmp_path / "one", tmp_path / "two", names=("results.jsonl.partial",))


def test_a_worker_that_dies_is_one_line_naming_its_records(cli, model, tmp_path, monkeypatch, small_chunks):
    model("Dies")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("DIE_AT", "150")
    res = run(cli, tmp_path / "out", 2)
    assert res.code == 1
    line = res.err.strip().splitlines()[-1]
    assert "was killed by SIGKILL (out of memory? the OOM killer sends SIGKILL) holding records" in line
    assert "Traceback" not in res.err
    first, last = (int(n) for n in line.split("holding records ")[1].split(";")[0].split("-"))
    assert first <= 150 <= last  # the chunks it held, the one it died in among them
    kept = [json.loads(raw)["index"] for raw in (tmp_path / "out" / "results.jsonl.partial").read_text().splitlines()]
    assert kept == list(range(len(kept))) and len(kept) <= 150
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "failed"


def test_auto_workers_that_cannot_fork_fall_back_to_one_process(cli, model, tmp_path, monkeypatch):
    from builder.evaluate.runner import run as evaluation

    model("Counted")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    assert run(cli, tmp_path / "one", 1).code == 0
    monkeypatch.setattr(ppl_workers, "AUTO_MIN_RECORDS", 10)
    monkeypatch.setattr(evaluation, "AUTO_MIN_RECORDS", 10)

    def no_fork(*args):
        raise BlockingIOError(11, "Resource temporarily unavailable")  # what fork says at a pids limit

    monkeypatch.setattr(ppl_workers.WorkerPool, "_start", no_fork)
    res = cli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "auto")
    assert res.code == 0, res.err
    assert "cannot start ppl worker 0 of" in res.err and "predicting in this process instead" in res.err
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["workers"] == 1
    same_files(tmp_path / "one", tmp_path / "auto")
    res = run(cli, tmp_path / "asked", 2)  # asked for: the failure is the run's
    assert res.code == 1 and "cannot start ppl worker 0 of 2: Resource temporarily unavailable" in res.err


def test_threads_and_gpu_runs_do_not_fork(cli, model, tmp_path):
    model("Counted")
    res = run(cli, tmp_path / "out", 2, "--threads", "2")
    assert res.code == 2 and "--threads 2 with --workers 2: each ppl worker runs torch on one thread" in res.err
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written
    res = run(cli, tmp_path / "out", 2, "--threads", "0")  # torch's default pool: not one thread either
    assert res.code == 2 and "--threads 0 with --workers 2" in res.err
    res = run(cli, tmp_path / "out", 2, "--device", "cuda")
    assert res.code == 2 and "--workers 2: CUDA does not survive fork" in res.err


# ------------------------------------------------------------------------------------ the process, from outside


def eval_process(out: Path, calls_file: Path, *extra: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "model", "eval", "modthree", "--dataset", "tiny", "-o", str(out),
         "--workers", "2", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "CALLS": str(calls_file), **env})


def children(pid: int) -> list[int]:
    """The ppl workers of ``pid`` (its children other than the scoring helper)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"metric_worker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


def wait_for(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)


@pytest.mark.slow
def test_kill_9_kills_the_workers_and_resume_gives_the_uninterrupted_outputs(cli, model, tmp_path, monkeypatch):
    model("Counted")
    monkeypatch.setenv("CALLS", str(tmp_path / "calls-reference"))
    assert run(cli, tmp_path / "reference", 1).code == 0
    out, first, second = tmp_path / "out", tmp_path / "calls-1", tmp_path / "calls-2"
    proc = eval_process(out, first, SLEEP="0.01", SWCLI_HOME=os.environ["SWCLI_HOME"])
    try:
        wait_for(proc, lambda: len(calls(first)) >= 150)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert gone(workers), "ppl workers outlived the evaluating process"
    kept = (out / ".results.jsonl.tmp").read_bytes().count(b"\n")
    assert 0 < kept < RECORDS
    proc = eval_process(out, second, "--resume", SWCLI_HOME=os.environ["SWCLI_HOME"])
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"resumed after {kept} of {RECORDS} records" in stdout
    assert sorted(calls(second)) == list(range(kept, RECORDS))
    same_files(out, tmp_path / "reference")


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_keeps_the_results_in_order(cli, model, tmp_path, monkeypatch):
    model("Counted")
    out = tmp_path / "out"
    proc = eval_process(out, tmp_path / "calls", SLEEP="0.01", SWCLI_HOME=os.environ["SWCLI_HOME"])
    try:
        wait_for(proc, lambda: (out / ".results.jsonl.tmp").exists() and (out / ".results.jsonl.tmp").stat().st_size)
        workers = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert gone(workers)
    lines = [json.loads(raw)["index"] for raw in (out / "results.jsonl.partial").read_text().splitlines()]
    assert lines == list(range(len(lines))) and lines
    assert err.strip().splitlines()[-1].startswith(f"swcli: error: interrupted after {len(lines)} records")
    assert "Traceback" not in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


# ------------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize("kwargs, budget, expected", [
    ({}, 4, 4),  # the CPUs this process may use
    ({}, 64, ppl_workers.AUTO_MAX_WORKERS),
    ({"device": "cuda"}, 4, 1),
    ({"threads_decided": True}, 4, 1),
    ({"records": ppl_workers.AUTO_MIN_RECORDS - 1}, 4, 1),
])
def test_auto_workers(kwargs, budget, expected):
    args = {"device": None, "threads_decided": False, "records": 10_000, **kwargs}
    assert choose_workers(None, budget=lambda: budget, **args) == expected


def test_requested_workers_are_checked():
    from builder.errors import UsageError  # a bad flag value: exit 2 (issue 18)

    assert choose_workers(3, device="cpu", threads_decided=True, records=5) == 3  # asked for: given
    with pytest.raises(UsageError, match="--workers must be >= 1"):
        choose_workers(0, device=None, threads_decided=False, records=5)
    with pytest.raises(UsageError, match="CUDA does not survive fork"):
        choose_workers(2, device="cuda:1", threads_decided=False, records=5)


def test_cgroup_quotas(tmp_path):
    root, member = tmp_path / "cgroup", tmp_path / "self-cgroup"
    root.mkdir()
    member.write_text("0::/\n")  # a container's own cgroup namespace
    assert _cgroup_quota(root, member) is None  # no cgroup files: unlimited
    (root / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(root, member) is None
    (root / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(root, member) == 1.5
    # the host's namespace: the process sits deeper, and the tightest limit on the way up counts
    member.write_text("0::/kubepods.slice/pod1/cri-abc.scope\n")
    (root / "kubepods.slice" / "pod1" / "cri-abc.scope").mkdir(parents=True)
    (root / "kubepods.slice" / "pod1" / "cpu.max").write_text("50000 100000\n")
    (root / "kubepods.slice" / "pod1" / "cri-abc.scope" / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(root, member) == 0.5
    # cgroup v1: the cpu controller's own hierarchy
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    member.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_quota(v1, member) == 2.5
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cgroup_quota(v1, member) is None
    assert _cgroup_quota(v1, tmp_path / "no-such-file") is None


def test_errors_cross_the_pipe_with_their_class_and_data():
    err = _unpack(_pack(ShardCorruptError("data-00001.swds", 4096, "payload checksum mismatch", record=7)))
    assert type(err) is ShardCorruptError and err.exit_code == 3 and err.record == 7
    assert str(err) == "corrupt shard data-00001.swds at offset 4096 (record 7): payload checksum mismatch"

    class Local(Exception):  # not importable by name: comes back as an EvalError saying what it was
        pass

    back = _unpack(_pack(Local("odd")))
    assert isinstance(back, EvalError) and str(back) == "odd"
    back = _unpack(_pack(FileNotFoundError(2, "No such file or directory", "/data/vol-0001")))
    assert type(back) is FileNotFoundError and (back.errno, back.filename) == (2, "/data/vol-0001")
    assert _unpack(_pack(SystemExit(3))).code == 3


def test_a_walk_in_chunks_hands_pages_back_like_one_walk(tmp_path, monkeypatch):
    from builder.volumes import VolumeWriter, reader as volume_reader

    released = []
    monkeypatch.setattr(volume_reader, "RELEASE_EVERY", 4096)
    writer = VolumeWriter(tmp_path, 64, 1 << 20)
    for i in range(400):
        writer.add(bytes([i % 251]) * 1000, b"x")
    writer.close()
    reader = DatasetReader(tmp_path)
    monkeypatch.setattr(reader, "_release", lambda v, start, end: released.append(end) or end & ~4095)
    for lo in range(0, 400, 10):  # 40 calls of 10 records (~10 KB): each under RELEASE_EVERY on its own
        assert [r.index for r in reader.iter_records(lo, lo + 10)] == list(range(lo, lo + 10))
    assert len(released) >= 80  # ~400 KB walked, handed back about every 4 KB
    released.clear()
    assert len(list(reader.iter_records(0, 400))) == 400  # a second walk from the start hands back as it goes too
    assert len(released) >= 80
    reader.close()


@pytest.mark.slow
def test_the_scoring_helper_starts_before_the_handler_loads(cli, model, tmp_path):
    """In its own process (the test session has scikit-learn loaded, so no helper would start here): the handler
    module, on import, finds the helper already running beside it; the run ends with no helper or worker left."""
    model("Counted")
    src = next(tmp_path.glob("model-Counted/code/ppl.py"))
    src.write_text("import os, pathlib\n"
                   "_helpers = [p for p in pathlib.Path('/proc').glob('[0-9]*') if (p / 'stat').exists()\n"
                   "            and (p / 'stat').read_text().rsplit(')', 1)[1].split()[1] == str(os.getpid())\n"
                   "            and b'metric_worker' in (p / 'cmdline').read_bytes()]\n"
                   "pathlib.Path(os.environ['SEEN']).write_text(str(len(_helpers)))\n" + src.read_text())
    assert cli("model", "build", "--no-image", "--skip-gen-env", src.parent.parent).code == 0
    proc = eval_process(tmp_path / "out", tmp_path / "calls", SWCLI_HOME=os.environ["SWCLI_HOME"],
                        SEEN=str(tmp_path / "seen"))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert (tmp_path / "seen").read_text() == "1"  # scikit-learn was loading while the handler's module imported
    assert json.loads((tmp_path / "out" / "run.json").read_text())["workers"] == 2
    assert not children(proc.pid)


def test_workers_do_not_hold_the_scoring_helpers_pipes():
    """The helper ends when its owner closes its stdin: a worker forked after it must not keep a copy open."""
    from builder.evaluate.runner.metric_worker import scoring_helper

    if "tabnanny" in sys.modules:
        pytest.skip("tabnanny is loaded here already")
    with scoring_helper(["tabnanny"]) as helper:
        pipes = {os.readlink(f"/proc/self/fd/{f.fileno()}") for f in (helper.proc.stdin, helper.proc.stdout)}
        pool = ppl_workers.WorkerPool(2, lambda out, log: None, None, 1)
        try:
            for worker in pool.workers:
                deadline = time.monotonic() + 10
                while True:
                    held = set()
                    for fd in Path(f"/proc/{worker.process.pid}/fd").iterdir():
                        try:
                            held.add(os.readlink(fd))
                        except OSError:
                            continue
                    if not held & pipes:
                        break
                    assert time.monotonic() < deadline, f"worker {worker.number} still holds {held & pipes}"
                    time.sleep(0.02)
        finally:
            pool.close()


def test_a_handler_that_started_threads_keeps_auto_to_one_process_and_refuses_a_count():
    args = {"device": None, "threads_decided": False, "records": 10_000, "budget": lambda: 4}
    said = []
    assert choose_workers(None, handler_threads=["spinner"], warn=said.append, **args) == 1
    assert said == ["predicting in one process: the handler started threads of its own (spinner): a forked worker "
                    "would get the locks they hold, but not the threads, and could wait on one forever "
                    "(docs/runner.md, Workers)"]
    assert choose_workers(None, handler_threads=["spinner"], warn=said.append, **{**args, "records": 5}) == 1
    assert len(said) == 1  # auto would not have forked anyway: nothing to say
    assert choose_workers(1, handler_threads=["spinner"], **args) == 1
    with pytest.raises(UsageError, match=r"^--workers 2: the handler started threads of its own \(a, b\): .*"
                                        r"use --workers 1$"):
        choose_workers(2, handler_threads=["a", "b"], **args)


def test_the_fork_chokepoint_refuses_while_another_thread_runs():
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="someone-else", daemon=True)
    thread.start()
    try:
        with pytest.raises(ppl_workers.WorkerError, match=r"threads are running in this process \(someone-else\)"):
            ppl_workers.WorkerPool(2, lambda out, log: None, None, 1)
    finally:
        stop.set()
        thread.join()


def test_a_process_waiting_on_a_lock_nobody_can_release_is_seen_stuck_and_others_are_not():
    """ppl_watch.look: a forked child blocked on a lock held at fork (by a thread it does not have) looks the same
    twice; a child sleeping, waiting with a timeout, or reading a pipe looks like nothing."""
    import threading

    from builder.evaluate.runner import ppl_watch

    if ppl_watch._FUTEX is None:
        pytest.skip("no futex syscall number known for this machine")
    held = threading.Lock()
    shapes = {"stuck": lambda: held.acquire(), "sleeping": lambda: time.sleep(30),
              "timed": lambda: held.acquire(timeout=30), "reading": lambda: os.read(os.pipe()[0], 1)}
    seen = {}
    held.acquire()
    for name, wait in shapes.items():
        pid = os.fork()
        if pid == 0:
            try:
                wait()
            finally:
                os._exit(0)
        try:
            time.sleep(0.3)
            first = ppl_watch.look(pid)
            time.sleep(0.3)
            seen[name] = first is not None and first == ppl_watch.look(pid)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    held.release()
    assert seen == {"stuck": True, "sleeping": False, "timed": False, "reading": False}
