"""How many threads torch's intra-op pool gets during a run (``swcli model eval --threads``).

By default torch gives every ``ppl`` call a pool as wide as the machine, and its OpenMP threads spin between
calls. For a handler that predicts one record per call that buys nothing: the tensors are too small to split
(the seed's CIFAR net: 2.95 s per 10,000 calls with one thread, 3.1 s with two, on 2 cores) and the spinning
threads take the cores the runner's own work needs: the read-ahead thread and the helper process importing
scikit-learn for ``cmp`` (:mod:`builder.evaluate.runner.metric_worker`). With that helper and a two-thread pool the same
10,000 calls take 4.2 s; with one thread, 3.2 s.

So the default (``auto``) is:
- a one-record handler (``batch_size`` 1): torch's pool less one thread, at least one (on 2 cores: one thread),
  so one core stays free for the runner without starving a heavy per-record model on a big machine;
- a batching handler: torch's own choice (a batched forward is big enough to split);
- either way, what the user decided stands: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment, or a
  handler whose ``__init__`` called ``torch.set_num_threads``.

``--threads N`` sets N; ``--threads 0`` leaves torch's default. Only torch is touched, and only when the handler
imported it. The number used is recorded in run.json (``threads``); it changes speed, not results (the seed's
net gives byte-identical results.jsonl with 1 and 2 threads).
"""

from __future__ import annotations

import os
import sys
import threading

from builder.errors import UsageError

USER_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def torch_threads() -> int | None:
    """torch's intra-op thread count now, or None when no code imported torch."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def user_decided(before_handler: int | None) -> bool:
    """The user chose torch's thread count: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, or a handler whose
    ``__init__`` changed it from ``before_handler`` (:func:`torch_threads` before the handler was made)."""
    current = torch_threads()
    return any(os.environ.get(name) for name in USER_SETTINGS) or (
        before_handler is not None and current is not None and current != before_handler)


def apply_threads(requested: int | None, *, batching: bool, before_handler: int | None) -> int | None:
    """Set torch's intra-op threads for the run; return the count in force (None without torch).

    ``requested``: None for auto, 0 for torch's default, N > 0 for N. ``before_handler``: :func:`torch_threads`
    before the handler was constructed, to tell a handler's own ``torch.set_num_threads`` from the default.
    """
    if requested is not None and requested < 0:
        raise UsageError(f"--threads must be >= 0 (0: torch's default), got {requested}")
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    current = int(torch.get_num_threads())
    if requested is None:
        if batching or user_decided(before_handler):
            return current
        requested = max(1, current - 1)
    if requested and requested != current:
        torch.set_num_threads(requested)
    return int(torch.get_num_threads())


def restore_threads(count: int | None) -> None:
    """Put torch's intra-op threads back to ``count`` (what :func:`torch_threads` said before the run), so a
    process that evaluates again (a notebook, a test session) does not start from this run's choice."""
    torch = sys.modules.get("torch")
    if torch is not None and count and int(torch.get_num_threads()) != count:
        torch.set_num_threads(count)


# ------------------------------------------------------------------------- threads of the handler's own


def python_threads() -> set[int]:
    """The idents of this process's live Python threads, to compare with :func:`started_since` later."""
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def started_since(before: set[int]) -> list[str]:
    """The names of the live Python threads that were not in ``before`` (:func:`python_threads`): the ones the
    handler's module or ``__init__`` started. Forked ppl workers would get the locks those threads hold, but not
    the threads (builder.evaluate.runner.ppl_workers)."""
    return sorted(t.name for t in threading.enumerate() if t.ident not in before and t.is_alive())
