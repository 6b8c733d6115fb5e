"""Progress display for long work: a rich bar on a terminal, nothing when output is piped or captured."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


class _Lines:
    """Piped or captured: no record counts; each long step is one line on stderr, as it starts (what a CI log wants)."""

    def __call__(self, done: int) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def step(self, message: str) -> None:
        print(f"{message}...", file=sys.stderr, flush=True)


class _BarUpdate:
    """``update(done)`` for a rich bar, ``set_total`` once the count is known, ``step(message)`` for a long step of
    unknown length (a spinner line naming it), and :meth:`paused`: the bar's refresh thread stopped for a block, so
    that a process forked there (``model eval --workers``) copies no lock that thread holds, nor its redirected
    stdout."""

    def __init__(self, bar, task):
        self.bar, self.task = bar, task

    def __call__(self, done: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done)

    def set_total(self, total: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, total=total)

    def step(self, message: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, visible=False)
        self.task = self.bar.add_task(message, total=None, step=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.bar.stop()
        try:
            yield
        finally:
            self.bar.start()


def _columns() -> list:
    from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RecordsOnly(ProgressColumn):
        """A column shown for counted records only, blank on a step's line."""

        def __init__(self, column: ProgressColumn):
            self.column = column
            super().__init__()

        def render(self, task):
            return Text("") if task.fields.get("step") else self.column.render(task)

    return [SpinnerColumn(), TextColumn("{task.description}"), RecordsOnly(BarColumn()),
            RecordsOnly(MofNCompleteColumn()), TimeElapsedColumn(), RecordsOnly(TimeRemainingColumn())]


@contextlib.contextmanager
def record_progress(description: str, total: int | None = None, *, tty: bool | None = None) -> Iterator[_BarUpdate | _Lines]:
    """Yield ``update(done)`` (with ``set_total`` and ``step``); services call it every few hundred records, never per
    record. On a terminal a rich bar, else :class:`_Lines`."""
    if not (sys.stderr.isatty() if tty is None else tty):
        yield _Lines()
        return
    from rich.progress import Progress

    with Progress(*_columns(), transient=True) as bar:
        yield _BarUpdate(bar, bar.add_task(description, total=total))


@contextlib.contextmanager
def step_progress(*, tty: bool | None = None) -> Iterator[Callable[[str], None]]:
    """Yield ``on_step(message)`` for the long steps of a build: on a terminal a spinner line naming the step and
    its time, else one line on stderr as each starts."""
    if not (sys.stderr.isatty() if tty is None else tty):
        yield _Lines().step
        return
    from rich.progress import Progress

    with Progress(*_columns(), transient=True) as bar:
        yield _BarUpdate(bar, None).step


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
