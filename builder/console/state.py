"""What one console process holds: the store, its caches, the registries it reads and the jobs it started."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from builder.console.jobs import JobManager
from builder.console.runs_index import RunIndex
from builder.console.security import Secrets
from builder.errors import RefNotFoundError, RegistryError, SwcliError
from builder.files import stat_key
from builder.runs.folder import METRICS, RUN
from builder.runs.history import Run, resolve_run, run_id_problem
from builder.runs.schema import RunError
from builder.store import Store


MAX_LOADED = 64  # runs kept loaded by Console.run


class NotFound(SwcliError):
    """A run, job or record the request names does not exist (HTTP 404)."""


def status_of(err: Exception) -> int:
    """The HTTP status of an error, for the API and the pages alike."""
    if isinstance(err, (NotFound, RefNotFoundError)):
        return 404
    if isinstance(err, RegistryError):
        return 502
    return 400 if isinstance(err, SwcliError) else 500


@dataclass
class Console:
    store: Store
    secrets: Secrets
    client_for: Any = None  # registry host -> client (builder.registry.ClientFor); None: the stored credentials
    registries: list = field(default_factory=list)  # builder.console.registry_view.RegistryView, one per --registry
    runs: RunIndex = None  # type: ignore[assignment]
    jobs: JobManager = None  # type: ignore[assignment]
    records: Any = None  # builder.console.records.RecordCache
    thumbs: Any = None  # builder.console.thumbs.Thumbnails
    lock: threading.Lock = field(default_factory=threading.Lock)
    api_paths: dict = field(default_factory=dict)  # the OpenAPI paths, for the /api page (set by app.build_app)
    loaded: dict = field(default_factory=dict)  # run id -> (stats, Run): Console.run's cache

    def __post_init__(self) -> None:
        from builder.console.records import RecordCache
        from builder.console.thumbs import Thumbnails

        self.runs = self.runs or RunIndex(self.store)
        self.jobs = self.jobs or JobManager(self.store, record_count=self.record_count)
        self.records = self.records or RecordCache()
        self.thumbs = self.thumbs or Thumbnails(self.store)

    def clients(self):
        if self.client_for is None:
            from builder.runs.attach import default_client

            self.client_for = default_client()
        return self.client_for

    def run(self, run_id: str) -> Run:
        """A run of the history by its full id (no prefixes, no paths: a request never names a file). Kept while its
        folder, run.json and metrics.json keep their stat: a page of 200 thumbnails reads them once, not 200 times."""
        if run_id_problem(run_id) or run_id in ("latest",):
            raise NotFound(f"no run '{run_id[:80]}'")
        folder = self.store.runs_dir / run_id
        # the folder through its link (runs/ links to outside folders): a link pointed elsewhere has another inode
        key = tuple(stat_key(p) for p in (folder, folder / RUN, folder / METRICS))
        with self.lock:
            cached = self.loaded.get(run_id)
        if cached is not None and cached[0] == key and key[1] is not None:
            return cached[1]
        if key[0] is None and not folder.is_symlink():
            raise NotFound(f"no run '{run_id}' in the history")
        try:
            run = resolve_run(run_id, self.store)
        except RunError as err:
            raise NotFound(str(err)) from None
        if run.id != run_id:
            raise NotFound(f"no run '{run_id}' in the history")
        with self.lock:
            if len(self.loaded) >= MAX_LOADED:
                self.loaded.pop(next(iter(self.loaded)))
            self.loaded[run_id] = (key, run)
        return run

    def record_count(self, dataset: str) -> int | None:
        """The records of a store dataset (a job's total); None for a registry ref or an unknown one."""
        try:
            count = self.store.resolve("dataset", dataset).manifest.get("records")
        except SwcliError:
            return None
        return count if isinstance(count, int) else None
