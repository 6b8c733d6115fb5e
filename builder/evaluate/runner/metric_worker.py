"""Score ``@multi_classification`` in a helper process that imported scikit-learn while the model computed.

Importing scikit-learn (and the SciPy it pulls in) costs about 1.5 s of CPU, nearly all of it holding the GIL.
Done in a thread of the evaluating process, it steals the GIL from ``ppl`` every time torch releases it, so the
model runs that much slower (the import is paid anyway, just spread out). Done in a helper process, it runs on a
spare core at no cost to ``ppl``, and ``cmp`` finds the library ready.

Parent side (:class:`MetricWorker`): the runner starts one before the ppl phase of a run that will score and,
while it is :func:`active`, :func:`builder.api.metric.multi_classification` sends it the predictions (pickled over
a pipe) instead of computing in-process: this module offers the decorator the active helper's
:meth:`MetricWorker.compute` (:func:`builder.api.metric.compute_elsewhere`) when it is loaded. The SDK never
imports the runner. Any failure of the helper (it could not import scikit-learn, it died, the values do not
pickle, an exception of its own) makes :meth:`MetricWorker.compute` return None and the decorator computes
in-process as before, so what is raised, and the metrics, are exactly those of the in-process path. Only an
:class:`~builder.errors.EvalError` (a malformed probability row, mismatched lengths) is raised from the helper's
message, since the in-process path would raise the same one.

Child side (``python -m builder.evaluate.runner.metric_worker``): import, then answer requests until stdin closes.
It ignores Ctrl-C (the parent handles it and closes the pipe) and dies with its parent: stdin reaching EOF ends it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from builder.api.metric import Compute, compute_elsewhere
from builder.errors import EvalError

STOP_TIMEOUT = 0.2  # seconds a closed helper gets to exit: an idle one leaves at once, one still importing is killed
# the helper runs from the folder holding this package: it imports this builder, and no folder of the user's
# (the current one, which ``-m`` puts first on sys.path) can shadow scikit-learn or builder
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


class MetricWorker:
    """A helper process that imports ``modules`` at once and then computes metrics documents on request."""

    def __init__(self, modules: Sequence[str]):
        self.modules = tuple(modules)
        self.proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-m", __name__, *modules],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # its failures are recomputed in-process and reported from there
            cwd=PACKAGE_ROOT,
        )

    def compute(self, y_true: Any, y_pred: Any, y_pr: Any, options: dict) -> dict | None:
        """The metrics document from the helper, or None when the caller must compute it in-process."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            payload = pickle.dumps((list(y_true), list(y_pred), None if y_pr is None else list(y_pr), options),
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - values that do not pickle: the in-process path takes them as they are
            return None
        try:
            proc.stdin.write(len(payload).to_bytes(8, "big") + payload)
            proc.stdin.flush()
            kind, value = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError):
            self.close()
            return None
        if kind == "ok":
            return value
        if kind == "eval-error":
            raise EvalError(value)
        return None  # anything else it met: the in-process path raises it, with its own type and message

    def close(self) -> None:
        """Stop the helper (idempotent); it exits when its stdin closes, or is killed after STOP_TIMEOUT."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()


_ACTIVE: MetricWorker | None = None
_FORGOTTEN: list[MetricWorker] = []  # helpers a forked child let go of (forget_in_child)


def active() -> MetricWorker | None:
    """The helper the runner started for this run, if any."""
    return _ACTIVE


def _active_compute() -> Compute | None:
    """Where ``@multi_classification`` computes now: in the active helper, or (None) in this process."""
    return None if _ACTIVE is None else _ACTIVE.compute


compute_elsewhere(_active_compute)  # the runner's decision, made once this module is loaded


@contextlib.contextmanager
def scoring_helper(modules: Sequence[str]) -> Iterator[MetricWorker | None]:
    """Start a helper importing ``modules`` for the duration of the block; ``@multi_classification`` uses it while
    it is active. None when there is nothing to import: no modules, all of them imported here already (a handler
    that imports scikit-learn itself, a test session), or the helper cannot start. A helper already active that
    imports them all (one started before the handler loaded) is used as it is, and left to its own block."""
    global _ACTIVE
    names = [m for m in modules if isinstance(m, str) and m not in sys.modules]
    if names and _ACTIVE is not None and _ACTIVE.proc is not None and set(names) <= set(_ACTIVE.modules):
        yield _ACTIVE
        return
    worker = None
    if names:
        with contextlib.suppress(OSError):
            worker = MetricWorker(names)
    previous, _ACTIVE = _ACTIVE, worker
    try:
        yield worker
    finally:
        _ACTIVE = previous
        if worker is not None:
            worker.close()


def forget_in_child() -> None:
    """In a process forked from the one that started the helper (a ppl worker): close this copy of the helper's
    pipes, so the helper still sees its stdin close when its owner closes it, and forget it here."""
    global _ACTIVE
    worker, _ACTIVE = _ACTIVE, None
    if worker is not None and worker.proc is not None:
        for stream in (worker.proc.stdin, worker.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                os.close(stream.fileno())  # not stream.close(): nothing of the owner's may be flushed from here
        _FORGOTTEN.append(worker)  # kept: its file objects must not be finalized over the closed descriptors


def _read_request(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def _serve(modules: Sequence[str]) -> int:
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our stdin
    with contextlib.suppress(OSError):
        os.nice(19)  # only cycles nobody else wants: never a core torch's threads are using (they wait at barriers)
    replies = os.fdopen(os.dup(1), "wb")  # the protocol's own copy of stdout: whatever an import prints to
    os.dup2(2, 1)                         # stdout goes where stderr goes (nowhere) instead of into a reply
    for name in modules:
        importlib.import_module(name)  # an ImportError ends us: the parent computes in-process and reports it
    from builder.api.metric import compute_multi_classification

    with contextlib.suppress(Exception):  # the first call of scikit-learn's metrics loads more (~70 ms): now
        compute_multi_classification([0, 1, 1], [0, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], all_labels=[0, 1])
    stdin, stdout = sys.stdin.buffer, replies
    while True:
        request = _read_request(stdin)
        if request is None:
            # nothing left to flush or clean: skip the interpreter's teardown of SciPy (~0.3 s the runner would
            # otherwise wait for in close())
            os._exit(0)
        y_true, y_pred, y_pr, options = request
        try:
            reply: tuple = ("ok", compute_multi_classification(y_true, y_pred, y_pr, **options))
        except EvalError as err:
            reply = ("eval-error", err.message)
        except Exception as err:  # noqa: BLE001 - the parent recomputes in-process and raises it there
            reply = ("error", f"{type(err).__name__}: {err}")
        pickle.dump(reply, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
