"""A daemonless client of one registry (OCI distribution-spec 1.1): blobs, manifests, and referrers.

Every call names the repository it works on; auth scopes follow from it (``repository:<name>:pull`` to read,
``pull,push`` to write, plus ``pull`` on the source of a cross-repository mount). Blobs stream from and to file
objects and are hashed on the way; nothing holds a layer in memory. One client may be used by several threads
at once (the transport keeps a session per thread; tokens are shared).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from builder.errors import RegistryError
from builder.registry import referrers
from builder.registry.auth import Authenticator, Credentials, stored_credentials
from builder.registry.media import DIGEST_RE, MANIFEST_TYPES, MAX_CONFIG, MAX_MANIFEST, MEDIA_OCI_MANIFEST
from builder.registry.transport import BIG_PIECE, TransferError, Transport, checked_url, origin, shown
from builder.registry.upload import Source

CHUNKED_THRESHOLD = 32 << 20  # blobs above this size go up in PATCH chunks, so a broken upload can resume
CHUNK_SIZE = 32 << 20
READ_CHUNK = BIG_PIECE        # bytes sent (or read) at a time; the transfer deadline grants time for one piece
MAX_RETRIES = 3               # failed attempts in a row (no progress between them) before an upload gives up

OnProgress = Callable[[int], None]


REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def api_path(repository: str, kind: str, ref: str = "") -> str:
    """``/v2/<repository>/<kind>/<ref>``, refusing in one line a repository, digest or tag that is not one (a
    value read from a registry's own answer, such as an index entry, must not steer the URL)."""
    if not isinstance(repository, str) or not REPOSITORY_RE.fullmatch(repository):
        raise RegistryError(f"{repository!r} is not a repository name")
    if ref and not (DIGEST_RE.fullmatch(ref) if kind in ("blobs", "referrers") or ":" in ref else TAG_RE.fullmatch(ref)):
        raise RegistryError(f"{ref!r} is not a {'digest' if kind != 'manifests' else 'tag or digest'} "
                            f"(in {repository})")
    return f"/v2/{repository}/{kind}/{ref}"


def _length(response, what: str | None) -> int | None:
    """The answer's ``Content-Length`` as a number; None (``what`` None) or one line when it is none."""
    raw = response.headers.get("Content-Length") or "0"
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return int(raw)
    if what is None:
        return None
    raise RegistryError(f"{what}: Content-Length {shown(raw, 40)!r} is not a number")


@dataclass(frozen=True)
class Manifest:
    data: bytes       # the exact bytes (digest = sha256(data))
    media_type: str
    digest: str


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _error_detail(response) -> str:
    """The registry's own words (``errors[].code: message``), short and escaped; "" when it said nothing usable
    (the body was read by the transport, at most 64 KiB)."""
    try:
        errors = json.loads(getattr(response, "body", b"") or b"null")
    except (ValueError, RecursionError):
        return ""
    errors = errors.get("errors") if isinstance(errors, dict) else None
    if not isinstance(errors, list):
        return ""
    said = [": ".join(str(e[k]) for k in ("code", "message") if isinstance(e.get(k), (str, int)))
            for e in errors[:3] if isinstance(e, dict)]
    return shown("; ".join(s for s in said if s))


class RegistryClient:
    """One registry, as ``registry`` (``host[:port]``) names it. See the module docstring."""

    def __init__(self, registry: str, *, credentials: Credentials | None = None, ca_cert: Path | None = None,
                 timeout: float | None = None):
        self.registry = registry
        self._transport = Transport(registry, ca_cert=ca_cert, timeout=timeout)
        self._auth = Authenticator(registry, credentials if credentials is not None
                                   else (lambda: stored_credentials(registry)), self._transport.request)
        self._referrers_api: dict[str, bool] = {}  # repository -> whether the registry has the referrers API

    # --- plumbing -------------------------------------------------------------------------------------------

    def _request(self, method: str, path_or_url: str, *, scopes: tuple[str, ...], what: str,
                 expect: tuple[int, ...], body: Callable[[], object] | bytes | None = None,
                 headers: dict[str, str] | None = None, limit: int | None = None, stream: tuple[int, ...] = ()):
        """One request with auth: on a 401 from the registry itself learn the challenge and retry once;
        RegistryError unless ``expect``. The body is read (``response.body``, at most ``limit`` bytes), except
        for the statuses in ``stream`` (see :meth:`Transport.request`). The Authorization header goes only to
        the registry's own origin: the transport drops it on the way to an upload Location or a redirect
        elsewhere, and a 401 from elsewhere is not a challenge to answer."""
        url = urljoin(self._transport.base + "/", path_or_url) if not path_or_url.startswith("http") else path_or_url
        for attempt in (1, 2):
            sent = dict(headers or {})
            sent.update(self._auth.headers(scopes))
            data = body() if callable(body) else body
            response = self._transport.request(method, url, what=what, headers=sent, data=data, stream=stream,
                                               **({"limit": limit} if limit is not None else {}))
            if (response.status_code == 401 and attempt == 1 and origin(response.url) == self._transport.origin
                    and self._auth.challenged(response, scopes, sent)):
                self._transport.release(response)
                continue
            break
        if response.status_code not in expect:
            self._transport.release(response)
            raise self._failure(response, what)
        return response

    def _failure(self, response, what: str) -> RegistryError:
        status, detail = response.status_code, _error_detail(response)
        said = f" ({detail})" if detail else ""
        if status == 401:
            if self._auth.credentials is None:
                return RegistryError(f"registry {self.registry} needs credentials for {what}; "
                                     f"run `swcli login {self.registry}`")
            return RegistryError(f"registry {self.registry} refused the credentials for {what} (HTTP 401){said}")
        if status == 403:
            return RegistryError(f"registry {self.registry} denied {what} (HTTP 403){said}")
        error = TransferError if status >= 500 else RegistryError
        return error(f"registry {self.registry}: {what} failed: HTTP {status}{said}")

    @staticmethod
    def _scopes(repository: str, actions: str = "pull", *also: str) -> tuple[str, ...]:
        return (f"repository:{repository}:{actions}",) + tuple(f"repository:{r}:pull" for r in also)

    def _where(self, repository: str) -> str:
        return f"{self.registry}/{repository}"

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
        return _length(response, f"registry {self.registry}: blob {digest} of {self._where(repository)}")

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

        Up to :data:`CHUNKED_THRESHOLD`: one ``PUT``. Above: ``PATCH`` chunks of :data:`CHUNK_SIZE` with
        ``Content-Range``; after a broken chunk the upload resumes from the registry's ``Range``, or starts again
        in a new session when the registry forgot it (404). :data:`MAX_RETRIES` failures in a row give up.
        """
        if size > CHUNKED_THRESHOLD:
            self._upload_chunked(repository, digest, size, opener, on_progress)
        else:
            self._upload_monolithic(repository, digest, size, opener, on_progress)

    def _start_upload(self, repository: str, what: str) -> str:
        response = self._request("POST", api_path(repository, "blobs") + "uploads/", scopes=self._scopes(repository,
                                 "pull,push"), what=what, expect=(202,))
        response.close()
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: {what}: the registry gave no upload Location")
        return self._location(location, self._transport.base + "/", what)

    def _location(self, location: str, base: str, what: str) -> str:
        """An upload ``Location`` made absolute and checked (http(s), a host). It may name another origin (a
        registry may hand uploads to a storage front end): the transport sends no Authorization there."""
        return checked_url(urljoin(base, location), f"registry {self.registry}: {what}: the upload Location")

    def _finish_upload(self, repository: str, digest: str, location: str, what: str,
                       body: Callable[[], object] | None, length: int) -> None:
        response = self._request("PUT", _with_query(location, digest=digest), scopes=self._scopes(
            repository, "pull,push"), what=what, expect=(201, 400), body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)})
        if response.status_code == 400:
            detail = _error_detail(response)
            if "DIGEST_INVALID" in detail or "digest" in detail.lower():
                raise RegistryError(f"registry {self.registry}: the bytes uploaded for blob {digest} of "
                                    f"{self._where(repository)} do not match that digest (did the file change?)")
            raise self._failure(response, what)
        response.close()

    def _upload_monolithic(self, repository, digest, size, opener, on_progress) -> None:
        what = f"upload of blob {digest} to {self._where(repository)}"
        source = Source(opener)
        try:
            for attempt in range(1, MAX_RETRIES + 1):
                try:
                    location = self._start_upload(repository, what)
                    self._finish_upload(repository, digest, location, what, source.body(0, size, on_progress), size)
                    return
                except TransferError:
                    if attempt == MAX_RETRIES:
                        raise
        finally:
            source.close()

    def _upload_status(self, repository: str, location: str, what: str) -> tuple[str, int] | None:
        """Where an upload session continues and how many bytes the registry holds of it (its ``Range``), or None
        when the registry forgot the session (or gave up on it)."""
        response = self._request("GET", location, scopes=self._scopes(repository, "pull,push"), what=what,
                                 expect=(204, 404))
        response.close()
        if response.status_code == 404:
            return None
        match = re.fullmatch(r"\s*(?:bytes=)?0-(-?\d+)\s*", response.headers.get("Range", ""))
        end = int(match.group(1)) if match else 0
        return self._location(response.headers.get("Location") or location, location, what), end + 1 if end > 0 else 0

    def _upload_chunked(self, repository, digest, size, opener, on_progress) -> None:
        what = f"upload of blob {digest} to {self._where(repository)}"
        scopes = self._scopes(repository, "pull,push")
        location, offset, failures, source = self._start_upload(repository, what), 0, 0, Source(opener)
        try:
            while offset < size:
                length = min(CHUNK_SIZE, size - offset)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                           "Content-Range": f"{offset}-{offset + length - 1}"}
                try:
                    response = self._request("PATCH", location, scopes=scopes, what=what, expect=(202, 404, 416),
                                             headers=headers, body=source.body(offset, length, on_progress))
                except TransferError:
                    failures += 1
                    if failures >= MAX_RETRIES:
                        raise
                    status = self._upload_status(repository, location, what)
                else:
                    response.close()
                    if response.status_code == 202:
                        location = self._location(response.headers.get("Location") or location, location, what)
                        offset, failures = offset + length, 0
                        continue
                    failures += 1  # 404: the registry gave up on the session; 416: it holds another amount
                    if failures >= MAX_RETRIES:
                        raise RegistryError(f"registry {self.registry}: {what} failed: the chunk at byte {offset} "
                                            f"was refused {failures} times (HTTP {response.status_code})")
                    status = None if response.status_code == 404 else self._upload_status(repository, location, what)
                if status is None:  # the registry forgot the session (restarted, gave up): start again
                    status = self._start_upload(repository, what), 0
                location, offset = status[0], min(status[1], size)
            self._finish_upload(repository, digest, location, what, None, 0)
        finally:
            source.close()

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
        hasher, done = hashlib.sha256(), 0
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
        size = _length(response, None)
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
