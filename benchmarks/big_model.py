#!/usr/bin/env python3
"""A model with big weights: where swcli stands against issue 20's targets, each number beside its anchor, one run.

The benchmark makes its own model project in a temp folder (default under /var/tmp): ``model.yaml``, a tiny
handler module and ``models/weights.safetensors`` of random bytes (``--size``, default 3G; 500M, 10G...). Every
swcli step runs as a subprocess of the venv's ``swcli`` with its own fresh ``SWCLI_HOME`` where it says "cold"; its
peak RSS is the child's own, from ``/usr/bin/time -f %M`` (see ``Steps.run``). The runtime is built beforehand
from an empty venv (``--no-load``, not timed), as tests/conftest.py's ``runtime`` fixture does. Disk after build and
push is counted without what the fresh store held before the model (the tiny runtime and the base image).

Anchors: ``hashlib.sha256`` of the weights once (streamed), ``cp`` of the weights (page-cached). Peers, in the same
run: BuildKit (``DOCKER_BUILDKIT=1 /usr/bin/docker build``) of a Dockerfile that COPYs the project onto
swcli/base:bookworm-py3.11, cold (``--no-cache``) and unchanged; ``docker push`` of that image to an empty
registry; raw uploads (POST, then PUT ``?digest=``, with ``requests``) and downloads (GET, written to a file) of
the same blobs swcli pushed (below). Registries are Debian's docker-registry on 127.0.0.1
(tests/registry_servers.py); bytes uploaded are counted on the registry's side (access log + storage).

    python benchmarks/big_model.py [--size 3G] [--dir /var/tmp] [--skip-peers] [--skip-push] [--keep]

Images the run tagged in the engine are removed at the end (tags that were there before are left alone).
BuildKit's own build cache (its copy of the context) is left to the engine's cache policy.

The push and pull anchors move the same blobs as swcli (every blob of the pushed image, as the registry stores
it): a monolithic upload of each in turn, and a GET of each to a file. ``docker load`` of the image's own archive
(``docker save``) is the engine's floor for a loaded build.

On this 2-core machine, quiet (load < 1), ``--size 3G`` (7 min in all):

    measure                                             value anchor          anchor v.   ratio target       peak RSS
    anchor: sha256 of the weights (hashlib)            1.90 s
    anchor: cp of the weights                          1.43 s
    cold model build --no-image                        2.18 s sha256 once        1.90 s   1.15x                 96 MB
    cold model build --no-load (image in layout)       3.91 s sha256 once        1.90 s   2.06x <= 3x           96 MB
    same command again, nothing changed                0.22 s                                   <= 1 s          31 MB
    disk: $SWCLI_HOME after build, less runtime       3.00 GB weights           3.00 GB   1.00x
      of which: models/ 3.00 GB
    peer: BuildKit cold (--no-cache), into engine     27.52 s sha256 once        1.90 s  14.49x
    peer: BuildKit again, nothing changed              0.07 s
    cold model build, loaded into engine              31.60 s BuildKit cold     27.52 s   1.15x <= 0.6x         96 MB
    peer: docker load of that image's archive         24.34 s loaded build      31.60 s   0.77x
    peer: raw upload of the same 7 blobs              12.64 s
    peer: raw download of them (3.16 GB)               2.84 s
    model push, empty registry (7 blobs, 3.16 GB)     11.80 s raw upload        12.64 s   0.93x <= 1.3x         57 MB
    model push again, unchanged: 0 blobs, 0 B          0.63 s                                   0 bytes         38 MB
    disk: $SWCLI_HOME after build+push, less rt       3.16 GB weights           3.00 GB   1.05x <= 1.1x
      of which: models/ 3.00 GB, oci/ 163.80 MB
    peer: docker push (3 blobs, 3.08 GB)              66.62 s
    model push (above) vs docker push                 11.80 s docker push       66.62 s   0.18x <= 0.25x
    pull into an empty store                           7.39 s raw download       2.84 s   2.60x <= 1.3x         61 MB
    disk: $SWCLI_HOME after pull (with runtime)       3.44 GB weights           3.00 GB   1.15x
    peak RSS, highest timed swcli step                  96 MB weights           3.00 GB   0.03x flat in size
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.disk import disk_bytes  # noqa: E402 (the checkout on the path first)

DOCKER = os.environ.get("SWCLI_BENCH_DOCKER", "/usr/bin/docker")
BASE = "swcli/base:bookworm-py3.11"
RUNTIME = "bigbench-env"
MODEL = "bigmodel"
READ = 1 << 20
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None  # GNU time, for a child's own peak RSS

HANDLER = '''
from pathlib import Path

from builder.api.model import PipelineHandler

WEIGHTS = Path(__file__).parent.parent / "models" / "weights.safetensors"


class Big(PipelineHandler):
    """Reads one byte of its weights; predicts it for every record."""

    def __init__(self):
        super().__init__()
        with open(WEIGHTS, "rb") as fh:
            self.first = fh.read(1)[0]

    def ppl(self, data, **kw):
        return [self.first % 3], [[1.0, 0.0, 0.0]]
'''

MODEL_YAML = f"""\
version: 1.0
name: {MODEL}
model:
  - models/weights.safetensors
