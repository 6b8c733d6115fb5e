"""Pushing and pulling swcli images through the Docker engine, with per-layer progress and in-band errors.

docker-py's push and pull answer HTTP 200 and report failures inside the stream (docker-py #3161), so every
event is checked for `error`/`errorDetail`. Credentials come from the Docker config the engine already uses
(`docker login`), or `--username` with the password on stdin; they are passed per call, never logged or written.
Layers the registry already has are not uploaded again: the engine checks each blob first ("Layer already exists").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from builder.errors import RegistryError
from builder.images.engine import connect, image_exists

Log = Callable[[str], None]
KIND_PREFIX = {"dataset": "swds", "model": "swmp", "runtime": "swrt"}


@dataclass
class TransferResult:
    ref: str
    pushed: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    digest: str | None = None


def split_target(target: str) -> tuple[str, str]:
    """``registry/repo[:tag]`` -> (repository, tag); a port colon is not a tag."""
    last = target.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = target.rpartition(":")
        return repo, tag
    return target, "latest"


def _check(event: dict, what: str) -> None:
    if "error" in event or "errorDetail" in event:
        detail = (event.get("errorDetail") or {}).get("message") or event.get("error")
        raise RegistryError(f"{what} failed: {' '.join(str(detail).split())}")


def source_image(kind: str, ref: str, store=None) -> str:
    from builder.services.job import image_of
    from builder.store import Store

    if kind == "runtime":
        from builder.services.runtime_build import runtime_image_for

        return runtime_image_for(ref, store or Store())
    return image_of(kind, ref, store or Store())


def push(kind: str, ref: str, target: str, *, auth: dict | None = None, client=None, log: Log | None = None) -> TransferResult:
    """Tag the local image of ``ref`` as ``target`` and push it; returns which layers went up and which existed."""
    from docker.errors import APIError, DockerException

    client = client or connect()
    image = source_image(kind, ref)
    if not image_exists(client, image):
        raise RegistryError(f"image {image} is not in the local engine; build it first (swcli {kind} build)")
    repo, tag = split_target(target)
    client.images.get(image).tag(repo, tag)
    result = TransferResult(f"{repo}:{tag}")
    log = log or (lambda line: None)
    try:
        for event in client.api.push(repo, tag, stream=True, decode=True, auth_config=auth):
            _check(event, f"push of {repo}:{tag}")
            status, layer = event.get("status", ""), event.get("id", "")
            if status == "Pushed":
                result.pushed.append(layer)
            elif status == "Layer already exists":
                result.existing.append(layer)
            elif "digest" in (event.get("aux") or {}):
                result.digest = event["aux"]["Digest"] if "Digest" in event["aux"] else event["aux"]["digest"]
            if status in ("Pushed", "Layer already exists") or status.startswith(tag):
                log(f"{layer}: {status}" if layer else status)
    except (APIError, DockerException) as err:
        raise RegistryError(f"push of {repo}:{tag} failed: {' '.join(str(err).split())}") from None
    return result


def pull(target: str, *, auth: dict | None = None, client=None, log: Log | None = None) -> TransferResult:
    """Pull ``target`` and tag it as the local swcli name its labels give (`swmp/<name>:<version>`, `:latest`)."""
    from docker.errors import APIError, DockerException

    client = client or connect()
    repo, tag = split_target(target)
    log = log or (lambda line: None)
    try:
        for event in client.api.pull(repo, tag, stream=True, decode=True, auth_config=auth):
            _check(event, f"pull of {repo}:{tag}")
            if event.get("status") in ("Pull complete", "Already exists"):
                log(f"{event.get('id')}: {event['status']}")
    except (APIError, DockerException) as err:
        raise RegistryError(f"pull of {repo}:{tag} failed: {' '.join(str(err).split())}") from None
    image = client.images.get(f"{repo}:{tag}")
    labels = image.labels or {}
    kind, name, version = labels.get("io.swcli.kind"), labels.get("io.swcli.name"), labels.get("io.swcli.version")
    if kind not in KIND_PREFIX or not name or not version:
        raise RegistryError(f"{repo}:{tag} carries no swcli labels (io.swcli.kind/name/version); not an swcli image")
    local = f"{KIND_PREFIX[kind]}/{name}"
    image.tag(local, version)
    image.tag(local, "latest")
    return TransferResult(f"{local}:{version}")
