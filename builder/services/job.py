"""`swcli job run`: the `docker run` of an evaluation, done for the user.

Creates a container from the dataset image (its /dataset volume), runs the model image's `eval` with
`--volumes-from` it and a bind-mounted output folder, as the calling user so the outputs are theirs, streams the
logs, and returns the container's exit code. Containers are removed whatever happens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from builder.errors import DockerError
from builder.images.engine import connect, image_exists
from builder.store import Store


def image_of(kind: str, ref: str, store: Store) -> str:
    """A store ref's image tag (`swds/name:version`), or ``ref`` itself when it already names a local image."""
    from builder.errors import RefNotFoundError

    prefix = {"dataset": "swds", "model": "swmp"}[kind]
    try:
        entry = store.resolve(kind, ref)
        return f"{prefix}/{entry.name}:{entry.version}"
    except RefNotFoundError:
        if "/" in ref:
            return ref
        raise


def run_job(model: str, dataset: str, output_dir: Path, *, store: Store | None = None, client=None,
            log: Callable[[str], None] = print, extra_args: list[str] | None = None) -> int:
    store = store or Store()
    client = client or connect()
    model_image, dataset_image = image_of("model", model, store), image_of("dataset", dataset, store)
    for image in (model_image, dataset_image):
        if not image_exists(client, image):
            raise DockerError(f"image {image} is not in the local engine; build it (swcli ... build) or pull it")
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    data_container = client.containers.create(dataset_image, command=["true"])
    runner = None
    try:
        runner = client.containers.run(
            model_image, ["eval", *(extra_args or [])], detach=True, volumes_from=[data_container.id],
            volumes={str(output_dir): {"bind": "/output", "mode": "rw"}}, user=f"{os.getuid()}:{os.getgid()}",
        )
        for line in runner.logs(stream=True, follow=True):
            log(line.decode(errors="replace").rstrip("\n"))
        code = int(runner.wait()["StatusCode"])
        if (output_dir / "run.json").is_file():
            from builder.services.runs import record_run

            record_run(output_dir, store)
        return code
    finally:
        for container in (runner, data_container):
            if container is not None:
                try:
                    container.remove(force=True)
                except Exception:  # already gone: nothing to clean
                    pass
