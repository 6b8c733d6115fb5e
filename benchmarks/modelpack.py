#!/usr/bin/env python3
"""`model push --modelpack`: bytes uploaded and seconds, beside a plain push, and the ModelPack pulls (swcli's and
modelpack-client's) of what it pushed; the numbers docs/modelpack.md quotes.

The benchmark makes a model project in a temp folder: model.yaml, the tiny handler of tests/helpers/models.py and
``models/weights.bin`` of random bytes (``--size``, default 500M), builds it on a runtime from an empty venv
(``--no-load``: no engine), and pushes it to fresh docker-registry instances on 127.0.0.1 (tests/registry_servers.py).
Bytes uploaded are counted on the registry's side (access log + storage). Every swcli step is a child process
(``python -m builder``) with its own ``SWCLI_HOME`` where it says "fresh".

    python benchmarks/modelpack.py [--size 500M] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.spec import parse_size  # noqa: E402
from tests.helpers.models import HANDLER, write_model  # noqa: E402
from tests.registry_servers import Registry, uploads  # noqa: E402


def swcli(home: Path, *args) -> float:
    env = {**os.environ, "SWCLI_HOME": str(home), "DOCKER_HOST": "unix:///nonexistent",
           "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "builder", *map(str, args)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"swcli {' '.join(map(str, args))} failed:\n{res.stderr[-2000:]}")
    return time.perf_counter() - started


def sent(reg: Registry, since: int) -> tuple[int, int]:
    time.sleep(0.3)  # the access log line is written as the request completes
    return uploads(reg.root, reg.log, since)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="500M")
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="swcli-modelpack-bench-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        project = write_model(tmp / "model", HANDLER)
        (project / "models" / "weights.bin").write_bytes(b"")
        with open(project / "models" / "weights.bin", "wb") as out:
            left = size
            while left:
                out.write(os.urandom(min(left, 64 << 20)))
                left -= min(left, 64 << 20)
        (project / "model.yaml").write_text((project / "model.yaml").read_text().replace(
            "  - models/weights.json\n", "  - models/weights.json\n  - models/weights.bin\n"))
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        swcli(home, "runtime", "build", "--name", "bench-env", "--venv", venv, "--no-load")
        swcli(home, "model", "build", project, "--runtime", "bench-env", "--no-load", "--skip-gen-env")
        rows = []
        one = Registry(tmp / "reg1")
        two = Registry(tmp / "reg2")
        try:
            t = swcli(home, "model", "push", "modthree", f"{one.address}/team/m:v1")
            rows.append(("plain push, empty registry", t, sent(one, 0)))
            since = len(one.log.read_text())
            t = swcli(home, "model", "push", "modthree", f"{one.address}/team/m:v1", "--modelpack")
            rows.append(("push --modelpack after it (image there)", t, sent(one, since)))
            since = len(one.log.read_text())
            t = swcli(home, "model", "push", "modthree", f"{one.address}/team/m:v1", "--modelpack")
            rows.append(("push --modelpack again, unchanged", t, sent(one, since)))
            t = swcli(home, "model", "push", "modthree", f"{two.address}/team/m:v1", "--modelpack")
            rows.append(("push --modelpack, empty registry", t, sent(two, 0)))
            started = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "modelpack_client", "--insecure", "pull",
                                  f"{two.address}/team/m:v1-modelpack", str(tmp / "mp")], capture_output=True)
            assert res.returncode == 0, res.stderr
            rows.append(("modelpack-client pull of it", time.perf_counter() - started, None))
            t = swcli(tmp / "fresh", "pull", f"{two.address}/team/m:v1-modelpack")
            rows.append(("swcli pull of it, fresh store", t, None))
            t = swcli(tmp / "fresh", "pull", f"{two.address}/team/m:v1-modelpack")
            rows.append(("swcli pull of it again (cached)", t, None))
        finally:
            one.stop()
            two.stop()
        print(f"weights: {size} bytes of random data ({args.size}); {os.cpu_count()} cores")
        for name, seconds, moved in rows:
            extra = f"{moved[0]} blobs, {moved[1]:,} bytes uploaded" if moved else ""
            print(f"{name:45s} {seconds:7.2f} s  {extra}")
        print(json.dumps({name: {"seconds": round(s, 2), "blobs": m[0] if m else None, "bytes": m[1] if m else None}
                          for name, s, m in rows}))


if __name__ == "__main__":
    main()