run:
  ppl: code.ppl:Big
desc: random weights for benchmarks/big_model.py
"""


def parse_size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)


def human(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def make_project(root: Path, size: int) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "models").mkdir()
    (root / "model.yaml").write_text(MODEL_YAML)
    chunk = 64 << 20
    with open(root / "models" / "weights.safetensors", "wb") as out:
        left = size
        while left > 0:
            out.write(os.urandom(min(chunk, left)))
            left -= chunk
    return root


def sha256_seconds(path: Path) -> tuple[str, float]:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(READ):
            digest.update(data)
    return "sha256:" + digest.hexdigest(), time.perf_counter() - started




class Steps:
    """Runs commands as children, each timed with its own peak RSS; a failure stops the benchmark."""

    def __init__(self, work: Path):
        self.work, self.n, self.peak_rss = work, 0, 0.0
        exe = Path(sys.executable).with_name("swcli")
        self.swcli = [str(exe)] if exe.exists() else [sys.executable, "-m", "builder"]

    def run(self, command: list[str], *, env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
        """(seconds, peak RSS in MB) of one command; stop the benchmark when it fails.

        The peak comes from ``/usr/bin/time -f %M``, not from this process's ``wait4``: Linux carries a process's
        RSS high-water mark across fork and exec, so a child of this (larger) Python process would report at least
        this process's peak. ``time`` is small, so its child starts from ~1 MB."""
        self.n += 1
        log, rss_file = self.work / f"step-{self.n:02d}.log", self.work / f"step-{self.n:02d}.rss"
        wrapped = [TIME, "-f", "%M", "-o", str(rss_file), *command] if TIME else command
        with open(log, "wb") as out:
            started = time.perf_counter()
            proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **(env or {})})
            _pid, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        kb = int(rss_file.read_text().split()[-1]) if TIME else usage.ru_maxrss
        return seconds, kb / 1024

    def cli(self, home: Path, *args, cwd: Path | None = None) -> tuple[float, float]:
        seconds, rss = self.run([*self.swcli, *map(str, args)], env={"SWCLI_HOME": str(home)}, cwd=cwd)
        self.peak_rss = max(self.peak_rss, rss)
        return seconds, rss


class Table:
    """Rows of: measure, seconds (or bytes), anchor, its value, ratio, target, peak RSS; printed as they come."""

    def __init__(self):
        self.emit(f"{'measure':<46} {'value':>10} {'anchor':<14} {'anchor v.':>10} {'ratio':>7} {'target':<12} "
                  f"{'peak RSS':>8}")

    @staticmethod
    def emit(line: str) -> None:
        print(line, flush=True)

    def row(self, label: str, value: str, anchor: str = "", anchor_value: str = "", ratio: float | None = None,
            target: str = "", rss: float | None = None) -> None:
        self.emit(f"{label:<46} {value:>10} {anchor:<14} {anchor_value:>10} "
                  f"{'' if ratio is None else f'{ratio:.2f}x':>7} {target:<12} "
                  f"{'' if rss is None else f'{rss:.0f} MB':>8}".rstrip())


