"""Pushing, pulling and copying swcli images through the Docker engine, and remembering registry credentials.

docker-py's push and pull answer HTTP 200 and report failures inside the stream (docker-py #3161), so every
event is checked for `error`/`errorDetail`. Credentials come, in this order, from `--username` with the password
on stdin (passed to the engine for that one call), or from the Docker config the engine's clients already share
(`swcli login` writes it the way `docker login` does, through a credential helper when one is configured). They
are never logged, echoed, or written into an image or label. Layers the registry already has are not uploaded
again: the engine checks each blob first ("Layer already exists").
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from builder.errors import RegistryError, SwcliError
from builder.images.engine import connect, image_exists
from builder.refs import KIND_PREFIX, image_name, is_version, name_problem


@dataclass(frozen=True)
class LayerProgress:
    """One event of a transfer, as the engine reports it per layer: ``current``/``total`` bytes while moving."""

    layer: str
    status: str
    current: int | None = None
    total: int | None = None


OnProgress = Callable[[LayerProgress], None]


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


def _one_line(text: object) -> str:
    """One line of an engine error: an APIError's own explanation, not its HTTP wrapper."""
    return " ".join(str(getattr(text, "explanation", None) or text).split())


def _events(stream: Iterable[dict], what: str, on_progress: OnProgress | None) -> Iterable[dict]:
    """Yield the engine's events, raising on an in-band error and reporting per-layer progress on the way."""
    for event in stream:
        if "error" in event or "errorDetail" in event:
            detail = (event.get("errorDetail") or {}).get("message") or event.get("error")
            raise RegistryError(f"{what} failed: {_one_line(detail)}")
        if on_progress and event.get("id") and event.get("status"):
            detail = event.get("progressDetail") or {}
            on_progress(LayerProgress(event["id"], event["status"], detail.get("current"), detail.get("total")))
        yield event


def _push_tagged(client, repo: str, tag: str, auth: dict | None, on_progress: OnProgress | None) -> TransferResult:
    from docker.errors import APIError, DockerException

    result = TransferResult(f"{repo}:{tag}")
    what = f"push of {repo}:{tag}"
    try:
        for event in _events(client.api.push(repo, tag, stream=True, decode=True, auth_config=auth), what, on_progress):
            status, layer, aux = event.get("status", ""), event.get("id", ""), event.get("aux") or {}
            if status == "Pushed":
                result.pushed.append(layer)
            elif status == "Layer already exists":
                result.existing.append(layer)
            result.digest = aux.get("Digest") or result.digest
    except (APIError, DockerException) as err:
        raise RegistryError(f"{what} failed: {_one_line(err)}") from None
    if result.digest is None:
        raise RegistryError(f"{what} failed: the engine reported no manifest digest")
    return result


def _pull_labelled(client, target: str, auth: dict | None, on_progress: OnProgress | None):
    """Pull ``target``; return the image after checking it is an swcli image (its labels say what it is)."""
    from docker.errors import APIError, DockerException

    repo, tag = split_target(target)
    what = f"pull of {repo}:{tag}"
    try:
        for _ in _events(client.api.pull(repo, tag, stream=True, decode=True, auth_config=auth), what, on_progress):
            pass
        image = client.images.get(f"{repo}:{tag}")
    except (APIError, DockerException) as err:
        raise RegistryError(f"{what} failed: {_one_line(err)}") from None
    check_labels(f"{repo}:{tag}", image.labels or {})
    return image


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


def push(kind: str, ref: str, target: str, *, auth: dict | None = None, client=None,
         on_progress: OnProgress | None = None) -> TransferResult:
    """Tag the local image of ``ref`` as ``target`` and push it; returns which layers went up and which existed."""
    client = client or connect()
    from builder.services.images import image_for

    image = image_for(kind, ref)
    if not image_exists(client, image):
        raise RegistryError(f"image {image} is not in the local engine; build it first (swcli {kind} build)")
    repo, tag = split_target(target)
    client.images.get(image).tag(repo, tag)
    return _push_tagged(client, repo, tag, auth, on_progress)


