"""Progress display for long work: a rich bar on a terminal, nothing when output is piped or captured."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


class _BarUpdate:
    """``update(done)`` for a rich bar, and :meth:`paused`: the bar's refresh thread stopped for a block, so that a
    process forked there (``model eval --workers``) copies no lock that thread holds, nor its redirected stdout."""

    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def __call__(self, done: int) -> None:
        self.bar.update(self.task, completed=done)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()


@contextlib.contextmanager
def record_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``update(done)``; services call it every few hundred records, never per record."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if total:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        yield _BarUpdate(bar, bar.add_task(description, total=total))


LAYER_DONE = {"Pushed", "Layer already exists", "Pull complete", "Already exists"}


def layer_done(status: str) -> bool:
    return status in LAYER_DONE or status.startswith("Mounted from ")


@contextlib.contextmanager
def layer_progress(description: str) -> Iterator[Callable]:
    """Yield ``on_progress(LayerProgress)`` for a push, pull or copy: one byte bar per blob on a terminal, else one
    line per finished blob on stderr (what a CI log wants)."""
    if not sys.stderr.isatty():

        def log_done(event) -> None:
            if layer_done(event.status):
                print(f"{event.layer}: {event.status}", file=sys.stderr)

        yield log_done
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  transient=True) as bar:
        tasks: dict[str, object] = {}

        def show(event) -> None:
            if event.layer not in tasks:
                tasks[event.layer] = bar.add_task(f"{description} {event.layer}", total=event.total)
            task = tasks[event.layer]
            if event.total:
                bar.update(task, completed=event.current or 0, total=event.total)
            if layer_done(event.status):
                total = event.total or 1
                bar.update(task, description=f"{event.layer}: {event.status}", completed=total, total=total)

        yield show
