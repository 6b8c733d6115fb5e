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
  A worker that dies (the OOM killer, a crash in native code) is one line naming the records it held; its death
  is seen from its process, not its pipe (:mod:`builder.evaluate.runner.ppl_watch`). Ctrl-C: the workers ignore SIGINT
  and are stopped by the evaluating process; if that process is killed, the kernel kills the workers
  (``PR_SET_PDEATHSIG``) and their pipes close.
- Never a hang where one process would finish: a fork copies every lock of the process, held ones included, but
  only the forking thread. So no worker is forked while another Python thread runs (:meth:`WorkerPool._start`;
  a handler that started threads keeps ``auto`` to one process, and an asked-for count is refused before the
  run, :func:`choose_workers`), and a worker that can never move again (a lock held at fork by a thread
  ``threading`` does not list) is seen and stopped (:class:`WorkerStuck`).

Only where it is safe and worth it is the default (``auto``, :func:`choose_workers`): a CPU run on Linux, torch's
threads not set by the user, and enough records; the count is the CPUs this process may use (affinity and cgroup
quota).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from builder.evaluate.runner import metric_worker
from builder.errors import EvalError, UsageError
from builder.evaluate.runner import ppl_watch
from builder.evaluate.runner.cpus import cpu_budget
from builder.evaluate.runner.ppl_watch import Worker, threads_at_fork

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


class WorkerStuck(WorkerError):
    """A ppl worker can never move again (:mod:`builder.evaluate.runner.ppl_watch`); ``why``: what was seen;
    ``resume_at``: the first record not yet written, where one process can take over."""

    def __init__(self, why: str, resume_at: int):
        super().__init__(f"{why}; use --workers 1")
        self.why, self.resume_at = why, resume_at


def _threads_note(names: Sequence[str]) -> str:
    return (f"the handler started threads of its own ({', '.join(names)}): a forked worker would get the locks "
            "they hold, but not the threads, and could wait on one forever")


# ------------------------------------------------------------------------------------------- how many


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")
    with contextlib.suppress(Exception):
        return bool(torch is not None and torch.cuda.is_initialized())
    return False


def choose_workers(requested: int | None, *, device: str | None, threads_decided: bool, records: int,
                   handler_threads: Sequence[str] = (), budget: Callable[[], int] = cpu_budget,
                   warn: Callable[[str], None] | None = None) -> int:
    """How many processes run ``ppl``: ``requested`` when given (checked), else ``auto``.

    ``threads_decided``: the user chose torch's threads (``--threads``, ``OMP_NUM_THREADS``, the handler's own
    ``torch.set_num_threads``); workers would override that with one thread each, so auto keeps one process.
    ``records``: how many records are still to predict. ``handler_threads``: the names of the Python threads the
    handler started (:func:`builder.evaluate.runner.threads.started_since`): an asked-for count is refused, auto keeps
    one process and says so to ``warn`` (default: a warning line on stderr)."""
    on_gpu = (device not in (None, "cpu")) or _cuda_in_use()
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--workers must be >= 1, got {requested}")
        if requested > 1 and on_gpu:
            raise UsageError(f"--workers {requested}: CUDA does not survive fork; a GPU run predicts in one process "
                            "(--workers 1)")
        if requested > 1 and not hasattr(os, "fork"):
            raise UsageError(f"--workers {requested}: this platform cannot fork; use --workers 1")
        if requested > 1 and handler_threads:
            raise UsageError(f"--workers {requested}: {_threads_note(handler_threads)}; use --workers 1")
        return requested
    if on_gpu or threads_decided or records < AUTO_MIN_RECORDS or not sys.platform.startswith("linux"):
        return 1  # (elsewhere fork is missing, or unsafe under system frameworks, and PR_SET_PDEATHSIG is Linux's)
    count = min(budget(), AUTO_MAX_WORKERS)
    if count > 1 and handler_threads:
        (warn or _warn)(f"predicting in one process: {_threads_note(handler_threads)} (docs/runner.md, Workers)")
        return 1
    return count