def pull(target: str, *, auth: dict | None = None, client=None, on_progress: OnProgress | None = None,
         store=None, record: bool = True) -> TransferResult:
    """Pull ``target``, tag it as the local swcli name its labels give (`swmp/<name>:<version>`, `:latest`) and,
    unless ``record`` is off, record it in the local store, so refs, `info` and `job run` work as if built here."""
    from builder.store import Store

    client = client or connect()
    repo, _ = split_target(target)
    image = _pull_labelled(client, target, auth, on_progress)
    kind, name, version = check_labels(target, image.labels)
    if record:  # verified and recorded before the local tags exist: a refused image is not `swds/<name>:latest`
        record_pulled(client, image, target, store or Store())
    local = image_name(kind, name)
    image.tag(local, version)
    image.tag(local, "latest")
    result = TransferResult(f"{local}:{version}")
    result.digest = next((d.rpartition("@")[2] for d in image.attrs.get("RepoDigests") or [] if d.startswith(repo + "@")), None)
    return result


# where each kind's store entry lives inside its image; a runtime's entry is only its manifest, made from labels
ENTRY_IN_IMAGE = {"dataset": "/dataset", "model": "/opt/swcli/model"}


def record_pulled(client, image, target: str, store):
    """Put a pulled image's store entry in place: copied out of the image (dataset shards, model source and
    manifest) and verified like `dataset info --verify` before it is published, or, for a runtime, written from
    its labels. An entry already present is left as it is."""
    from builder.errors import RefNotFoundError
    from builder.images.engine import copy_out
    from builder.store import utc_now, write_json_atomic

    kind, name, version = check_labels(target, image.labels)
    try:
        return store.resolve(kind, f"{name}:{version}")
    except RefNotFoundError:
        pass
    with store.stage(kind) as staged:
        if kind in ENTRY_IN_IMAGE:
            inside = ENTRY_IN_IMAGE[kind]
            try:
                copy_out(client, image.id, inside, staged)
                verify_pulled(kind, name, version, staged)
            except SwcliError as err:  # name the file as it is in the image, not in the staging folder
                raise RegistryError(f"{target}: not recording it: "
                                    f"{str(err).replace(str(staged), f'{inside}')}") from None
        else:
            write_json_atomic(staged / "manifest.json", {
                "kind": kind, "name": name, "version": version, "mode": image.labels.get("io.swcli.env-mode"),
                "image": f"{image_name(kind, name)}:{version}", "image_id": image.id, "created": utc_now(),
                "source": f"pulled from {target}"})
        return store.publish(kind, name, version, staged)


def verify_pulled(kind: str, name: str, version: str, folder: Path) -> None:
    """Check an entry copied out of an image before it is trusted: its manifest agrees with the labels, and a
    dataset verifies like `dataset info --verify`, a model's files all sit inside src/ with their sha256."""
    from builder.services.dataset_build import verify_dataset
    from builder.store import Entry

    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: missing; the image holds no swcli {kind} entry") from None
    except (OSError, ValueError, RecursionError) as err:
        raise RegistryError(f"{path}: not a readable manifest ({_one_line(err)})") from None
    if not isinstance(manifest, dict):
        raise RegistryError(f"{path}: not a manifest (expected a JSON object)")
    for key, label in (("kind", kind), ("name", name), ("version", version)):
        if manifest.get(key) != label:
            raise RegistryError(f"{path}: field '{key}': the manifest says {manifest.get(key)!r}, "
                                f"the label io.swcli.{key} says {label!r}")
    if kind == "dataset":
        verify_dataset(Entry(kind, name, version, folder, manifest))
    else:
        verify_model_files(folder, manifest, path)


