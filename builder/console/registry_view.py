"""One `swcli console --registry REGISTRY/NAMESPACE`: its repositories, their tags and digests, what kind of image
each tag names, and the evaluations attached to its model images, read with the daemonless client.

Every request goes through the client ``client_for(registry)`` gives (:mod:`builder.registry.client`: deadlines,
bounded bodies, credentials kept to their origin). What is read is cached: a manifest named by its digest never
changes, so what it says (its kind, and for a swcli image its name, version and image id) is kept for good in a
bounded LRU; the catalog, tag lists, tag digests and referrer lists change, so they are read again once older than
``tag_ttl`` seconds. A read that failed (a registry down, or past its deadline) is not tried again for
:data:`FAIL_TTL` seconds, so a registry that hangs slows one page load, not each one. A registry that refuses
something, or answers it with something that is not one, is one line in :attr:`RegistryView.problems`, never an
exception that hides the other repositories.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections import OrderedDict
from typing import Callable

from builder.errors import SwcliError, UsageError
from builder.refs import image_ref_problem

KINDS = ("model", "dataset", "runtime")  # io.swcli.kind values an image of the store carries (builder.images.build)
MAX_KNOWN = 10_000      # manifests remembered by digest (a few hundred bytes each)
MAX_PROBLEMS = 200      # lines kept per listing: a registry of 10,000 broken tags says so without 10,000 lines
FAIL_TTL = 10.0        # seconds a failed read is remembered (at most the tag_ttl)
FALLBACK_TAG = re.compile(r"sha256-[0-9a-f]{64}")  # a referrers index (builder.registry.referrers), not an image


def split_target(target: str) -> tuple[str, str]:
    """(registry, namespace) of ``REGISTRY/NAMESPACE``; a UsageError naming --registry when it is not one."""
    problem = image_ref_problem(target) if isinstance(target, str) else "not a string"
    registry, _, namespace = str(target).partition("/")
    if problem is None and ("@" in target or ":" in namespace):
        problem = "give a namespace, not an image: no tag or digest"
    if problem is None and not ("." in registry or ":" in registry or registry == "localhost"):
        problem = "the first part must be a registry host (with a '.' or a ':port', or localhost)"
    if problem is None and not namespace:
        problem = "give a namespace after the registry"
    if problem is not None:
        raise UsageError(f"--registry {target!r:.120}: expected REGISTRY/NAMESPACE, e.g. 127.0.0.1:5000/team "
                         f"({problem})")
    return registry, namespace


class _Timed:
    """Values read again once older than ``ttl`` seconds (at most ``bound`` kept). A read that failed is failed
    again, without asking, for ``fail_ttl`` seconds: a registry that is down or hangs costs one deadline, not one
    per page and per request of the page."""

    def __init__(self, ttl: float, bound: int, fail_ttl: float | None = None):
        self.ttl, self.bound, self.items = ttl, bound, OrderedDict()
        self.fail_ttl = min(ttl, FAIL_TTL) if fail_ttl is None else fail_ttl

    def get(self, key, read: Callable[[], object]):
        now = time.monotonic()
        found = self.items.get(key)
        if found is not None and now - found[0] < (self.ttl if found[2] is None else self.fail_ttl):
            if found[2] is not None:
                raise found[2]
            return found[1]
        try:
            value, failed = read(), None
        except SwcliError as err:
            value, failed = None, err
        self.items[key] = (now, value, failed)
        self.items.move_to_end(key)
        while len(self.items) > self.bound:
            self.items.popitem(last=False)
        if failed is not None:
            raise failed
        return value


class RegistryView:
    """See the module docstring. Safe to use from several threads (one listing at a time)."""

    def __init__(self, target: str, client_for, *, tag_ttl: float = 30.0, max_repositories: int = 1000,
                 max_tags: int = 1000):
        self.registry, self.namespace = split_target(target)
        self.target = target
        self._client_for, self._client = client_for, None
        self.max_repositories, self.max_tags = max_repositories, max_tags
        self._lists = _Timed(tag_ttl, 4 * max_repositories + 16)        # the catalog, tag lists
        self._digests = _Timed(tag_ttl, 64 * max_tags + 16)             # (repository, tag) -> digest
        self._referrers = _Timed(tag_ttl, 4 * max_tags + 16)            # (repository, digest) -> attached rows
        self._known: OrderedDict[str, dict] = OrderedDict()              # digest -> what its manifest says
        self._lock = threading.RLock()
        self._problems: list[str] = []
        self._last: list[dict] = []

    @property
    def problems(self) -> list[str]:
        """One line per thing the last listing could not read (escaped by the page that shows them)."""
        return list(self._problems)

    def listing(self) -> dict:
        """One read of the namespace, ``{"repositories", "evaluations", "problems"}``: what `GET /api/registries`
        and the pages show, the repositories read once (not once for the tags and again for the evaluations)."""
        with self._lock:
            evaluations = self.evaluations()
            return {"repositories": list(self._last), "evaluations": evaluations, "problems": self.problems}

    def forget(self) -> None:
        """Read the catalog, tags and referrers again next time (what a manifest says is kept): after this console
        changed the registry, e.g. attached an evaluation, so the next listing shows it at once."""
        with self._lock:
            for timed in (self._lists, self._digests, self._referrers):
                timed.items.clear()

    def client(self):
        if self._client is None:
            self._client = self._client_for(self.registry)
        return self._client

    # --- repositories and tags ----------------------------------------------------------------------------------

    def repositories(self) -> list[dict]:
        """``[{"repository", "tags": [{"tag", "digest", "kind"}]}]`` of the repositories under the namespace,
        sorted; ``kind`` is model, dataset, runtime, modelpack, evaluation or other (None, with a problem line,
        when the tag's manifest could not be read). Referrers index tags (``sha256-<hex>``) are not listed."""
        with self._lock:
            self._problems = []
            found = [{"repository": repo, "tags": self._tags_of(repo)} for repo in self._repository_names()]
            self._last = found
            return found

    def _repository_names(self) -> list[str]:
        try:
            names, more = self._lists.get("catalog", lambda: self.client().catalog(limit=self.max_repositories))
        except SwcliError as err:
            self._problem(f"{self.registry}: the catalog: {err}")
            return []
        if more:
            self._problem(f"{self.registry}: the catalog lists more than {self.max_repositories} repositories; "
                          "only the first are read")
        prefix = self.namespace + "/"
        return sorted(n for n in names if n == self.namespace or n.startswith(prefix))

    def _tags_of(self, repository: str) -> list[dict]:
        try:
            tags, more = self._lists.get(("tags", repository),
                                         lambda: self.client().tags(repository, limit=self.max_tags))
        except SwcliError as err:
            self._problem(f"{self.registry}/{repository}: its tags: {err}")
            return []
        if more:
            self._problem(f"{self.registry}/{repository} has more than {self.max_tags} tags; only the first are read")
        rows = []
        for tag in sorted(t for t in tags if not FALLBACK_TAG.fullmatch(t)):
            try:
                digest = self._digests.get((repository, tag), lambda: self._digest(repository, tag))
                kind = self._about(repository, digest)["kind"] if digest else None
            except SwcliError as err:
                self._problem(f"{self.registry}/{repository}:{tag}: {err}")
                digest, kind = None, None
            if digest is not None:
                rows.append({"tag": tag, "digest": digest, "kind": kind})
        return rows

    def _digest(self, repository: str, tag: str) -> str | None:
        from builder.registry.media import checked_digest

        found = self.client().manifest_descriptor(repository, tag)
        if found is None:
            return None  # deleted between the tag list and now
        return checked_digest(found.get("digest"), f"{self.registry}/{repository}:{tag}: its digest")

    def _about(self, repository: str, digest: str) -> dict:
        """What the manifest ``digest`` says (kept for good: its bytes cannot change)."""
        known = self._known.get(digest)
        if known is None:
            known = self._classify(repository, digest)
            self._known[digest] = known
            while len(self._known) > MAX_KNOWN:
                self._known.popitem(last=False)
        self._known.move_to_end(digest)
        return known

    def _classify(self, repository: str, digest: str) -> dict:
        from builder.bounded import image_config, parse
        from builder.distribute.modelpack_pull import is_modelpack
        from builder.registry.media import INDEX_TYPES, MAX_CONFIG, checked_descriptor
        from builder.runs.attach import ARTIFACT_TYPE

        client, where = self.client(), f"{self.registry}/{repository}@{digest}"
        manifest = client.get_manifest(repository, digest)
        if manifest.media_type in INDEX_TYPES:
            return {"kind": "other"}
        document = parse(manifest.data, where)
        if not isinstance(document, dict):
            return {"kind": "other"}
        if document.get("artifactType") == ARTIFACT_TYPE:
            return {"kind": "evaluation"}
        if is_modelpack(document):
            return {"kind": "modelpack"}
        config = checked_descriptor(document.get("config"), f"{where}: config", max_size=MAX_CONFIG)
        if "image.config" not in config["mediaType"] and "container.image" not in config["mediaType"]:
            return {"kind": "other"}
        buf = io.BytesIO()
        client.fetch_blob(repository, config["digest"], buf, size=config["size"])
        labels, _ = image_config(buf.getvalue(), f"{where}: config {config['digest']}")
        kind = labels.get("io.swcli.kind")
        if kind not in KINDS:
            return {"kind": "other"}
        return {"kind": kind, "name": labels.get("io.swcli.name"), "version": labels.get("io.swcli.version"),
                "image_id": config["digest"]}

    # --- evaluations ----------------------------------------------------------------------------------------------

    def evaluations(self) -> list[dict]:
        """Every evaluation attached to every model image (or ModelPack artifact) tagged under the namespace:
        :func:`builder.runs.attach.listing` rows with ``image`` (``REGISTRY/REPO@digest`` of the model image),
        ``tag`` (its first tag), ``tags`` and ``image_id`` (the row's own ``image`` annotation: the image id the
        run evaluated). Newest first."""
        with self._lock:
            repositories = self.repositories()
            rows = []
            for repo in repositories:
                tags_of: dict[str, list[str]] = {}
                for tag in repo["tags"]:
                    if tag["kind"] in ("model", "modelpack"):
                        tags_of.setdefault(tag["digest"], []).append(tag["tag"])
                for digest, tags in tags_of.items():
                    rows += self._attached(repo["repository"], digest, tags)
            rows.sort(key=lambda r: (str(r.get("created") or ""), str(r.get("digest"))), reverse=True)
            return rows

    def _attached(self, repository: str, digest: str, tags: list[str]) -> list[dict]:
        from builder.runs.attach import attached_rows

        try:
            subject, found = self._referrers.get((repository, digest),
                                                 lambda: attached_rows(self.client(), repository, digest))
        except SwcliError as err:
            self._problem(f"{self.registry}/{repository}@{digest}: its evaluations: {err}")
            return []
        return [{**row, "image_id": row.get("image"), "image": f"{self.registry}/{repository}@{subject}",
                 "tag": tags[0], "tags": list(tags)} for row in found]

    # --- the attach button ------------------------------------------------------------------------------------------

    def model_ref(self, name: object, version: object, image_id: object = None) -> str | None:
        """``REGISTRY/REPO:TAG@digest`` of a model image in the last listing that is the image ``image_id`` (when
        given), else of model ``name`` at ``version``; None when the listing has none."""
        with self._lock:
            for repo in self._last:
                for tag in repo["tags"]:
                    about = self._known.get(tag["digest"]) or {}
                    if about.get("kind") != "model":
                        continue
                    same = (about.get("image_id") == image_id if image_id
                            else (about.get("name"), about.get("version")) == (name, version))
                    if same:
                        return f"{self.registry}/{repo['repository']}:{tag['tag']}@{tag['digest']}"
        return None

    def _problem(self, line: str) -> None:
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(" ".join(line.split()))
        elif len(self._problems) == MAX_PROBLEMS:
            self._problems.append("... more problems not shown")
