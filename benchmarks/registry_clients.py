#!/usr/bin/env python3
"""Which registry client should swcli push with? The same ~300 MB gzip blob pushed by each candidate, timed.

Candidates: oras-py (`oras`: monolithic PUT, and its chunked PATCH mode), python-dxf (`dxf`: one streamed PUT), and
ours (`builder.registry`: chunked above CHUNKED_THRESHOLD, and forced monolithic). Each push goes to a fresh
docker-registry on 127.0.0.1, from a child process so its peak memory (ru_maxrss) is its own; the registry's copy
of the blob is checked after each push. A candidate whose package is not installed is skipped, so run it from a
scratch venv that has them, outside the repo:

    python3 -m venv /tmp/clientbench/venv
    /tmp/clientbench/venv/bin/pip install oras python-dxf requests pytest
    /tmp/clientbench/venv/bin/python benchmarks/registry_clients.py [--size-mb 300] [--repeat 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES = ["oras", "oras-chunked", "dxf", "ours", "ours-monolithic"]
NEEDS = {"oras": "oras", "oras-chunked": "oras", "dxf": "dxf", "ours": "requests", "ours-monolithic": "requests"}
READ = 1 << 20


def make_blob(path: Path, size_mb: int) -> tuple[str, int]:
    """A gzip stream of about ``size_mb`` MB: half random (incompressible, like weights), half repetitive text."""
    if not path.exists():
        text = b"epoch 1 loss 0.1234 accuracy 0.9876 " * 30_000
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            written = 0
            while written < size_mb * 1_000_000:
                out.write(compressor.compress(os.urandom(600_000) + text[: 600_000]))
                written = out.tell()
            out.write(compressor.flush())
        tmp.rename(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(READ):
            digest.update(data)
    return "sha256:" + digest.hexdigest(), path.stat().st_size


def chunks(path: Path):
    with open(path, "rb") as fh:
        while data := fh.read(READ):
            yield data


def push(candidate: str, address: str, path: Path, digest: str, size: int) -> None:
    """One push of the blob to ``address``/bench/<candidate>, the way each library is meant to be used."""
    repository = f"bench/{candidate}"
    if candidate.startswith("oras"):
        import oras.container
        import oras.provider

        registry = oras.provider.Registry(hostname=address, insecure=True)
        container = oras.container.Container(f"{address}/{repository}:latest")
        layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
        response = registry.upload_blob(str(path), container, layer, do_chunked=candidate == "oras-chunked")
        response.raise_for_status()
    elif candidate == "dxf":
        import dxf

        client = dxf.DXF(address, repository, insecure=True)
        client.push_blob(data=chunks(path), digest=digest, check_exists=False)
    else:
        from builder.registry import client as ours, upload

        if candidate == "ours-monolithic":
            upload.CHUNKED_THRESHOLD = size
        ours.RegistryClient(address).upload_blob(repository, digest, size, lambda: open(path, "rb"))


def child(candidate: str, address: str, path: Path, digest: str, size: int) -> None:
    started = time.perf_counter()
    push(candidate, address, path, digest, size)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def installed(candidate: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(NEEDS[candidate]) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--blob", type=Path, default=Path(tempfile.gettempdir()) / "swcli-bench-registry-blob.gz")
    parser.add_argument("--only", nargs="*", choices=CANDIDATES, default=CANDIDATES)
    parser.add_argument("--child", nargs=2, metavar=("CANDIDATE", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    digest, size = make_blob(args.blob, args.size_mb)
    if args.child:
        child(args.child[0], args.child[1], args.blob, digest, size)
        return

    from tests.registry_servers import Registry, stored_blob

    print(f"blob: {size / 1e6:.0f} MB gzip ({digest[:19]}...); best of {args.repeat}; each push to a fresh "
          f"docker-registry on 127.0.0.1; {os.cpu_count()} cores")
    print(f"{'candidate':<16} {'seconds':>8} {'MB/s':>7} {'peak RSS MB':>12}")
    for candidate in args.only:
        if not installed(candidate):
            print(f"{candidate:<16} skipped: {NEEDS[candidate]} is not installed in {sys.executable}")
            continue
        best = None
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="swcli-bench-registry-") as root:
                registry = Registry(Path(root) / "registry")
                try:
                    done = subprocess.run([sys.executable, __file__, "--blob", str(args.blob), "--child", candidate,
                                           registry.address], capture_output=True, text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"{candidate} failed:\n{done.stderr[-2000:]}")
                    stored = stored_blob(registry.root, digest)
                    if not stored.exists() or stored.stat().st_size != size:
                        raise SystemExit(f"{candidate}: the registry does not hold the blob after the push")
                finally:
                    registry.stop()
            result = json.loads(done.stdout.strip().splitlines()[-1])
            best = result if best is None or result["seconds"] < best["seconds"] else best
        print(f"{candidate:<16} {best['seconds']:8.2f} {size / 1e6 / best['seconds']:7.0f} {best['maxrss_mb']:12.0f}")


if __name__ == "__main__":
    main()