def secs(s: float) -> str:
    return f"{s:.2f} s"


def fresh_home(work: Path, name: str, steps: Steps, venv: Path) -> Path:
    """An empty store holding only the tiny runtime (--no-load: the layout only), built untimed."""
    home = work / name
    steps.run([*steps.swcli, "runtime", "build", "--name", RUNTIME, "--venv", str(venv), "--no-load",
               "--skip-gen-env"], env={"SWCLI_HOME": str(home)})
    return home


def buildkit(context: Path, dockerfile: Path, tag: str, *, nocache: bool, steps: Steps) -> float:
    cmd = [DOCKER, "build", "-q", "-f", str(dockerfile), "-t", tag, *(["--no-cache"] if nocache else []),
           str(context)]
    return steps.run(cmd, env={"DOCKER_BUILDKIT": "1"})[0]


def raw_upload(address: str, repository: str, path: Path, digest: str) -> float:
    """A monolithic upload the way the distribution spec has it: POST a session, PUT all bytes with the digest."""
    import requests

    started = time.perf_counter()
    with requests.Session() as session:
        answer = session.post(f"http://{address}/v2/{repository}/blobs/uploads/")
        answer.raise_for_status()
        location = answer.headers["Location"]
        if location.startswith("/"):
            location = f"http://{address}{location}"
        with open(path, "rb") as fh:
            done = session.put(location, params={"digest": digest}, data=fh,
                               headers={"Content-Type": "application/octet-stream",
                                        "Content-Length": str(path.stat().st_size)})
        done.raise_for_status()
    return time.perf_counter() - started


def raw_download(address: str, repository: str, digest: str, out: Path) -> float:
    import requests

    started = time.perf_counter()
    with requests.get(f"http://{address}/v2/{repository}/blobs/{digest}", stream=True) as answer:
        answer.raise_for_status()
        with open(out, "wb") as fh:
            for data in answer.iter_content(READ):
                fh.write(data)
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3G", help="weights size: 500M, 3G, 10G... (10^n bytes)")
    parser.add_argument("--dir", default="/var/tmp", help="where the temp folder (project, stores, registries) goes")
    parser.add_argument("--skip-peers", action="store_true", help="no BuildKit, no docker push")
    parser.add_argument("--skip-push", action="store_true", help="no registries: no push, pull, raw up/download")
    parser.add_argument("--keep", action="store_true", help="leave the temp folder")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="swcli-big-model-", dir=args.dir))
    from builder.images.engine import connect

    client = connect()
    tags_before = {tag for image in client.images.list() for tag in image.tags}
    registries: list = []
    try:
        Bench(args, size, work, registries, Steps(work)).run()
    finally:
        for registry in registries:
            registry.stop()
        remove_new_tags(client, tags_before)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def remove_new_tags(client, before: set[str]) -> None:
    """Untag what this run tagged; an image left with no tag goes too (the engine is shared: tolerate races)."""
    from docker.errors import APIError, ImageNotFound

    try:
        images = client.images.list()
    except (ImageNotFound, APIError):  # an image another session removed while it was listed
        return
    for image in images:
        for tag in image.tags:
            if tag not in before:
                with contextlib.suppress(ImageNotFound, APIError):
                    client.images.remove(tag)


