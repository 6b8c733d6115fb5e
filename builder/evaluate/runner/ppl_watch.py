"""Watching ppl workers by their processes, not their pipes (:mod:`builder.evaluate.runner.ppl_workers`).

- **Gone.** A worker's death is seen from its process: a pidfd (Linux 5.3+) that the evaluating process waits on
  beside the pipes, and ``waitpid`` at every tick where there is none. A pipe's EOF is not enough: a child the
  handler forked in the worker inherits the worker's end of the pipe and keeps it open after the worker died, for
  as long as that child lives.
- **Stuck.** A worker forked while another thread of the evaluating process held a lock (a thread the handler
  started with ``_thread``, or a native library's, which ``threading`` does not list and the fork check in
  :class:`~builder.evaluate.runner.ppl_workers.WorkerPool` cannot see) has that lock, held by nobody, and waits on it
  forever. Slowness is not the sign: a heavy handler may take minutes per chunk while using no CPU (a remote
  call). The sign is that nothing in the worker can ever run again: **every thread of it is blocked in a
  process-private futex wait with no timeout** (``/proc/PID/task/TID/syscall``), and nothing changed between two
  looks a tick apart (the same waits, the same context-switch counts). Only a thread of the same process can
  wake a private futex, and none is left to; a wait with a timeout, a read on a pipe or socket, a sleep, or a
  futex shared with another process is never taken for stuck.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

TICK = 1.0  # seconds the evaluating process waits for an answer before it looks at the workers' processes
FORK_QUIET = 0.5  # seconds other threads get to end before a fork (a progress bar's, told to stop, takes 0.1)
_FUTEX = {"x86_64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "ppc64le": 221, "s390x": 238}.get(
    os.uname().machine)  # (not platform.machine(): importing platform costs every `swcli model eval` ~10 ms)
_FUTEX_PRIVATE, _FUTEX_CLOCK_REALTIME = 128, 256
_FUTEX_WAITS = {0, 6, 9, 11, 13}  # WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI, LOCK_PI2: arg 4 is the timeout


def pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` ends, or None where there is none."""
    with contextlib.suppress(AttributeError, OSError):
        return os.pidfd_open(pid)
    return None


def look(pid: int) -> tuple | None:
    """What every thread of ``pid`` waits on, when each is in a private futex wait with no timeout (a tuple to
    compare with the next look), else None (a thread can still run, or /proc cannot say)."""
    if _FUTEX is None:
        return None
    seen = []
    try:
        tasks = sorted(os.listdir(f"/proc/{pid}/task"))
        for tid in tasks:
            with open(f"/proc/{pid}/task/{tid}/syscall") as fh:
                fields = fh.read().split()
            if len(fields) < 5 or not fields[0].isdigit() or int(fields[0]) != _FUTEX:
                return None
            address, op, timeout = fields[1], int(fields[2], 16), int(fields[4], 16)
            cmd = op & ~(_FUTEX_PRIVATE | _FUTEX_CLOCK_REALTIME)
            if not op & _FUTEX_PRIVATE or cmd not in _FUTEX_WAITS or timeout != 0:
                return None
            with open(f"/proc/{pid}/task/{tid}/status") as fh:
                switches = tuple(line for line in fh if "ctxt_switches" in line)
            seen.append((tid, address, switches))
    except (OSError, ValueError):
        return None
    return tuple(seen) or None


class Worker:
    """The evaluating process's side of one ppl worker: its process, its pipe, the chunks it holds."""

    def __init__(self, number: int, process: Any, conn: Connection):
        self.number, self.process, self.conn = number, process, conn
        self.held: list[int] = []  # chunk numbers sent and not answered, in order
        self.pidfd = pidfd(process.pid)  # readable once the process ended; None: waitpid every tick
        self.moved = time.monotonic()  # when it last answered, or was given work while idle
        self.looked, self.last_look = 0.0, None  # look: when, and what it saw

    def gone(self, ready: list) -> bool:
        return (self.pidfd in ready) if self.pidfd is not None else self.process.exitcode is not None

    def stuck(self, now: float) -> bool:
        """Two looks a tick apart saw every thread of it waiting on what none of them can release."""
        if not self.held or now - self.moved < TICK or now - self.looked < TICK:
            return False
        seen, self.looked = look(self.process.pid), now
        same, self.last_look = seen is not None and seen == self.last_look, seen
        return same

    def close(self) -> None:
        self.conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def threads_at_fork(quiet: float = FORK_QUIET) -> list[str]:
    """The names of the Python threads other than this one that are still alive after up to ``quiet`` seconds."""
    me, deadline = threading.current_thread(), time.monotonic() + quiet
    while True:
        others = sorted(t.name for t in threading.enumerate() if t is not me and t.is_alive())
        if not others or time.monotonic() >= deadline:
            return others
        time.sleep(0.01)