def _inside_path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a relative path that stays inside its folder, or None."""
    if not isinstance(rel, str) or not rel:
        return f"expected a relative path, got {rel!r}"
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        return f"{rel!r} is not a relative path inside src/"
    return None


def verify_model_files(folder: Path, manifest: dict, where: Path) -> None:
    from builder.store import sha256_file

    """Every file the manifest lists is inside ``src/``, a regular file of its size and sha256 (a link: a link
    with its recorded target, staying inside src/); errors name the manifest, the field and the file."""
    import stat

    files = manifest.get("files")
    if not isinstance(files, list):
        raise RegistryError(f"{where}: field 'files': expected a list")
    src = folder / "src"
    for n, item in enumerate(files):
        field = f"files[{n}]"
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: field '{field}': expected an object")
        rel = item.get("path")
        problem = _inside_path_problem(rel)
        if problem:
            raise RegistryError(f"{where}: field '{field}.path': {problem}")
        path = src / rel
        if any((src / "/".join(rel.split("/")[:k])).is_symlink() for k in range(1, rel.count("/") + 1)):
            raise RegistryError(f"{where}: field '{field}.path': {rel!r} passes through a link")
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise RegistryError(f"{where}: field '{field}.path': src/{rel} is not in the image") from None
        link = item.get("link")
        if link is not None:
            target = (path.parent / str(link)).resolve()
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != link or not target.is_relative_to(src.resolve()):
                raise RegistryError(f"{where}: field '{field}.link': src/{rel} is not a link to {link!r} inside src/")
            continue
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"{where}: field '{field}.path': src/{rel} is not a regular file")
        if st.st_size != item.get("size"):
            raise RegistryError(f"{where}: field '{field}.size': src/{rel} is {st.st_size} bytes, "
                                f"the manifest says {item.get('size')!r}")
        if sha256_file(path) != item.get("sha256"):
            raise RegistryError(f"{where}: field '{field}.sha256': src/{rel} differs from the manifest")


def copy(source: str, target: str, *, source_auth: dict | None = None, target_auth: dict | None = None, client=None,
         on_progress: OnProgress | None = None) -> TransferResult:
    """Copy an swcli image from one registry to another through the engine: pull ``source``, push as ``target``.

    The engine keeps the layers it pulled, so copying the next version of a model moves only its changed layers
    both ways. The local swcli tags are left as they were: a copy is not a pull.
    """
    client = client or connect()
    image = _pull_labelled(client, source, source_auth, on_progress)
    repo, tag = split_target(target)
    image.tag(repo, tag)
    return _push_tagged(client, repo, tag, target_auth, on_progress)


# --- credentials -------------------------------------------------------------------------------------------------

def docker_config_path() -> Path:
    """Where the Docker CLI and docker-py read credentials: ``$DOCKER_CONFIG/config.json`` or ``~/.docker``."""
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _read_config(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise RegistryError(f"{path}: not a readable Docker config ({_one_line(err)})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: not a Docker config (expected a JSON object)")
    return config


def _write_config(path: Path, config: dict) -> None:
    """Write the config readable by its owner only (it may hold base64 credentials), in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _helper_for(config: dict, registry: str) -> str | None:
    return (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")


def login(registry: str, username: str, password: str, *, client=None) -> Path:
    """Check the credentials with the registry (through the engine), then store them for later pushes and pulls.

    Stored the way `docker login` stores them, so both tools share one login: through the configured credential
    helper when there is one, otherwise base64 in the config file, which is created with mode 0600.
    """
    from docker.errors import APIError, DockerException

    if not username or not password:
        raise RegistryError(f"login to {registry} needs a username and a non-empty password")
    client = client or connect()
    try:
        client.login(username=username, password=password, registry=registry, reauth=True)
    except (APIError, DockerException) as err:
        raise RegistryError(f"login to {registry} failed: {_one_line(err)}") from None
    path = docker_config_path()
    config = _read_config(path)
    helper = _helper_for(config, registry)
    if helper:
        from docker.credentials import Store as CredentialStore
        from docker.credentials.errors import StoreError

        try:
            CredentialStore(helper).store(server=registry, username=username, secret=password)
        except StoreError as err:
            raise RegistryError(f"login to {registry}: credential helper docker-credential-{helper} failed: "
                                f"{_one_line(err)}") from None
        config.setdefault("auths", {}).setdefault(registry, {})
    else:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        config.setdefault("auths", {})[registry] = {"auth": token}
    _write_config(path, config)
    return path


def logout(registry: str) -> bool:
    """Forget the stored credentials of ``registry``; False when there were none."""
    path = docker_config_path()
    config = _read_config(path)
    known = registry in (config.get("auths") or {})
    helper = _helper_for(config, registry)
    if helper:
        from docker.credentials import Store as CredentialStore
        from docker.credentials.errors import CredentialsNotFound, StoreError

        try:
            CredentialStore(helper).erase(registry)
            known = True
        except CredentialsNotFound:
            pass
        except StoreError as err:
            raise RegistryError(f"logout from {registry}: credential helper failed: {_one_line(err)}") from None
    if registry in (config.get("auths") or {}):
        del config["auths"][registry]
        _write_config(path, config)
    return known
