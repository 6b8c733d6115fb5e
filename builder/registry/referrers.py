"""Artifacts that refer to an image (evaluations, SBOMs): the referrers API, and the spec's tag fallback.

OCI distribution-spec 1.1 lets a manifest name a ``subject`` (the image it is about). A registry with the referrers
API indexes such manifests itself and lists them at ``GET /v2/<name>/referrers/<digest>``; it says so by answering
the manifest ``PUT`` with an ``OCI-Subject`` header, or that ``GET`` with 200 and an index. A registry without it
(docker-registry 2.8, Docker Hub, GHCR today) answers 404 there; then the client keeps the list itself in an image
index tagged ``sha256-<hex of the subject>`` (the "Referrers Tag Schema"), by read-modify-write.

That read-modify-write is idempotent (a descriptor already listed is not added again) but not atomic: two writers
adding different referrers to the same subject at the same moment can each read the old index, and the second
``PUT`` drops the first one's entry. docker-registry has no conditional ``PUT`` (``If-Match``) to prevent it, as the
spec acknowledges. That is no corner case: the N pods of `job k8s --parts registry` finish together, and 8
writers at once left 2 or 3 entries of 8 (measured against docker-registry 2.8). So every writer checks its own
entry after a settle time (four times its own read-modify-write, at least 0.5 s, jittered) and puts it back when
another writer dropped it, until it is still there after a settle time. docker-registry may also answer 500 to a
tag ``PUT`` that races another: that costs a round too, not the put. A writer that read the index before our
``PUT`` has written by then (its read-modify-write is about as long as ours), so an entry seen then stays.

Every function takes the :class:`~builder.registry.client.RegistryClient` it works through as ``client`` (the client
calls them from its ``referrers`` and ``put_referrer``; this module does not import it back).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from urllib.parse import urlencode

from builder.errors import RegistryError
from builder.registry.media import MAX_MANIFEST, MEDIA_OCI_INDEX, checked_descriptor, checked_list, checked_object
from builder.registry.session import api_path
from builder.registry.transport import TransferError

MAX_ROUNDS = 30  # read-modify-writes of the fallback index one put may make before it gives up
MIN_SETTLE = 0.5  # seconds a writer waits before it looks whether its entry stayed
MAX_REFERRERS = 10_000  # descriptors in one list: ~2 MB of JSON, far more artifacts than one image gets
DESCRIPTOR_KEYS = ("mediaType", "digest", "size", "artifactType", "annotations")


def fallback_tag(digest: str) -> str:
    """``sha256:<hex>`` -> ``sha256-<hex>``: the tag of the index listing the referrers of ``digest``."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}"[:128]


def _descriptors(client, index: bytes, where: str, artifact_type: str | None = None) -> list[dict]:
    """The descriptors an image index of referrers lists, each checked (media.checked_descriptor: a string where
    an object belongs, a size that is no number... is one line, exit 5) and cut to :data:`DESCRIPTOR_KEYS`. With
    ``artifact_type``, only entries of that type are kept and checked: another tool's referrer, however malformed,
    does not break ours (every entry must still be an object)."""
    what = f"registry {client.registry}: {where}"
    try:
        document = json.loads(index)
    except (ValueError, RecursionError):
        raise RegistryError(f"{what} is not an image index of referrers (not JSON)") from None
    manifests = checked_list(checked_object(document, what).get("manifests", []), f"{what}: manifests")
    if len(manifests) > MAX_REFERRERS:
        raise RegistryError(f"{what} lists {len(manifests)} referrers, more than the {MAX_REFERRERS} swcli reads")
    kept = []
    for i, entry in enumerate(manifests):
        if artifact_type is None or checked_object(entry, f"{what}: manifests[{i}]").get("artifactType") == artifact_type:
            kept.append(checked_descriptor(entry, f"{what}: manifests[{i}]", max_size=MAX_MANIFEST))
    return [{k: m[k] for k in DESCRIPTOR_KEYS if k in m} for m in kept]


