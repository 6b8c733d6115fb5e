"""``ppl`` in forked worker processes (``swcli model eval --workers N``).

One process predicts on one core at a time, whatever its threads: the runner's own per-record work (reading and
checking records, ``handle_label``, one JSON line each) and a handler's Python (pre- and post-processing) hold the
GIL, and a one-record handler's tensors are too small for torch to split. N processes use N cores for all of it.

- The handler is built once, in the evaluating process; the workers are forked from it afterwards, so the model's
  memory is shared (copy on write) and nothing is imported or loaded again.
- Each worker runs torch on one intra-op thread: OpenMP's thread pool does not survive ``fork`` (a forked child
  that asks for two threads after its parent used them hangs), and N one-thread workers fill N cores anyway.
- The records still to predict, ``[start, stop)``, are cut into chunks: one batch for a batching handler,
  :data:`CHUNK` records for a one-record one. A worker takes the next chunk when it has fewer than :data:`AHEAD`,
  reads its records from the dataset itself (the volumes are memory-mapped; nothing is copied through a pipe),
  runs ``ppl`` and ``handle_label`` on them and sends back their JSON lines. The evaluating process writes the
  chunks in order and flushes after each one, so results.jsonl is byte for byte what one process writes, and a
  process killed with ``kill -9`` loses at most the chunks in flight, which ``--resume`` redoes.
- Failures mean what they mean in one process: with ``ignore_error=False`` a record that fails, or a corrupt one,
  stops the run after the lines before it are written, with the same error; failed records are logged in order.
  A worker that dies (the OOM killer, a crash in native code) is one line naming the records it held. Ctrl-C:
  the workers ignore SIGINT and are stopped by the evaluating process; if that process is killed, the kernel
  kills the workers (``PR_SET_PDEATHSIG``) and their pipes close.

Only where it is safe and worth it is the default (``auto``, :func:`choose_workers`): a CPU run on Linux, torch's
threads not set by the user, and enough records; the count is the CPUs this process may use (affinity and cgroup
quota).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import math
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from builder.api import metric_worker
from builder.errors import EvalError, UsageError

if TYPE_CHECKING:  # multiprocessing and ctypes load when workers start, not with every `swcli model eval`
    from multiprocessing.connection import Connection

CHUNK = 64  # records per chunk for a one-record handler: ~10 ms of the seed's work, ~17 KB of JSON back
AHEAD = 2  # chunks a worker holds: one computing, one queued, so it never waits for the evaluating process
WINDOW_PER_WORKER = 4  # chunks handed out past the next one to write: bounds the reorder buffer
AUTO_MIN_RECORDS = 1024  # fewer records than this: forking costs more than it saves
AUTO_MAX_WORKERS = 8
_PR_SET_PDEATHSIG = 1


class WorkerError(EvalError):
    """A ppl worker died, or could not be started."""


# ------------------------------------------------------------------------------------------- how many


def cpu_budget() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container's ``--cpus``, a
    Kubernetes CPU limit), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors (a limit may sit on a parent:
    a systemd slice, a pod above its container), v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when there is
    none, or nothing can be read."""
    quotas = [q for q in map(_quota_in, _cgroup_folders(root, membership)) if q is not None]
    return min(quotas, default=None)


def _cgroup_folders(root: Path, membership: Path) -> list[Path]:
    """The folders of this process's CPU cgroup and its ancestors, from ``/proc/self/cgroup`` (``0::/path`` for
    v2, ``N:cpu,cpuacct:/path`` for v1); the mount's root alone when that file says nothing."""
    bases: list[tuple[Path, Path]] = []
    with contextlib.suppress(OSError):
        for line in membership.read_text().splitlines():
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if controllers == "":
                mounts = [root]
            elif "cpu" in controllers.split(","):
                mounts = [root / controllers, root / "cpu"]  # v1: "cpu,cpuacct", usually with a "cpu" link
            else:
                continue
            bases += [(mount, Path(path.lstrip("/"))) for mount in mounts]
    folders = [mount / part for mount, rel in bases for part in (rel, *rel.parents)]
    return folders or [root, root / "cpu"]


