"""ppl workers never turn a run that finishes in one process into a hang (issue 18, "Hangs").

The handlers here are odd, not hostile: the user's own code runs with the user's rights. They start threads
(a lock taken in a loop, logging, an executor), hold a lock from a thread ``threading`` does not list, or fork a
child that outlives its worker. Every run is the CLI in a real process under a hard timeout, so a regression
fails the test instead of hanging the suite; the outputs are compared byte for byte with ``--workers 1``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.datasets import write_tiny_dataset
from tests.helpers.counted import HANDLERS, same_files, write_model

REPO = Path(__file__).resolve().parents[2]
RECORDS = 1100  # over ppl_workers.AUTO_MIN_RECORDS (1,024): auto forks when nothing stops it
TIMEOUT = 90  # a run here takes 2-5 s; a hang is a failure after this, never a stuck suite

ODD = HANDLERS + '''

import _thread
import logging
import threading
from concurrent.futures import ThreadPoolExecutor


class Spinning(Counted):
    """A thread of its own takes a lock over and over; ppl takes it too (a cache guarded by a lock)."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.lock = threading.Lock()
        threading.Thread(target=self.spin, name="handler-spinner", daemon=True).start()
        time.sleep(0.05)

    def spin(self):
        while True:
            with self.lock:
                time.sleep(0.002)
            time.sleep(0.0005)

    def ppl(self, data, **kw):
        with self.lock:
            pass
        return super().ppl(data, **kw)


class Logging(Counted):
    """A thread of its own logs over and over; ppl logs too."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.log = logging.getLogger("odd-handler")
        self.log.addHandler(logging.StreamHandler(open(os.devnull, "w")))
        self.log.setLevel(logging.INFO)
        threading.Thread(target=self.chatter, name="handler-logger", daemon=True).start()
        time.sleep(0.05)

    def chatter(self):
        while True:
            self.log.info("tick")
            time.sleep(0.0005)

    def ppl(self, data, **kw):
        self.log.info("record %d", kw["index"])
        return super().ppl(data, **kw)


class Pooled(Counted):
    """ppl's work goes through a thread pool made (and warmed) in __init__."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="handler-pool")
        self.pool.submit(time.sleep, 0).result()

    def ppl(self, data, **kw):
        return self.pool.submit(Counted.ppl, self, data, **kw).result()


class Hidden(Counted):
    """A thread threading does not list (started with _thread, as a native library starts its own) holds a lock
    for its first 5 s (a warm-up), then ends; ppl takes the lock too. Workers forked in those 5 s get it held."""

    def __init__(self, device="cpu"):
        super().__init__(device)
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        _thread.start_new_thread(self.warm_up, ())

    def warm_up(self):
        time.sleep(5)  # the workers fork well within it (~0.1-0.5 s after __init__, more on a loaded machine)
        self.lock.release()

    def ppl(self, data, **kw):
        with self.lock:
            pass
        return super().ppl(data, **kw)


class Forks(Counted):
    """At record $FORK_AT the worker forks a child that sleeps $CHILD_SLEEPS s (holding every descriptor of the
    worker, its pipe included), then the worker is killed."""

    def ppl(self, data, **kw):
        if kw["index"] == int(os.environ.get("FORK_AT", "-1")):
            if os.fork() == 0:
                quiet = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # not the test's pipes: only the worker's own descriptors stay held
                    os.dup2(quiet, fd)
                time.sleep(float(os.environ["CHILD_SLEEPS"]))
                os._exit(0)
            os.kill(os.getpid(), 9)
        return super().ppl(data, **kw)


