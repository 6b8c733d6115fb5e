"""The Docker engine as tests reach it: the base image's tag, a client, and `docker run --rm` that removes the
container's anonymous volumes too."""

from __future__ import annotations

BASE = "swcli/base:bookworm-py3.11"


def engine_or_none(timeout: int = 120):
    """A docker-py client whose engine answered a ping, else None."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception:  # no engine: the `docker` capability is missing
        return None


def run_removed(engine, image: str, command=None, **kwargs) -> bytes:
    """``docker run --rm IMAGE COMMAND``: stdout, or ContainerError with stderr. docker-py's ``remove=True``
    removes the container but not its anonymous volumes."""
    from docker.errors import ContainerError

    container = engine.containers.run(image, command, detach=True, **kwargs)
    try:
        code = container.wait()["StatusCode"]
        if code:
            raise ContainerError(container, code, command, image, container.logs(stdout=False, stderr=True))
        return container.logs(stdout=True, stderr=False)
    finally:
        container.remove(v=True, force=True)