class Bench:
    """One run's state: the project, the steps, the table, and what later rows compare with."""

    def __init__(self, args, size: int, work: Path, registries: list, steps: Steps):
        self.args, self.size, self.work, self.registries, self.steps = args, size, work, registries, steps
        self.project = make_project(work / "project", size)
        self.weights = self.project / "models" / "weights.safetensors"
        self.venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        print(f"weights {human(size)} of random bytes; {os.cpu_count()} cores; temp folder {work}; swcli = "
              f"{' '.join(steps.swcli)} as a subprocess, one fresh SWCLI_HOME per cold step", flush=True)
        self.table = Table()
        self.buildkit_tag = f"swcli-bench/big-model-buildkit:{os.getpid()}"
        self.home = work / "home"  # the store that builds, then pushes

    def run(self) -> None:
        self.anchors()
        self.builds()
        if not self.args.skip_push:
            self.distribution()
        self.table.row("peak RSS, highest timed swcli step", f"{self.steps.peak_rss:.0f} MB", "weights",
                       human(self.size), self.steps.peak_rss * 2**20 / self.size, "flat in size")

    def anchors(self) -> None:
        self.digest, self.hash_s = sha256_seconds(self.weights)
        cp_s = self.steps.run(["cp", str(self.weights), str(self.work / "weights.copy")])[0]
        (self.work / "weights.copy").unlink()
        self.table.row("anchor: sha256 of the weights (hashlib)", secs(self.hash_s))
        self.table.row("anchor: cp of the weights", secs(cp_s))

    def builds(self) -> None:
        steps, table, project, hashed = self.steps, self.table, self.project, ("sha256 once", secs(self.hash_s))
        home = fresh_home(self.work, "home-noimage", steps, self.venv)
        s, rss = steps.cli(home, "model", "build", ".", "--skip-gen-env", "--no-image", cwd=project)
        table.row("cold model build --no-image", secs(s), *hashed, s / self.hash_s, "", rss)
        shutil.rmtree(home)

        fresh_home(self.work, self.home.name, steps, self.venv)
        self.runtime_only = disk_bytes(self.home, allocated=True)  # the tiny runtime and the base image in the layout
        self.runtime_folders = self.folders()
        build = ["model", "build", ".", "--skip-gen-env", "--runtime", RUNTIME]
        s, rss = steps.cli(self.home, *build, "--no-load", cwd=project)
        table.row("cold model build --no-load (image in layout)", secs(s), *hashed, s / self.hash_s, "<= 3x", rss)
        s, rss = steps.cli(self.home, *build, "--no-load", cwd=project)
        table.row("same command again, nothing changed", secs(s), "", "", None, "<= 1 s", rss)
        self.disk_row("disk: $SWCLI_HOME after build, less runtime", "")

        bk_cold = None
        if not self.args.skip_peers:
            dockerfile = self.work / "Dockerfile"
            dockerfile.write_text(f"FROM {BASE}\nCOPY . /opt/model\n")
            bk_cold = buildkit(project, dockerfile, self.buildkit_tag, nocache=True, steps=steps)
            table.row("peer: BuildKit cold (--no-cache), into engine", secs(bk_cold), *hashed, bk_cold / self.hash_s)
            bk_again = buildkit(project, dockerfile, self.buildkit_tag, nocache=False, steps=steps)
            table.row("peer: BuildKit again, nothing changed", secs(bk_again))

        home_load = fresh_home(self.work, "home-load", steps, self.venv)
        s, rss = steps.cli(home_load, *build, cwd=project)
        label = "cold model build, loaded into engine"
        if bk_cold is not None:
            table.row(label, secs(s), "BuildKit cold", secs(bk_cold), s / bk_cold, "<= 0.6x", rss)
        else:
            table.row(label, secs(s), *hashed, s / self.hash_s, "", rss)
        shutil.rmtree(home_load)
        if not self.args.skip_peers:
            self.engine_floor(s)

    def engine_floor(self, loaded_s: float) -> None:
        """What `docker load` alone costs the engine for this image: `docker save` it (untimed), remove it, load the
        archive back. The engine unpacks the archive, then applies the layer: the weights are written twice there."""
        tag = f"swmp/{MODEL}:latest"
        archive = self.work / "image.tar"
        self.steps.run([DOCKER, "save", "-o", str(archive), tag])
        image_id = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True,
                                  text=True, check=True).stdout.strip()
        self.steps.run([DOCKER, "rmi", "-f", image_id])  # every tag of it: else the load finds it there
        s = self.steps.run([DOCKER, "load", "-q", "-i", str(archive)])[0]
        archive.unlink()
        self.table.row("peer: docker load of that image's archive", secs(s), "loaded build", secs(loaded_s),
                       s / loaded_s)

    def folders(self) -> dict[str, int]:
        return {child.name: disk_bytes(child, allocated=True) for child in self.home.iterdir() if child.is_dir()}

    def disk_row(self, label: str, target: str) -> None:
        added = disk_bytes(self.home, allocated=True) - self.runtime_only
        self.table.row(label, human(added), "weights", human(self.size), added / self.size, target)
        by = {name: n - self.runtime_folders.get(name, 0) for name, n in self.folders().items()}
        self.table.emit("  of which: " + ", ".join(f"{name}/ {human(n)}" for name, n in sorted(by.items())
                                                  if abs(n) >= 1e6))

    def raw_peers(self, source, repository: str, tag: str) -> tuple[float, float, int]:
        """The same bytes without swcli: every blob of the pushed image (as the registry stores it) uploaded
        monolithically, one after the other, to an empty registry; then each downloaded (GET) to a file.
        Returns (upload seconds, download seconds, bytes)."""
        import requests

        from tests.registry_servers import stored_blob

        accept = "application/vnd.oci.image.manifest.v1+json"
        doc = requests.get(f"http://{source.address}/v2/{repository}/manifests/{tag}",
                           headers={"Accept": accept}).json()
        digests = [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]
        raw = self.registry("raw")
        up = sum(raw_upload(raw.address, "bench/raw", stored_blob(source.root, d), d) for d in digests)
        down = sum(raw_download(raw.address, "bench/raw", d, self.work / "blob.download") for d in digests)
        return up, down, sum(stored_blob(source.root, d).stat().st_size for d in digests)

    def registry(self, name: str):
        from tests.registry_servers import Registry

        self.registries.append(Registry(self.work / f"registry-{name}"))
        return self.registries[-1]

    def distribution(self) -> None:
        from tests.registry_servers import uploads

        steps, table = self.steps, self.table
        ours = self.registry("swcli")
        target = f"{ours.address}/bench/{MODEL}:v1"
        push_s, rss = steps.cli(self.home, "model", "push", MODEL, target)
        time.sleep(0.5)  # the access log line is written as the request completes
        blobs, sent = uploads(ours.root, ours.log)
        up_s, down_s, total = self.raw_peers(ours, f"bench/{MODEL}", "v1")
        table.row(f"peer: raw upload of the same {blobs} blobs", secs(up_s))
        table.row(f"peer: raw download of them ({human(total)})", secs(down_s))
        table.row(f"model push, empty registry ({blobs} blobs, {human(sent)})", secs(push_s), "raw upload",
                  secs(up_s), push_s / up_s, "<= 1.3x", rss)
        since = len(ours.log.read_text())
        s, rss = steps.cli(self.home, "model", "push", MODEL, target)
        time.sleep(0.5)
        blobs, sent = uploads(ours.root, ours.log, since)
        table.row(f"model push again, unchanged: {blobs} blobs, {human(sent)}", secs(s), "", "", None, "0 bytes",
                  rss)
        self.disk_row("disk: $SWCLI_HOME after build+push, less rt", "<= 1.1x")

        if not self.args.skip_peers:
            theirs = self.registry("docker")
            ref = f"{theirs.address}/bench/{MODEL}-buildkit:v1"
            steps.run([DOCKER, "tag", self.buildkit_tag, ref])
            dp_s = steps.run([DOCKER, "push", ref])[0]
            time.sleep(0.5)
            blobs, sent = uploads(theirs.root, theirs.log)
            table.row(f"peer: docker push ({blobs} blobs, {human(sent)})", secs(dp_s))
            table.row("model push (above) vs docker push", secs(push_s), "docker push", secs(dp_s), push_s / dp_s,
                      "<= 0.25x")

        pulled = self.work / "home-pull"
        target = f"{ours.address}/bench/{MODEL}:v1"
        s, rss = steps.cli(pulled, "pull", target)
        table.row("pull into an empty store", secs(s), "raw download", secs(down_s), s / down_s, "<= 1.3x", rss)
        pulled_bytes = disk_bytes(pulled, allocated=True)
        table.row("disk: $SWCLI_HOME after pull (with runtime)", human(pulled_bytes), "weights", human(self.size),
                  pulled_bytes / self.size)


if __name__ == "__main__":
    raise SystemExit(main())
