"""Jobs the console starts: the same `swcli` command a user would type, as a child process, one at a time.

A job is ``swcli model eval MODEL --dataset D --output F`` (this machine, in-process) or ``swcli job run --model M
--dataset D --output F --shards N`` (this machine, in containers), with ``F`` a new run folder of the history,
``$SWCLI_HOME/runs/<run id>`` (the id made as `model eval` makes one), so the run is in the history the moment it
starts and a console job behaves exactly like the command its page shows. The job's own output log is kept in
``$SWCLI_HOME/console/jobs/<job id>/``. Progress is read from the outside: the results lines the run has
written (every ``results.jsonl`` under ``F``, the shard parts' too) against the dataset's record count. Cancel sends
the process group SIGINT (the CLI's Ctrl-C: the run is closed as interrupted), then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from builder import outdir
from builder.errors import UsageError
from builder.runs.folder import PARTIAL, RESULTS, TMP
from builder.store import Store, utc_now

LOG_TAIL = 200  # lines kept of a job's output
LOG_LINE = 2000  # characters kept of one line
MAX_JOBS = 200  # jobs remembered; the oldest finished ones are forgotten first (their folders stay)
MAX_QUEUED = 32  # jobs waiting to run; more is refused
CANCEL_GRACE = 10.0  # seconds from SIGINT to SIGTERM, and again to SIGKILL


@dataclass
class Job:
    id: str
    model: str
    dataset: str
    where: str
    shards: int
    folder: Path
    argv: list[str]
    total: int | None
    created: str = field(default_factory=utc_now)
    status: str = "queued"
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    run: str | None = None
    error: str | None = None
    log: deque = field(default_factory=lambda: deque(maxlen=LOG_TAIL))
    process: subprocess.Popen | None = None
    cancel_asked: bool = False
    counter: "ResultsCounter" = field(init=False)

    def __post_init__(self) -> None:
        self.counter = ResultsCounter(self.output)

    @property
    def output(self) -> Path:
        return Path(self.argv[self.argv.index("--output") + 1])

    @property
    def command(self) -> str:
        import shlex

        return " ".join(shlex.quote(a) for a in ["swcli", *self.argv])

    def progress(self) -> dict:
        done = self.counter.count()
        now = self.ended or time.monotonic()
        elapsed = (now - self.started) if self.started else 0.0
        rate = done / elapsed if elapsed > 0.5 and done else None
        total = self.total
        eta = (total - done) / rate if rate and total and self.status == "running" else None
        return {"done": done, "total": total, "elapsed": round(elapsed, 2),
                "rate": None if rate is None else round(rate, 1), "eta": None if eta is None else round(eta, 1)}

    def view(self, *, log_lines: int = 30) -> dict:
        return {"id": self.id, "status": self.status, "run": self.run, "model": self.model, "dataset": self.dataset,
                "where": self.where, "shards": self.shards, "created": self.created, "command": self.command,
                "exit_code": self.exit_code, "error": self.error, "progress": self.progress(),
                "log": list(self.log)[-log_lines:] if log_lines else []}


def run_id_for(model: str, dataset: str) -> str:
    """A new run id as `swcli model eval` makes one, from the refs' names (a registry ref: its repository's last part)."""
    from builder.evaluate.model_eval import new_run_id

    def name(ref: str) -> str:
        base = ref.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")[:60] or "x"

    return new_run_id(name(model), name(dataset))


class ResultsCounter:
    """Result lines under a run folder and its shard parts (``parts/<i>/``), read incrementally.

    The runner writes results through a shared mapping whose file runs ahead as zeros (builder.runs.mapped), so only
    newlines count, and a read stops after the last one: the bytes past it are read again next time.
    Files are opened without following links (the folder is the job's own, but a run could plant one)."""

    def __init__(self, root: Path):
        self.root = root
        self.seen: dict[Path, tuple[int, int]] = {}  # path -> (bytes read, newlines)
        self.lock = threading.Lock()

    def _folders(self) -> list[Path]:
        found = [self.root]
        parts = self.root / "parts"
        if parts.is_dir() and not parts.is_symlink():
            found += sorted(p for p in parts.iterdir() if p.is_dir() and not p.is_symlink())[:4096]
        return found

    def count(self) -> int:
        """Records written so far: per folder, the most lines among the results being written (``.tmp``), the
        finished ones and those of a run that stopped (``.partial``), as the runner renames one into the other. The
        shard parts' sum, or the merged run's own once the merge wrote it (the same records again), whichever is more."""
        with self.lock:
            root, *parts = [max(self._lines(folder / name) for name in (TMP, RESULTS, PARTIAL))
                            for folder in self._folders()]
            return max(root, sum(parts))

    def _lines(self, path: Path) -> int:
        pos, lines = self.seen.get(path, (0, 0))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return lines if path.name == RESULTS else 0  # a renamed .tmp counts no more; results.jsonl stays
        try:
            size = os.fstat(fd).st_size
            if size < pos:  # rewritten (a resumed part cut its last line): count again
                pos, lines = 0, 0
            while pos < size:  # up to the last newline only: the zeros after it fill in later
                chunk = os.pread(fd, min(8 << 20, size - pos), pos)
                end = chunk.rfind(b"\n") + 1
                if not end:
                    break
                lines += chunk.count(b"\n", 0, end)
                pos += end
        finally:
            os.close(fd)
        self.seen[path] = (pos, lines)
        return lines


class JobManager:
    """Runs console jobs one at a time, in the order they were asked for, on a thread of its own."""

    def __init__(self, store: Store, *, python: str = sys.executable, record_count=None):
        self.store, self.python = store, python
        self.record_count = record_count or (lambda dataset: None)
        self.jobs: dict[str, Job] = {}
        self.queue: deque[Job] = deque()
        self.lock = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="console-jobs", daemon=True)
        self.worker.start()

    @property
    def root(self) -> Path:
        return self.store.root / "console" / "jobs"

    def submit(self, model: str, dataset: str, *, where: str = "local", shards: int = 1) -> Job:
        with self.lock:
            if len(self.queue) >= MAX_QUEUED:
                raise UsageError(f"{MAX_QUEUED} jobs are waiting already; cancel one or wait")
        job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        folder = self.root / job_id
        folder.mkdir(parents=True, mode=0o700)
        out = str(self.store.runs_dir / run_id_for(model, dataset))
        if where == "local":
            argv = ["model", "eval", model, "--dataset", dataset, "--output", out]
        else:
            argv = ["job", "run", "--model", model, "--dataset", dataset, "--output", out, "--shards", str(shards)]
        job = Job(job_id, model, dataset, where, shards, folder, argv, self.record_count(dataset))
        with self.lock:
            self.jobs[job_id] = job
            self._forget_old()
            self.queue.append(job)
            self.lock.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def list(self) -> list[Job]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.status not in ("queued", "running"):
                return job
            job.cancel_asked = True
            if job.status == "queued":
                self.queue.remove(job)
                job.status, job.ended = "cancelled", time.monotonic()
                return job
            process = job.process
        if process is not None:
            threading.Thread(target=_stop, args=(process,), daemon=True).start()
        return job

    def close(self) -> None:
        """Cancel what runs and what waits (the console is stopping)."""
        with self.lock:
            self.closed = True
            ids = [j.id for j in self.jobs.values() if j.status in ("queued", "running")]
            self.lock.notify_all()
        for job_id in ids:
            self.cancel(job_id)

    def _forget_old(self) -> None:
        finished = [j for j in sorted(self.jobs.values(), key=lambda j: j.created)
                    if j.status not in ("queued", "running")]
        while len(self.jobs) > MAX_JOBS and finished:
            self.jobs.pop(finished.pop(0).id, None)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                job = self.queue.popleft()
                job.status, job.started = "running", time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        env = {**os.environ, "SWCLI_HOME": str(self.store.root), "PYTHONUNBUFFERED": "1", "TERM": "dumb", "COLUMNS": "160"}
        log_path = job.folder / "output.log"
        try:
            with open(log_path, "wb") as log:
                process = subprocess.Popen([self.python, "-m", "builder", *job.argv], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True, cwd=job.folder)  # a ref is never a folder here
                with self.lock:
                    job.process = process
                    asked = job.cancel_asked
                if asked:
                    threading.Thread(target=_stop, args=(process,), daemon=True).start()
                for raw in iter(lambda: process.stdout.readline(LOG_LINE * 4), b""):  # a line without end is cut
                    log.write(raw)
                    job.log.append(raw.decode("utf-8", "replace").rstrip("\n")[:LOG_LINE])
                code = process.wait()
        except OSError as err:
            job.log.append(f"could not start the job: {err.strerror or err}")
            code = 1
        self._finish(job, code)

    def _finish(self, job: Job, code: int) -> None:
        run_id = None
        if outdir.is_file(job.output / "run.json"):
            from builder.runs.history import record_run
            from builder.errors import SwcliError

            try:
                run_id = record_run(job.output, self.store)
            except SwcliError as err:
                job.log.append(f"swcli console: the run is not in the history: {err}")
        with self.lock:
            job.exit_code, job.run, job.ended = code, run_id, time.monotonic()
            if job.cancel_asked:
                job.status = "cancelled"
            else:
                job.status = "succeeded" if code == 0 else "failed"
            if code and not job.cancel_asked:
                errors = [line for line in job.log if line.startswith("swcli: error:")]
                job.error = errors[-1] if errors else (job.log[-1] if job.log else f"exit code {code}")


def _stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(CANCEL_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