def _warn(message: str) -> None:
    print(f"swcli: warning: {message}", file=sys.stderr)


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


class WorkerPool:
    """N forked workers predicting chunks of ``reader``'s records; :meth:`run` writes them in order."""

    def __init__(self, count: int, make_phase: Callable[..., Any], reader: Any, size: int):
        self.workers: list[Worker] = []
        self.fallback: Callable[[str], None] | None = None  # set: a stuck worker hands the rest to one process
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

        running = threads_at_fork()  # the one chokepoint: no fork while another thread may hold a lock
        if running:
            raise WorkerError(f"ppl workers not started: threads are running in this process ({', '.join(running)});"
                              " a forked worker would get the locks they hold, but not the threads")
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
                self.workers.append(Worker(number, process, ours))
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
                if not worker.held:
                    worker.moved = time.monotonic()
                worker.held.append(next_in)
                try:
                    worker.conn.send((next_in, *spans[next_in]))
                except OSError:  # it died between two chunks
                    raise self._died(worker, spans) from None
                next_in += 1
            busy = [w.conn for w in self.workers if w.held]
            ready = wait(busy + [w.pidfd for w in self.workers if w.pidfd is not None], timeout=ppl_watch.TICK)
            for worker in self.workers:
                if worker.gone(ready):  # by its process: a child of its own may hold its pipe open (ppl_watch)
                    raise self._died(worker, spans)
                if worker.conn in ready:
                    answered.update(self._answer(worker, spans))
                if worker.stuck(time.monotonic()):
                    raise self._stuck(worker, spans, spans[next_out][0])
            while next_out in answered:
                chunk = answered.pop(next_out)
                emit(chunk)
                if chunk.error is not None:
                    raise _unpack(chunk.error)
                next_out += 1

    def _answer(self, worker: Worker, spans: _Spans) -> dict[int, Chunk]:
        try:
            chunk = worker.conn.recv()
        except (EOFError, OSError):
            raise self._died(worker, spans) from None
        worker.held.remove(chunk.number)
        worker.moved, worker.last_look = time.monotonic(), None
        return {chunk.number: chunk}

    @staticmethod
    def _records(worker: Worker, spans: _Spans) -> str:
        if not worker.held:
            return "holding no records"
        return f"holding records {spans[worker.held[0]][0]}-{spans[worker.held[-1]][1] - 1}"

    def _died(self, worker: Worker, spans: _Spans) -> WorkerError:
        worker.process.join(1)
        code = worker.process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 and
               -code in signal.valid_signals() else f"exited with code {code}")
        hint = " (out of memory? the OOM killer sends SIGKILL)" if code == -signal.SIGKILL else ""
        return WorkerError(f"ppl worker {worker.number} (pid {worker.process.pid}) {how}{hint} "
                           f"{self._records(worker, spans)}")

    def _stuck(self, worker: Worker, spans: _Spans, resume_at: int) -> WorkerStuck:
        return WorkerStuck(f"ppl worker {worker.number} (pid {worker.process.pid}) is stuck "
                           f"{self._records(worker, spans)}: every thread of it waits on a lock that none of them "
                           "can release (held at fork by a thread Python's threading does not list: a native "
                           "library's?)", resume_at)

    def close(self, wait: bool = True) -> None:
        """Stop every worker (idempotent): close its pipe, which ends an idle worker, and with ``wait`` give each a
        moment, then kill it (one still in a ppl call after Ctrl-C or a failure). Without ``wait`` (every chunk
        answered) nothing waits for the exits (~10 ms each for a process holding torch): multiprocessing reaps
        them at the next start or at exit."""
        for worker in self.workers:
            worker.close()
        deadline = time.monotonic() + 0.5
        for worker in self.workers if wait else ():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.workers = []

