"""A daemonless client of one registry (OCI distribution-spec 1.1): blobs, manifests, and referrers.

Every call names the repository it works on; auth scopes follow from it (``repository:<name>:pull`` to read,
``pull,push`` to write, plus ``pull`` on the source of a cross-repository mount). Blobs stream from and to file
objects and are hashed on the way; nothing holds a layer in memory. One client may be used by several threads
at once (the transport keeps a session per thread; tokens are shared).

The requests themselves (auth, retries after a challenge, one-line failures) are :mod:`builder.registry.session`'s;
an upload's protocol is :mod:`builder.registry.upload`'s, and the referrers' tag fallback
:mod:`builder.registry.referrers`'.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import urlencode, urljoin, urlsplit

from builder.errors import RegistryError
from builder.files import QueuedHasher
from builder.registry import referrers, upload
from builder.registry.credstore import Credentials
from builder.registry.media import DIGEST_RE, MANIFEST_TYPES, MAX_CONFIG, MAX_MANIFEST, MEDIA_OCI_MANIFEST
from builder.registry.session import REPOSITORY_RE, TAG_RE, Session, api_path, content_length
from builder.registry.transport import BIG_PIECE, origin, shown

READ_CHUNK = BIG_PIECE        # bytes read at a time; the transfer deadline grants time for one piece

OnProgress = Callable[[int], None]
MAX_LISTING_PAGE = 4 << 20  # bytes of one page of the catalog or a tag list: like a manifest (media.MAX_MANIFEST)
LISTING_PAGE = 100          # names asked for per page (`n=`); distribution/registry's default
_NEXT_RE = re.compile(r'<([^<>]*)>\s*;[^,]*rel="?next"?')


@dataclass(frozen=True)
class Manifest:
    data: bytes       # the exact bytes (digest = sha256(data))
    media_type: str
    digest: str


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient(Session):
    """One registry, as ``registry`` (``host[:port]``) names it. See the module docstring."""

    def __init__(self, registry: str, *, credentials: Credentials | None = None, ca_cert: Path | None = None,
                 timeout: float | None = None):
        super().__init__(registry, credentials=credentials, ca_cert=ca_cert, timeout=timeout)
        self._referrers_api: dict[str, bool] = {}  # repository -> whether the registry has the referrers API

    # --- registry --------------------------------------------------------------------------------------------

    def ping(self, repository: str | None = None) -> None:
        """``GET /v2/`` with auth (scoped to ``repository`` when given): what ``swcli login`` checks."""
        scopes = self._scopes(repository) if repository else ()
        self._request("GET", "/v2/", scopes=scopes, what="the API check (GET /v2/)", expect=(200,)).close()

    # --- blobs -----------------------------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of ``digest`` in ``repository`` (HEAD), or None when the registry does not have it there."""
        response = self._request("HEAD", api_path(repository, "blobs", digest), scopes=self._scopes(repository),
                                 what=f"blob {digest} of {self._where(repository)}", expect=(200, 404))
        response.close()
        if response.status_code == 404:
            return None
        return content_length(response, f"registry {self.registry}: blob {digest} of {self._where(repository)}")

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-mount ``digest`` from another repository of the same registry; False when the registry would not."""
        what = f"mount of blob {digest} from {from_repository} into {self._where(repository)}"
        response = self._request("POST", api_path(repository, "blobs") + "uploads/?" + urlencode(
            {"mount": digest, "from": from_repository}), scopes=self._scopes(repository, "pull,push", from_repository),
            what=what, expect=(201, 202))
        response.close()
        if response.status_code == 202 and response.headers.get("Location"):  # it opened an upload instead: drop it
            self._request("DELETE", self._location(response.headers["Location"], self._transport.base + "/", what),
                          scopes=self._scopes(repository, "pull,push"),
                          what=what, expect=(204, 404)).close()
        return response.status_code == 201

    def upload_blob(self, repository: str, digest: str, size: int, opener: Callable[[], BinaryIO], *,
                    on_progress: OnProgress | None = None) -> None:
        """Upload ``size`` bytes that hash to ``digest``; ``opener()`` gives them from the start, again on retries.
        One ``PUT``, or ``PATCH`` chunks that resume after a broken one (see :mod:`builder.registry.upload`)."""
        upload.upload_blob(self, repository, digest, size, opener, on_progress)

    def fetch_blob(self, repository: str, digest: str, out: BinaryIO, *, size: int | None = None,
                   on_progress: OnProgress | None = None) -> int:
        """Stream blob ``digest`` into ``out``, hashing it; its size. RegistryError naming the blob when its bytes
        do not hash to ``digest`` or differ from ``size``: the caller writes to a temp file and drops it then.
        Never more than ``size`` bytes are read (without ``size``: at most ``MAX_CONFIG``, 4 MiB)."""
        what = f"download of blob {digest} from {self._where(repository)}"
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256":
            raise RegistryError(f"blob {digest} of {self._where(repository)}: only sha256 digests are supported")
        limit = size if size is not None else MAX_CONFIG
        response = self._request("GET", api_path(repository, "blobs", digest), scopes=self._scopes(repository),
                                 what=what, expect=(200, 404), stream=(200,))
        if response.status_code == 404:
            raise RegistryError(f"registry {self.registry} has no blob {digest} in {repository}")
        hasher, done = QueuedHasher(), 0
        pieces = self._transport.chunks(response, READ_CHUNK)
        try:
            for data in pieces:
                if done + len(data) > limit:
                    done += len(data)
                    break
                hasher.update(data)
                out.write(data)
                done += len(data)
                if on_progress:
                    on_progress(done)
        finally:
            pieces.close()
            hasher.close()
        if done > limit and size is None:
            raise RegistryError(f"blob {digest} from {self._where(repository)} is larger than {MAX_CONFIG >> 20} "
                                "MiB, and its size was not declared")
        if size is not None and done != size:
            got = f"more than {size}" if done > size else str(done)
            raise RegistryError(f"blob {digest} from {self._where(repository)}: got {got} bytes, expected {size}")
        if hasher.hexdigest() != expected:
            raise RegistryError(f"blob {digest} from {self._where(repository)} does not match its digest "
                                f"(got sha256:{hasher.hexdigest()})")
        return done

    # --- manifests -------------------------------------------------------------------------------------------

    def get_manifest(self, repository: str, ref: str) -> Manifest:
        """The manifest (or index) ``ref`` (tag or digest) names, its bytes verified against its digest; at most
        ``MAX_MANIFEST`` (4 MiB) is read."""
        what = f"manifest {ref} of {self._where(repository)}"
        response = self._request("GET", api_path(repository, "manifests", ref), scopes=self._scopes(repository),
                                 what=what, expect=(200, 404), headers={"Accept": ", ".join(MANIFEST_TYPES)},
                                 limit=MAX_MANIFEST)
        if response.status_code == 404:
            raise RegistryError(f"registry {self.registry} has no manifest {ref} in {repository}")
        data = response.body
        if response.truncated:
            raise RegistryError(f"registry {self.registry}: {what} is larger than {MAX_MANIFEST >> 20} MiB")
        media_type = self._manifest_type(response.headers.get("Content-Type", ""), data, what)
        digest = sha256_digest(data)
        claimed = response.headers.get("Docker-Content-Digest")
        if (ref.startswith("sha256:") and ref != digest) or (claimed and claimed.startswith("sha256:")
                                                             and claimed != digest):
            raise RegistryError(f"registry {self.registry}: {what} does not match its digest (got {digest})")
        return Manifest(data, media_type, digest)

    def _manifest_type(self, content_type: str, data: bytes, what: str) -> str:
        content_type = shown(content_type.split(";")[0].strip(), 100)
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise RegistryError(f"registry {self.registry} answered {what} with something that is not a manifest "
                                f"({content_type or 'no content type'}, not JSON)")
        media_type = document.get("mediaType") if isinstance(document.get("mediaType"), str) else None
        for candidate in (content_type, media_type):
            if candidate in MANIFEST_TYPES:
                return candidate
        raise RegistryError(f"registry {self.registry} answered {what} with {content_type or 'no content type'}, "
                            "not an OCI or Docker v2 manifest")

    def manifest_descriptor(self, repository: str, ref: str) -> dict | None:
        """``{mediaType, digest, size}`` of the manifest ``ref`` names (HEAD), or None when there is none."""
        response = self._request("HEAD", api_path(repository, "manifests", ref), scopes=self._scopes(repository),
                                 what=f"manifest {ref} of {self._where(repository)}", expect=(200, 404),
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)})
        response.close()
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest") or ""
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        size = content_length(response, None)
        if not DIGEST_RE.fullmatch(digest) or media_type not in MANIFEST_TYPES or size is None or size > MAX_MANIFEST:
            manifest = self.get_manifest(repository, ref)  # a registry that does not say (or says nonsense): read it
            return {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.data)}
        return {"mediaType": media_type, "digest": digest, "size": size}

    def put_manifest(self, repository: str, ref: str, data: bytes, media_type: str) -> str:
        """Put a manifest under ``ref`` (a tag, or its own digest); its digest."""
        digest = sha256_digest(data)
        if ref.startswith("sha256:") and ref != digest:
            raise RegistryError(f"manifest for {self._where(repository)}@{ref}: its bytes hash to {digest}")
        what = f"manifest {ref} of {self._where(repository)}"
        response = self._request("PUT", api_path(repository, "manifests", ref), scopes=self._scopes(repository,
                                 "pull,push"), what=what, expect=(201,), body=data,
                                 headers={"Content-Type": media_type})
        response.close()
        if response.headers.get("OCI-Subject"):
            self._referrers_api[repository] = True
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RegistryError(f"registry {self.registry} stored {what} as {claimed}, not {digest}")
        return digest

    # --- referrers (builder.registry.referrers) -----------------------------------------------------------------

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        """Descriptors (mediaType, digest, size, artifactType, annotations) of the manifests whose subject is
        ``digest``: from the referrers API, else from the ``sha256-<hex>`` fallback index; [] when none."""
        return referrers.referrers(self, repository, digest, artifact_type)

    def put_referrer(self, repository: str, data: bytes, media_type: str = MEDIA_OCI_MANIFEST) -> str:
        """Put an artifact manifest that has a ``subject``; list it in the fallback index when the registry has no
        referrers API (idempotent; see :mod:`builder.registry.referrers` for the race of concurrent writers)."""
        return referrers.put_referrer(self, repository, data, media_type)

    # --- listings: the catalog and tag lists (paginated with Link / n=) ------------------------------------------

    def catalog(self, *, limit: int = 1000) -> tuple[list[str], bool]:
        """The repository names of ``GET /v2/_catalog`` (at most ``limit``; names that are not repository names
        are passed over) and whether there were more. Pages follow the ``Link: <...>; rel="next"`` header only
        on this registry's origin and path (see :meth:`_listing`)."""
        return self._listing("/v2/_catalog", "repositories", ("registry:catalog:*",), "the catalog", REPOSITORY_RE,
                             limit)

    def tags(self, repository: str, *, limit: int = 1000) -> tuple[list[str], bool]:
        """The tags of ``repository`` (``GET /v2/<name>/tags/list``; at most ``limit``, names that are not tags
        passed over) and whether there were more; RegistryError when the registry has no such repository."""
        path = api_path(repository, "tags") + "list"
        return self._listing(path, "tags", self._scopes(repository), f"the tags of {self._where(repository)}",
                             TAG_RE, limit)

    def _listing(self, path: str, key: str, scopes: tuple[str, ...], what: str, pattern, limit: int
                 ) -> tuple[list[str], bool]:
        """Pages of ``{key: [names]}``, each at most :data:`MAX_LISTING_PAGE` and a JSON shape check; at most
        ``limit`` names in all (and so at most ``limit // LISTING_PAGE + 2`` requests). A next page must be on the
        registry's own origin and ``path``: the credentials never follow a Link elsewhere."""
        url = f"{self._transport.base}{path}?{urlencode({'n': LISTING_PAGE})}"
        names: list[str] = []
        for _ in range(limit // LISTING_PAGE + 2):
            response = self._request("GET", url, scopes=scopes, what=what, expect=(200, 404), limit=MAX_LISTING_PAGE)
            if response.status_code == 404:
                raise RegistryError(f"registry {self.registry} has no {what.removeprefix('the ')} (HTTP 404)")
            if response.truncated:
                raise RegistryError(f"registry {self.registry}: a page of {what} is larger than "
                                    f"{MAX_LISTING_PAGE >> 20} MiB")
            names += self._page(response.body, key, what, pattern)
            if len(names) > limit:
                return names[:limit], True
            url = self._next_page(response.headers.get("Link", ""), url, path, what)
            if url is None:
                return names, False
        return names[:limit], True

    def _page(self, body: bytes, key: str, what: str, pattern) -> list[str]:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise RegistryError(f"registry {self.registry} answered {what} with something that is not JSON") from None
        if not isinstance(document, dict):
            raise RegistryError(f"registry {self.registry}: {what}: must be an object, not {type(document).__name__}")
        listed = document.get(key) or []  # a repository without tags says "tags": null
        if not isinstance(listed, list):
            raise RegistryError(f"registry {self.registry}: {what}: {key} must be an array, not "
                                f"{type(listed).__name__}")
        return [n for n in listed if isinstance(n, str) and pattern.fullmatch(n)]

    def _next_page(self, link: str, current: str, path: str, what: str) -> str | None:
        match = _NEXT_RE.search(link)
        if match is None:
            return None
        url = urljoin(current, match.group(1))
        if origin(url) != self._transport.origin or urlsplit(url).path != path:
            raise RegistryError(f"registry {self.registry}: {what}: the next page's Link "
                                f"{shown(match.group(1), 100)!r} leaves this registry's listing; refused (credentials "
                                "go to no other origin)")
        return url