class Execs(Counted):
    """At record $EXEC_AT ppl starts `sleep` keeping every inheritable descriptor (close_fds=False), writes the
    descriptors the program holds to $EXEC_FDS (Popen returns once the exec is done) and ends it."""

    def ppl(self, data, **kw):
        if kw["index"] == int(os.environ.get("EXEC_AT", "-1")):
            import subprocess
            child = subprocess.Popen(["sleep", "30"], close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            import time
            for _ in range(40):  # `sleep` opens and closes files while it starts: look until it holds only what
                fds = {}          # it was given (an inherited pipe never goes away), at most 2 s
                for fd in Path(f"/proc/{child.pid}/fd").iterdir():
                    try:
                        fds[fd.name] = os.readlink(fd)
                    except FileNotFoundError:  # closed between the listing and the look
                        pass
                if sorted(fds) == ["0", "1", "2"]:
                    break
                time.sleep(0.05)
            child.kill()
            child.wait()
            Path(os.environ["EXEC_FDS"]).write_text(repr(sorted(fds.items())))
        return super().ppl(data, **kw)
'''


@pytest.fixture()
def home(cli, tmp_path, swcli_home):
    """A store holding the 1,100-record dataset; returns the build function for a model with handler ``name``."""
    data = write_tiny_dataset(tmp_path / "ds", [(bytes([i % 251]) * (8 + i % 5), i % 3) for i in range(RECORDS)],
                              files=3, volume="16k")
    assert cli("dataset", "build", "--no-image", data).code == 0

    def build(name: str) -> None:
        root = write_model(tmp_path / f"model-{name}")
        (root / "code" / "ppl.py").write_text("from pathlib import Path\n" + ODD)
        (root / "model.yaml").write_text((root / "model.yaml").read_text().replace("code.ppl:Counted",
                                                                                    f"code.ppl:{name}"))
        res = cli("model", "build", "--no-image", "--skip-gen-env", root)
        assert res.code == 0, res.err

    return build


def swcli(out: Path, *args: str, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """``swcli model eval modthree --dataset tiny -o OUT ARGS`` in a process of its own, killed (with its whole
    group: workers, their children) and failed after ``timeout`` seconds."""
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    environ.update(CALLS=str(out.parent / f"calls-{out.name}"), **env)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "model", "eval", "modthree", "--dataset", "tiny",
                             "-o", str(out), *args], cwd=REPO, env=environ, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"swcli model eval {' '.join(args)} hung (killed after {timeout} s); stderr: {stderr[-2000:]}")
    finally:  # the whole group, whatever the outcome: a child a worker forked may outlive the run
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("auto runs one process on one CPU: nothing to check")


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("swcli: warning:") and "thirteen" not in line]


@pytest.mark.parametrize("name, threads", [("Spinning", "handler-spinner"), ("Logging", "handler-logger"),
                                           ("Pooled", "handler-pool_0")])
def test_auto_with_a_handler_that_started_threads_predicts_in_one_process(home, tmp_path, name, threads):
    two_cpus()
    home(name)
    one = swcli(tmp_path / "one", "--workers", "1")
    assert one.returncode == 0, one.stderr
    auto = swcli(tmp_path / "auto")
    assert auto.returncode == 0, auto.stderr
    same_files(tmp_path / "one", tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["workers"] == 1
    note, = warnings(auto.stderr)
    assert note.startswith("swcli: warning: predicting in one process: the handler started threads of its own (")
    assert threads in note and "Traceback" not in auto.stderr


@pytest.mark.parametrize("name", ["Spinning", "Pooled"])
def test_asked_for_workers_with_a_handler_that_started_threads_is_one_line(home, tmp_path, name):
    home(name)
    started = time.monotonic()
    res = swcli(tmp_path / "two", "--workers", "2")
    assert res.returncode == 2  # a usage error: the flag cannot be honoured with this handler
    assert res.stderr.strip().splitlines()[-1].startswith(
        "swcli: error: --workers 2: the handler started threads of its own (")
    assert res.stderr.strip().endswith("use --workers 1") and "Traceback" not in res.stderr
    assert not (tmp_path / "two").exists()  # refused before anything was written
    assert time.monotonic() - started < 30


def test_a_worker_stuck_on_a_lock_held_at_fork_is_seen(home, tmp_path):
    """A thread threading does not list holds the lock at fork: the chokepoint cannot see it. Asked for, the stuck
    worker is one line; automatic, one process takes over after the chunks written."""
    home("Hidden")
    one = swcli(tmp_path / "one", "--workers", "1")
    assert one.returncode == 0, one.stderr
    started = time.monotonic()
    two = swcli(tmp_path / "two", "--workers", "2")
    assert two.returncode == 1, two.stderr
    line = two.stderr.strip().splitlines()[-1]
    assert "is stuck holding records" in line and "every thread of it waits on a lock" in line, two.stderr
    assert time.monotonic() - started < 40
    kept = [json.loads(raw)["index"] for raw in (tmp_path / "two" / "results.jsonl.partial").read_text().splitlines()]
    assert kept == list(range(len(kept)))
    two_cpus()
    auto = swcli(tmp_path / "auto")
    assert auto.returncode == 0, auto.stderr
    same_files(tmp_path / "one", tmp_path / "auto")
    assert any("are predicted in this process instead" in w for w in warnings(auto.stderr)), auto.stderr


@pytest.mark.parametrize("where", [5, 700])
def test_a_worker_whose_child_holds_its_pipe_is_seen_dead_at_once(home, tmp_path, where):
    home("Forks")
    started = time.monotonic()
    res = swcli(tmp_path / "two", "--workers", "2", FORK_AT=str(where), CHILD_SLEEPS="60")
    took = time.monotonic() - started
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert "was killed by SIGKILL" in line and "holding records" in line and "Traceback" not in res.stderr
    assert took < 30, f"noticed after {took:.1f} s: when the child exited, not the worker"
    first, last = (int(n) for n in line.split("holding records ")[1].split(";")[0].split("-"))
    assert first <= where <= last


def test_a_program_started_by_a_worker_holds_none_of_its_pipes(home, tmp_path):
    """Every descriptor of the runner's pipes is close-on-exec: a program the handler runs keeping inheritable
    descriptors (close_fds=False) gets only the standard three."""
    home("Execs")
    fds_file = tmp_path / "exec-fds"
    res = swcli(tmp_path / "two", "--workers", "2", EXEC_AT="300", EXEC_FDS=str(fds_file))
    assert res.returncode == 0, res.stderr
    held = dict(ast.literal_eval(fds_file.read_text()))
    assert sorted(held) == ["0", "1", "2"], held
    assert all(target == "/dev/null" for target in held.values()), held
