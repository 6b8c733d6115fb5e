"""`swcli job run`: the `docker run` of an evaluation, done for the user.

Creates a container from the dataset image (its /dataset volume), runs the model image's `eval` with
`--volumes-from` it and a bind-mounted output folder, as the calling user so the outputs are theirs, streams the
logs, and returns the container's exit code. Containers are removed whatever happens.

With ``shards=N`` it is the Kubernetes Indexed Job of `swcli job k8s` played on one machine: the merge container
starts first and waits (`merge --wait`), then N eval containers run at once, each with its
``JOB_COMPLETION_INDEX``, writing ``parts/<index>``; the merge scores their union into the output folder. Each
shard gets an equal share of the host's cores as its thread count, so N shards do not oversubscribe the CPU.

With ``resume`` every eval container gets ``--resume``: an interrupted run (or shard part) in the output folder
is continued, a finished part is left as it is, and the merge runs again over the parts.

A container that exits non-zero (a handler that calls ``os._exit``, a crash in native code, the OOM killer) is
reported as ``container IMAGE (eval[ shard I]|merge) exited with code N; last log lines:`` and the last
``TAIL_LINES`` lines of its own log, fetched once it has stopped, since with several containers streaming at once
its lines are interleaved with the others'.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from builder import outdir
from builder.errors import DockerError, EvalError, UsageError
from builder.images.engine import connect, image_exists
from builder.build.entry_image import image_for
from builder.runs.folder import RUN
from builder.store import Store

TAIL_LINES = 20


def run_job(model: str, dataset: str, output_dir: Path, *, store: Store | None = None, client=None,
            log: Callable[[str], None] = print, extra_args: list[str] | None = None, shards: int = 1,
            merge_wait: int = 3600, resume: bool = False) -> int:
    """Evaluate in containers; returns the exit code of the eval (or of the first failing shard, or the merge)."""
    if shards < 1:
        raise UsageError(f"--shards must be >= 1, got {shards}")
    output_dir = Path(output_dir)
    if os.path.lexists(output_dir):
        _output_folder(output_dir)  # a link (or file) there is refused before any other work
    store = store or Store()
    client = client or connect()
    model_image, dataset_image = _local_images(client, store, model, dataset)
    output_dir = _output_folder(output_dir)
    if shards > 1:  # the parts' folder too: the containers resolve a link planted there inside their own tree
        _output_folder(output_dir / "parts")
    extra_args = [*(["--resume"] if resume else []), *(extra_args or [])]
    job = _Containers(client, model_image, dataset_image, output_dir, log)
    try:
        if shards == 1:
            code = job.eval(extra_args)
        else:
            code = job.shards(shards, extra_args, merge_wait)
            if code:
                return code
            code = job.merge()
        if outdir.is_file(output_dir / RUN):
            from builder.runs.history import record_run

            record_run(output_dir, store)
        return code
    finally:
        job.remove()


def _local_images(client, store: Store, model: str, dataset: str) -> tuple[str, str]:
    """The model and dataset images ``model`` and ``dataset`` name, both in the local engine."""
    model_image, dataset_image = image_for("model", model, store), image_for("dataset", dataset, store)
    for image in (model_image, dataset_image):
        if not image_exists(client, image):
            raise DockerError(f"image {image} is not in the local engine; build it (swcli ... build) or pull it")
    return model_image, dataset_image


class _Containers:
    """The containers of one job: the dataset image's, created only for its /dataset volume, and the model image's
    (one eval, or a merge and one eval per shard), all bind-mounting the output folder and running as the calling
    user. :meth:`remove` removes every one of them, with its volumes."""

    def __init__(self, client, model_image: str, dataset_image: str, output_dir: Path, log: Callable[[str], None]):
        self.client, self.image, self.log = client, model_image, log
        self.common = {"volumes": {str(output_dir): {"bind": "/output", "mode": "rw"}},
                       "user": f"{os.getuid()}:{os.getgid()}", "detach": True}
        self.data = client.containers.create(dataset_image, command=["true"])
        self.started: list = []
        self.merger = None

    def _run(self, command: list[str], **options):
        container = self.client.containers.run(self.image, command, **self.common, **options)
        self.started.append(container)
        return container

    def eval(self, args: list[str]) -> int:
        """One eval over the whole dataset, its log streamed as it is; its exit code."""
        container = self._run(["eval", *args], volumes_from=[self.data.id])
        code = _follow([container], self.log, prefix=False)[0]
        if code:
            _report_exit(container, self.image, "eval", code, self.log)
        return code

    def shards(self, count: int, args: list[str], merge_wait: int) -> int:
        """Start the merge (it waits for the parts), then ``count`` evals at once, one shard each with an equal share
        of the cores; their logs prefixed ``[index]``. The first failing shard's exit code, else 0."""
        self.merger = self._run(["merge", "/output/parts", "--output", "/output", "--wait", str(merge_wait)])
        threads = str(max(1, (os.cpu_count() or 1) // count))
        evals = [self._run(["eval", "--output", f"/output/parts/{index}", *args], volumes_from=[self.data.id],
                           environment={"JOB_COMPLETION_INDEX": str(index), "JOB_COMPLETION_COUNT": str(count),
                                        "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
                 for index in range(count)]
        codes = _follow(evals, self.log, prefix=True)
        failed = [(i, c) for i, c in enumerate(codes) if c]
        for index, shard_code in failed:
            _report_exit(evals[index], self.image, f"eval shard {index}", shard_code, self.log)
        if failed:
            self.log(f"shard(s) {', '.join(str(i) for i, _ in failed)} of {count} failed; not merging")
            return failed[0][1]
        return 0

    def merge(self) -> int:
        """Follow the merge started by :meth:`shards` to its end; its exit code."""
        code = _follow([self.merger], self.log, prefix=False)[0]
        if code:
            _report_exit(self.merger, self.image, "merge", code, self.log)
        return code

    def remove(self) -> None:
        for container in (*self.started, self.data):
            try:
                container.remove(v=True, force=True)  # v: the dataset's VOLUME is a full copy of it on disk
            except Exception:  # already gone: nothing to clean
                pass


def _output_folder(path: Path) -> Path:
    """The output folder to bind-mount, created when missing, never a link to a folder elsewhere (the containers
    write run.json, results and ``parts/<index>`` there through builder.outdir too); its resolved path."""
    try:
        outdir.make_folder(path)
    except OSError as err:
        raise EvalError(f"{err.filename or path}: cannot write: {err.strerror or err}") from None
    return path.resolve()  # only the user's path above it: the folder itself was just checked not to be a link


def _follow(containers: list, log: Callable[[str], None], *, prefix: bool) -> list[int]:
    """Stream the containers' logs (prefixed ``[index]`` when several run at once); return their exit codes."""
    def stream(index: int, container) -> None:
        # the engine sends frames, not lines: a frame may hold several lines, or part of one
        rest = b""
        for chunk in container.logs(stream=True, follow=True):
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                show(index, line)
        if rest:
            show(index, rest)

    def show(index: int, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip("\r")
        log(f"[{index}] {text}" if prefix else text)

    followers = [threading.Thread(target=stream, args=(i, c), daemon=True) for i, c in enumerate(containers)]
    for follower in followers:
        follower.start()
    codes = [int(c.wait()["StatusCode"]) for c in containers]
    for follower in followers:  # the streams end with their containers; wait for the last lines before going on
        follower.join(timeout=10)
    return codes


def _report_exit(container, image: str, what: str, code: int, log: Callable[[str], None]) -> None:
    """``container IMAGE (WHAT) exited with code N; last log lines:`` and the end of that container's own log."""
    try:
        container.reload()
        oom = " (killed: out of memory)" if container.attrs.get("State", {}).get("OOMKilled") else ""
        tail = container.logs(stdout=True, stderr=True, tail=TAIL_LINES).decode(errors="replace").splitlines()
    except Exception as err:  # the engine lost it: say so rather than hide the exit
        oom, tail = "", [f"(its log is unavailable: {err})"]
    log(f"container {image} ({what}) exited with code {code}{oom}; last log lines:")
    for line in tail[-TAIL_LINES:] or ["(no output)"]:
        log(f"  {line}")