def _api_listing(client, repository: str, digest: str, artifact_type: str | None) -> list[dict] | None:
    """The referrers API's answer, or None when the registry has no such API (404 there)."""
    query = f"?{urlencode({'artifactType': artifact_type})}" if artifact_type else ""
    path = api_path(repository, "referrers", digest) + query
    what = f"referrers of {digest} in {client.registry}/{repository}"
    response = client._request("GET", path, scopes=client._scopes(repository), what=what, expect=(200, 404),
                               headers={"Accept": MEDIA_OCI_INDEX}, limit=MAX_MANIFEST)
    if response.status_code == 404:
        return None
    if response.truncated:
        raise RegistryError(f"registry {client.registry}: {what}: the list is larger than {MAX_MANIFEST >> 20} MiB")
    return _descriptors(client, response.body, what, artifact_type)


def has_api(client, repository: str, digest: str) -> bool:
    known = client._referrers_api.get(repository)
    if known is None:
        known = _api_listing(client, repository, digest, None) is not None
        client._referrers_api[repository] = known
    return known


def referrers(client, repository: str, digest: str, artifact_type: str | None = None) -> list[dict]:
    found = _api_listing(client, repository, digest, artifact_type) if client._referrers_api.get(repository,
                                                                                                   True) else None
    if found is None:
        client._referrers_api[repository] = False
        tag = fallback_tag(digest)
        if client.manifest_descriptor(repository, tag) is None:
            return []
        found = _descriptors(client, client.get_manifest(repository, tag).data, f"referrers index {tag} of {repository}",
                             artifact_type)
    # a registry may ignore the artifactType filter (it says so in OCI-Filters-Applied): filter here either way
    return [d for d in found if artifact_type is None or d.get("artifactType") == artifact_type]


def put_referrer(client, repository: str, data: bytes, media_type: str) -> str:
    try:
        document = json.loads(data)
        subject = document["subject"]["digest"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"an artifact for {client.registry}/{repository} must be a JSON manifest with a "
                            "subject digest") from None
    digest = client.put_manifest(repository, "sha256:" + hashlib.sha256(data).hexdigest(), data, media_type)
    if has_api(client, repository, subject):
        return digest
    descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
    artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if document.get("annotations"):
        descriptor["annotations"] = document["annotations"]
    tag = fallback_tag(subject)
    failed: TransferError | None = None
    for _ in range(MAX_ROUNDS):
        started = time.monotonic()
        try:
            if _listed(client, repository, tag, descriptor, add=True):
                return digest  # already listed: putting the same artifact twice lists it once
        except TransferError as err:  # docker-registry answers 500 to tag PUTs that race: one more round
            failed = err
        settle = max(MIN_SETTLE, 4 * (time.monotonic() - started))
        time.sleep(settle * random.uniform(0.5, 1.5))
        try:
            if _listed(client, repository, tag, descriptor, add=False):
                return digest
        except TransferError as err:
            failed = err
    if failed is not None:
        raise failed
    raise RegistryError(f"registry {client.registry}: {digest} could not stay listed in the referrers index {tag} "
                        f"of {repository} ({MAX_ROUNDS} tries; other writers kept replacing it)")


def _listed(client, repository: str, tag: str, descriptor: dict, *, add: bool) -> bool:
    """Whether the fallback index ``tag`` lists ``descriptor``; when it does not and ``add``, one read-modify-write
    adds it (still False: another writer may drop it again, so look later)."""
    digest = descriptor["digest"]
    if client.manifest_descriptor(repository, tag) is None:
        index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": []}
    else:
        data = client.get_manifest(repository, tag).data
        _descriptors(client, data, f"referrers index {tag} of {repository}")  # checked: an object with a list
        index = json.loads(data)
        index.setdefault("manifests", [])
    if any(m.get("digest") == digest for m in index["manifests"]):
        return True
    if not add:
        return False
    index["manifests"].append(descriptor)
    client.put_manifest(repository, tag, json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
                        MEDIA_OCI_INDEX)
    return False