def _quota_in(folder: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    with contextlib.suppress(Exception):
        return bool(torch is not None and torch.cuda.is_initialized())
    return False


def choose_workers(requested: int | None, *, device: str | None, threads_decided: bool, records: int,
                   budget: Callable[[], int] = cpu_budget) -> int:
    """How many processes run ``ppl``: ``requested`` when given (checked), else ``auto``.

    ``threads_decided``: the user chose torch's threads (``--threads``, ``OMP_NUM_THREADS``, the handler's own
    ``torch.set_num_threads``); workers would override that with one thread each, so auto keeps one process.
    ``records``: how many records are still to predict."""
    on_gpu = (device not in (None, "cpu")) or _cuda_in_use()
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--workers must be >= 1, got {requested}")
        if requested > 1 and on_gpu:
            raise UsageError(f"--workers {requested}: CUDA does not survive fork; a GPU run predicts in one process "
                            "(--workers 1)")
        if requested > 1 and not hasattr(os, "fork"):
            raise UsageError(f"--workers {requested}: this platform cannot fork; use --workers 1")
        return requested
    if on_gpu or threads_decided or records < AUTO_MIN_RECORDS or not sys.platform.startswith("linux"):
        return 1  # (elsewhere fork is missing, or unsafe under system frameworks, and PR_SET_PDEATHSIG is Linux's)
    return min(budget(), AUTO_MAX_WORKERS)


def range_of(records: Any) -> tuple[Any, int, int] | None:
    """``(reader, start, stop)`` when ``records`` can be read by index range (a dataset reader or a
    :class:`~builder.services.resume.RecordRange`), which workers need; None for any other iterable."""
    from builder.services.resume import RecordRange
    from builder.shards import DatasetReader

    if isinstance(records, RecordRange):
        return records.reader, records.start, records.stop
    if isinstance(records, DatasetReader):
        return records, 0, len(records)
    return None


# ------------------------------------------------------------------------------------------- the chunks


@dataclass
class Chunk:
    """What a worker sends back for records ``[start, stop)``."""

    number: int
    lines: list = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    ppl_seconds: float = 0.0
    failures: list = field(default_factory=list)  # the messages to log, in order
    error: tuple | None = None  # what stopped the chunk (see _pack), after ``lines``


class _Spans:
    """Chunk ``k`` of records ``[start, stop)`` cut every ``size`` records, computed when asked (a list of every
    chunk of a 10M-record run would hold 23 MB)."""

    def __init__(self, start: int, stop: int, size: int):
        self.start, self.stop, self.size = start, stop, size

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.size)

    def __getitem__(self, k: int) -> tuple[int, int]:
        lo = self.start + k * self.size
        return lo, min(lo + self.size, self.stop)


def _pack(err: BaseException) -> tuple:
    """An exception as data for the pipe: pickled when it comes back equal (OSError keeps errno and filename,
    SystemExit its code), else its class's place, args and attributes (SwcliError subclasses keep their exit code
    and the names of the culprit; their constructors do not take what ``args`` holds)."""
    with contextlib.suppress(Exception):
        data = pickle.dumps(err)
        back = pickle.loads(data)
        if type(back) is type(err) and str(back) == str(err):
            return ("pickle", data)
    state = {k: v for k, v in vars(err).items() if isinstance(v, (str, int, float, type(None)))}
    return ("parts", type(err).__module__, type(err).__qualname__, tuple(str(a) for a in err.args), state, str(err))


def _unpack(packed: tuple) -> BaseException:
    if packed[0] == "pickle":
        with contextlib.suppress(Exception):
            return pickle.loads(packed[1])
        return EvalError("a ppl worker's error could not be read back")
    _, module, name, args, state, text = packed
    with contextlib.suppress(Exception):
        cls = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            err = cls.__new__(cls)
            err.args = args
            err.__dict__.update(state)
            return err
    return EvalError(text)


# ------------------------------------------------------------------------------------------- worker side


class _Lines(list):
    """A worker's stand-in for the results writer: the lines of the chunk being predicted."""

    write = list.append

    def flush(self) -> None:
        pass


