"""Blobs between the store and registries, what push, pull and copy share: the sending pool, the known blobs.

Sending one blob (:func:`send_blobs`) is the same whoever sends it: ``HEAD`` (the registry has it: skipped), else
a cross-repository mount from a repository of the same registry known to hold it (:class:`KnownBlobs`:
``$SWCLI_HOME/cache/registry-blobs.json`` remembers ``registry -> {digest: repository}`` as transfers succeed, the
newest 20,000 per registry; a mount is tried only when one is known), else an upload. Several blobs move at once on a
small thread pool, each reporting :class:`LayerProgress`; a :class:`TransferResult` says which were pushed, mounted or
already there. Every registry failure is a one-line :class:`~builder.errors.RegistryError` (exit 5).

Also here, for all three commands: the registry clients they use (:data:`~builder.registry.ClientFor`, injected as ``client_for``;
:func:`registry_clients` by default, with the stored credentials of :mod:`builder.registry.credstore` unless the
command was given some) and the check of an swcli image's labels before a tag or a store path is made of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterable

from builder.errors import RegistryError
from builder.refs import KIND_PREFIX, is_version, name_problem
from builder.files import write_bytes_atomic
from builder.registry import ClientFor
from builder.store import swcli_home

BLOB_WORKERS = 4


@dataclass(frozen=True)
class LayerProgress:
    """One event of a transfer, per blob: ``current``/``total`` bytes while moving, then a final status."""

    layer: str
    status: str
    current: int | None = None
    total: int | None = None


OnProgress = Callable[[LayerProgress], None]
Opener = Callable[[], BinaryIO]


@dataclass
class TransferResult:
    ref: str
    pushed: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    digest: str | None = None


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def registry_clients(*, credentials=None, ca_cert: Path | None = None) -> ClientFor:
    """A :class:`~builder.registry.client.RegistryClient` per registry host, with ``credentials`` (the stored ones
    when none are given) and ``ca_cert``."""

    def client_for(registry: str):
        from builder.registry.client import RegistryClient

        return RegistryClient(registry, credentials=credentials, ca_cert=ca_cert)

    return client_for


def check_labels(what: str, labels: dict) -> tuple[str, str, str]:
    """(kind, name, version) from an image's labels, each checked (builder.refs) before a tag or a store path is
    made from it: a name with '/' or '..', or a version that is not one, is refused in one line."""
    kind, name, version = (labels.get(f"io.swcli.{key}") for key in ("kind", "name", "version"))
    if kind is None and name is None and version is None:
        raise RegistryError(f"{what} carries no swcli labels (io.swcli.kind/name/version); not an swcli image")
    if kind not in KIND_PREFIX:
        raise RegistryError(f"{what}: label io.swcli.kind: {kind!r} is not one of {', '.join(sorted(KIND_PREFIX))}")
    problem = name_problem(name)
    if problem:
        raise RegistryError(f"{what}: label io.swcli.name: {problem}")
    if not is_version(version):
        raise RegistryError(f"{what}: label io.swcli.version: {version!r} is not a version "
                            "(4 to 128 lowercase letters and digits)")
    return kind, name, version


# --- which repository of a registry holds which blob --------------------------------------------------------------

KNOWN_PER_REGISTRY = 20_000  # digests remembered per registry (~2 MB of JSON); the oldest go first


class KnownBlobs:
    """``registry -> {digest: repository}`` learnt from transfers, for cross-repository mounts.

    Read once when a transfer starts; what it learns is merged into the file under an ``flock`` when it ends, so
    concurrent pushes add to it instead of overwriting each other."""

    def __init__(self, registry: str, path: Path | None = None):
        self.registry = registry
        self.path = path or swcli_home() / "cache" / "registry-blobs.json"
        self.known = dict(self._read().get(registry) or {})
        self.learnt: dict[str, str] = {}
        self._lock = threading.Lock()

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}  # missing or damaged: a cache, not a record; mounts are only an optimisation
        return data if isinstance(data, dict) else {}

    def holder(self, digest: str, besides: str) -> str | None:
        """A repository other than ``besides`` known to hold ``digest``."""
        with self._lock:
            repo = self.learnt.get(digest) or self.known.get(digest)
        return repo if isinstance(repo, str) and repo != besides else None

    def learn(self, digest: str, repository: str) -> None:
        with self._lock:
            self.learnt[digest] = repository

    def save(self) -> None:
        if not self.learnt:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            mine = data.get(self.registry) if isinstance(data.get(self.registry), dict) else {}
            # what was just learnt goes last, and only the newest KNOWN_PER_REGISTRY stay: the file stays small
            merged = {digest: repo for digest, repo in mine.items() if digest not in self.learnt}
            merged.update(self.learnt)
            data[self.registry] = dict(list(merged.items())[-KNOWN_PER_REGISTRY:])
            write_bytes_atomic(self.path, json.dumps(data, indent=1).encode())  # in learning order: oldest first


# --- sending blobs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    """A blob to put in a repository. ``source()`` is entered only when it must be uploaded and yields an opener
    (a fresh file object at 0 each call): a push verifies its cached gzip there, a copy fetches into a temp file."""

    digest: str
    size: int
    source: Callable[[], ContextManager[Opener]]
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.digest.partition(":")[2][:12]


def file_source(path: Path) -> Callable[[], ContextManager[Opener]]:
    return lambda: contextlib.nullcontext(lambda: open(path, "rb"))


def _send_one(client, repository: str, item: Blob | Callable[[], Blob], known: KnownBlobs, result: TransferResult,
              report: OnProgress, also_from: str | None) -> None:
    blob = item() if callable(item) else item
    if client.blob_size(repository, blob.digest) is not None:
        report(LayerProgress(blob.name, "Layer already exists"))
        result.existing.append(blob.digest)
        known.learn(blob.digest, repository)
        return
    for source_repo in dict.fromkeys(r for r in (also_from, known.holder(blob.digest, repository)) if r):
        if source_repo != repository and client.mount_blob(repository, blob.digest, source_repo):
            report(LayerProgress(blob.name, f"Mounted from {source_repo}"))
            result.mounted.append(blob.digest)
            known.learn(blob.digest, repository)
            return
    with blob.source() as opener:
        client.upload_blob(repository, blob.digest, blob.size, opener,
                           on_progress=lambda sent: report(LayerProgress(blob.name, "Pushing", sent, blob.size)))
    report(LayerProgress(blob.name, "Pushed", blob.size, blob.size))
    result.pushed.append(blob.digest)
    known.learn(blob.digest, repository)


def send_blobs(client, repository: str, blobs: Iterable[Blob | Callable[[], Blob]], result: TransferResult,
               known: KnownBlobs, *, on_progress: OnProgress | None = None, also_from: str | None = None) -> None:
    """Put every blob in ``repository`` (skipped, mounted or uploaded), several at once; the first failure is
    raised once the blobs already moving have finished, and no new one starts after it. A callable item makes
    its blob on the worker thread first (a push compresses a layer there, so compressing overlaps uploading)."""
    lock = threading.Lock()

    def report(event: LayerProgress) -> None:
        if on_progress:
            with lock:
                on_progress(event)

    unique = list({b if callable(b) else b.digest: b for b in blobs}.values())
    pool = ThreadPoolExecutor(max_workers=BLOB_WORKERS, thread_name_prefix="blob")
    try:
        futures = [pool.submit(_send_one, client, repository, b, known, result, report, also_from) for b in unique]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f.exception() for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            raise failed
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        known.save()
