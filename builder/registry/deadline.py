"""A deadline for every exchange with a registry, not only a timeout between two bytes.

A socket timeout restarts with every byte, so a peer that sends one byte every few seconds (in its headers, its
TLS handshake or its body) would hold a request forever. Every exchange (connect, TLS, request body, headers, body)
therefore runs under a :class:`Watch`: it must finish within ``grace`` seconds (the registry timeout) plus the time
its bytes take at ``rate`` bytes per second (:data:`MIN_RATE`, ``$SWCLI_REGISTRY_MIN_RATE``), counted as they move:

    cut when  now > start + grace + (bytes moved + slack) / rate

``slack`` is the piece being read or sent right now (counted only once it is whole). A small answer gets about
``grace`` seconds; a blob keeps going as long as it averages ``rate`` or better; a peer dripping a byte a second is
cut after about ``grace`` seconds, whatever it claims to send.

Cutting is done by one watchdog thread: it shuts the connection's socket down, so the blocked read returns at once
and the caller, seeing :attr:`Watch.expired`, says the registry was too slow. The connections learn which watch they
serve from the thread that uses them (:func:`attach`, called by :mod:`builder.registry.transport`'s connection
classes whenever one connects or sends a request), and a thread's sessions are its own, so a watch never cuts a
connection another request is using.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

from builder.registry.hosts import MIN_RATE  # noqa: F401  (bytes/s; $SWCLI_REGISTRY_MIN_RATE)
RECUT = 0.2          # seconds: an expired watch shuts its sockets again this often (a connect may have raced it)


class Watch:
    """The deadline of one exchange; see the module docstring."""

    def __init__(self, grace: float, rate: float, slack: int):
        self.start = time.monotonic()
        self.grace, self.rate, self.slack = grace, rate, slack
        self.done = 0
        self.expired = False
        self.connections: list = []

    def deadline(self) -> float:
        return self.start + self.grace + (self.done + self.slack) / self.rate

    def progress(self, count: int) -> None:
        """``count`` more bytes moved (read, or sent and handed to the kernel)."""
        self.done += count

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class _Watchdog:
    def __init__(self):
        self._cond = threading.Condition()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    def current(self) -> Watch | None:
        return getattr(self._local, "watch", None)

    @contextlib.contextmanager
    def watching(self, watch: Watch) -> Iterator[Watch]:
        """Run the block under ``watch``: connections this thread uses meanwhile are cut when it expires."""
        outer = self.current()
        self._local.watch = watch
        with self._cond:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="registry-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield watch
        finally:
            with self._cond:
                self._watches.discard(watch)
                watch.connections.clear()
                self._cond.notify()  # the last watch gone: the thread ends (see _run)
            self._local.watch = outer

    def attach(self, connection) -> None:
        watch = self.current()
        if watch is None:
            return
        with self._cond:
            if watch in self._watches and connection not in watch.connections:
                watch.connections.append(connection)
                if watch.expired:
                    _cut(connection)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._watches:  # nothing to watch: end, so no idle thread outlives the exchanges (a later
                    self._thread = None  # fork of ppl workers refuses to run beside other threads); the next
                    return               # watch starts a new one
                now, wake = time.monotonic(), None
                for watch in self._watches:
                    when = watch.deadline()
                    if watch.expired or now >= when:
                        watch.expired = True
                        for connection in watch.connections:
                            _cut(connection)
                        when = now + RECUT
                    wake = when if wake is None else min(wake, when)
                self._cond.wait(None if wake is None else max(0.01, wake - now))


def _cut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
watching = _WATCHDOG.watching
attach = _WATCHDOG.attach
current = _WATCHDOG.current