def _serve(conn: Connection, others: list[Connection], make_phase: Callable[..., Any], reader: Any, size: int,
           parent: int) -> None:
    """A worker's life: take ``(number, start, stop)`` requests until the pipe closes, answer each with a Chunk."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the evaluating process's to handle (blocked till now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # not a progress display's proxies: they are the parent's
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    for other in others:  # only our own end stays open here: the parent's death then reads as EOF
        other.close()
    metric_worker.forget_in_child()  # nor the scoring helper's pipes, which its owner closes to end it
    gc.freeze()  # the parent's objects are not ours to walk (and walking them would copy their pages)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    while True:
        try:
            number, start, stop = conn.recv()
        except (EOFError, OSError):
            return
        chunk = Chunk(number)
        phase = make_phase(_Lines(), chunk.failures.append)
        try:
            phase.run(reader.iter_records(start, stop), size, None)
        except BaseException as err:  # noqa: BLE001 - sent to the evaluating process, which raises it in order
            chunk.error = _pack(err)
        chunk.lines, chunk.ok, chunk.failed, chunk.ppl_seconds = list(phase.out), phase.ok, phase.failed, phase.ppl_seconds
        try:
            conn.send(chunk)
        except (OSError, ValueError):
            return


# ------------------------------------------------------------------------------------------- parent side


class _Worker:
    def __init__(self, number: int, process: Any, conn: Connection):
        self.number, self.process, self.conn = number, process, conn
        self.held: list[int] = []  # chunk numbers sent and not answered, in order


class WorkerPool:
    """N forked workers predicting chunks of ``reader``'s records; :meth:`run` writes them in order."""

    def __init__(self, count: int, make_phase: Callable[..., Any], reader: Any, size: int):
        self.workers: list[_Worker] = []
        try:
            self._start(count, make_phase, reader, size)
        except OSError as err:
            self.close()
            raise WorkerError(f"cannot start ppl worker {len(self.workers)} of {count}: {err.strerror or err}") from None
        except BaseException:  # Ctrl-C (delivered once the forks are done): the workers started go too
            self.close()
            raise

    def _start(self, count: int, make_phase: Callable[..., Any], reader: Any, size: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        for stream in (sys.stdout, sys.stderr):  # a child's first print would repeat what the parent buffered
            with contextlib.suppress(Exception):
                stream.flush()
        pairs = [ctx.Pipe() for _ in range(count)]
        parent_ends = [p for p, _ in pairs]
        # Ctrl-C waits until every worker is started and listed (and ignores it): none can be left behind, and
        # none prints a traceback for a KeyboardInterrupt met before it could ignore it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for number, (ours, theirs) in enumerate(pairs):
                others = parent_ends + [c for i, (_, c) in enumerate(pairs) if i != number]
                process = ctx.Process(target=_serve, args=(theirs, others, make_phase, reader, size, os.getpid()),
                                      name=f"swcli-ppl-{number}", daemon=True)
                process.start()
                self.workers.append(_Worker(number, process, ours))
        finally:
            for _, theirs in pairs:
                theirs.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def run(self, start: int, stop: int, size: int, emit: Callable[[Chunk], None]) -> None:
        """Predict records ``[start, stop)`` in chunks of ``size``; ``emit`` each answered chunk in order."""
        from multiprocessing.connection import wait

        spans = _Spans(start, stop, size)
        answered: dict[int, Chunk] = {}
        next_out = next_in = 0
        window = WINDOW_PER_WORKER * len(self.workers)
        while next_out < len(spans):
            while next_in < len(spans) and next_in < next_out + window:  # what fits, to whoever holds fewest
                worker = min(self.workers, key=lambda w: len(w.held))
                if len(worker.held) >= AHEAD:
                    break
                worker.held.append(next_in)
                try:
                    worker.conn.send((next_in, *spans[next_in]))
                except OSError:  # it died between two chunks
                    raise self._died(worker, spans) from None
                next_in += 1
            busy = {w.conn: w for w in self.workers if w.held}
            for conn in wait(list(busy)):
                worker = busy[conn]
                try:
                    chunk = conn.recv()
                except (EOFError, OSError):
                    raise self._died(worker, spans) from None
                worker.held.remove(chunk.number)
                answered[chunk.number] = chunk
            while next_out in answered:
                chunk = answered.pop(next_out)
                emit(chunk)
                if chunk.error is not None:
                    raise _unpack(chunk.error)
                next_out += 1

    def _died(self, worker: _Worker, spans: _Spans) -> WorkerError:
        worker.process.join(1)
        code = worker.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 and
               -code in signal.valid_signals() else f"exited with code {code}")
        first, last = spans[worker.held[0]][0], spans[worker.held[-1]][1] - 1  # held: never empty here
        hint = " (out of memory? the OOM killer sends SIGKILL)" if code == -signal.SIGKILL else ""
        return WorkerError(f"ppl worker {worker.number} (pid {worker.process.pid}) {how}{hint} holding records "
                           f"{first}-{last}")

    def close(self, wait: bool = True) -> None:
        """Stop every worker (idempotent): close its pipe, which ends an idle worker, and with ``wait`` give each a
        moment, then kill it (one still in a ppl call after Ctrl-C or a failure). Without ``wait`` (every chunk
        answered) nothing waits for the exits (~10 ms each for a process holding torch): multiprocessing reaps
        them at the next start or at exit."""
        for worker in self.workers:
            worker.conn.close()
        deadline = time.monotonic() + 0.5
        for worker in self.workers if wait else ():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.workers = []

