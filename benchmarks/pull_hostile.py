#!/usr/bin/env python3
"""`swcli pull` of hostile images (docs/security.md), this checkout beside another (``--tree OLD``, e.g. a worktree
of the commit before the pull bounds), then a normal ~100 MB dataset image pulled 3 times by each, alternated.

The hostile images are pushed as raw bytes to Debian's docker-registry on 127.0.0.1 (tests/hostile_images.py): hard
links, sparse members, 20,000 unlisted files, a gzip bomb, a link chain out of the store, a declared 1 TiB layer, a
config with no size. Each pull runs in a child under /usr/bin/time with a fresh SWCLI_HOME and no engine; it prints
the exit code, peak RSS, seconds and the bytes the store holds on disk afterwards (st_blocks, so sparse files count
what they hold). Needs docker-registry and /usr/bin/time.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import argparse

AFTER = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(AFTER))
BEFORE: Path | None = None
from tests import hostile_images as h  # noqa: E402
from tests.helpers.datasets import write_tiny_dataset  # noqa: E402
from tests.registry_servers import Registry  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="pull-measure-"))


def swcli(tree: Path, home: Path, *args: str) -> tuple[int, int, float, str]:
    env = dict(os.environ, SWCLI_HOME=str(home), PYTHONPATH=str(tree), DOCKER_HOST="unix:///nonexistent")
    started = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "peak-kib=%M", sys.executable, "-c",
                           "import sys; from builder.cli import main; sys.exit(main())", *args],
                          env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    err, _, peak = proc.stderr.rpartition("peak-kib=")
    last = [line for line in err.splitlines() if line.strip() and not line.startswith("Command exited")][-1:] or [""]
    return proc.returncode, int(peak), seconds, last[0][:160]


def on_disk(home: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in home.rglob("*") if p.is_file() and not p.is_symlink()) \
        if home.exists() else 0


def trees() -> list[tuple[str, Path]]:
    return ([("before", BEFORE)] if BEFORE else []) + [("after", AFTER)]


def main() -> None:
    global BEFORE
    parser = argparse.ArgumentParser(description="swcli pull of hostile images, this checkout beside another")
    parser.add_argument("--tree", type=Path, help="another checkout to compare (printed as 'before')")
    BEFORE = parser.parse_args().tree
    reg = Registry(WORK / "registry")
    try:
        maker = WORK / "maker"
        project = write_tiny_dataset(WORK / "ds", [(bytes([i % 256]) * (10 + i % 50), i % 3) for i in range(50)],
                                     files=3)
        assert swcli(AFTER, maker, "dataset", "build", "--no-image", str(project))[0] == 0
        entry = next((maker / "datasets" / "tiny").iterdir())
        manifest = json.loads((entry / "manifest.json").read_text())
        version = manifest["version"]
        files = {p.name: p.read_bytes() for p in sorted(entry.iterdir())}
        base = [h.folder("dataset")] + [h.file(f"dataset/{n}", d) for n, d in sorted(files.items())]
        lab = h.labels("dataset", "tiny", version)
        big = os.urandom(16 << 20)
        images = {
            "100 hard links to an unlisted 16 MiB file": [base + [h.file("dataset/blob", big)] +
                                                          [h.hardlink(f"dataset/l{n}", "dataset/blob")
                                                           for n in range(100)]],
            "sparse 1 GiB manifest.json (PAX 1.0)": [[m for m in base if m.name != "dataset/manifest.json"] +
                                                     [h.pax_sparse("dataset/manifest.json", 1 << 30)]],
            "GNU sparse 1 GiB unlisted file": [base + [h.gnu_sparse("dataset/hole", 1 << 30)]],
            "20,000 unlisted files": [base + [h.file(f"dataset/x{n:05d}", b"x" * 100) for n in range(20_000)]],
            "unlisted 512 MiB of zeros (gzip bomb, 0.5 MB)": [base + [h.file("dataset/zeros", bytes(512 << 20))]],
            "link chain out of the store (each link looks safe)": [base + [
                h.symlink("dataset/s", "."), h.symlink("dataset/t", "s/" * 12 + "../" * 12 + "etc/hostname")]],
        }
        refs = {name: h.push_image(reg.address, f"evil{n}", [h.tar_bytes(m) for m in layers], lab)
                for n, (name, layers) in enumerate(images.items())}
        refs["declared 1 TiB layer"] = h.push_image(reg.address, "tib", [h.tar_bytes(base)], lab,
                                                    layer_sizes={0: 1 << 40})
        refs["config with no size"] = h.push_image(reg.address, "nosize", [h.tar_bytes(base)], lab,
                                                   manifest_edit=lambda m: m["config"].pop("size"))
        print("| image | tree | exit | peak RSS MiB | seconds | bytes left in the store | last line |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, ref in refs.items():
            for label, tree in trees():
                home = WORK / f"home-{label}"
                shutil.rmtree(home, ignore_errors=True)
                code, peak, seconds, last = swcli(tree, home, "pull", ref)
                left = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file()) if home.exists() else []
                print(f"| {name} | {label} | {code} | {peak / 1024:.0f} | {seconds:.2f} | {on_disk(home):,} | "
                      f"{last.replace('|', '/')} |", flush=True)
                print(f"<!-- files left: {left[:12]} -->", flush=True)
                shutil.rmtree(home, ignore_errors=True)
        normal(reg)
    finally:
        reg.stop()
        shutil.rmtree(WORK, ignore_errors=True)


def normal(reg) -> None:
    """A normal dataset image (~100 MB of records, built and pushed by swcli), pulled 3 times by each tree,
    alternating, into fresh stores."""
    maker = WORK / "maker2"
    project = write_tiny_dataset(WORK / "big", [(os.urandom(4000 + i % 97), i % 10) for i in range(25_000)],
                                 files=5, volume="16M")
    code = swcli(AFTER, maker, "dataset", "build", "--no-load", str(project))
    assert code[0] == 0, code
    code = swcli(AFTER, maker, "dataset", "push", "tiny", f"{reg.address}/team/big:1")
    assert code[0] == 0, code
    print("\n| run | tree | exit | seconds | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- |")
    for run in range(3):
        for label, tree in trees():
            home = WORK / f"normal-{label}"
            shutil.rmtree(home, ignore_errors=True)
            code, peak, seconds, last = swcli(tree, home, "pull", f"{reg.address}/team/big:1")
            print(f"| {run + 1} | {label} | {code} | {seconds:.2f} | {peak / 1024:.0f} |", flush=True)
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
