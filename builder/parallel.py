"""Several calls at once on a small thread pool, their results in order; the first failure cancels the rest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def in_order(calls: list[Callable[[], T]], workers: int, name: str) -> list[T]:
    """Run ``calls`` on up to ``workers`` threads (named ``name``); their results in the calls' order. The first
    exception is raised once the calls already running end; calls not started yet are cancelled."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
