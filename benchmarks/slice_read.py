#!/usr/bin/env python3
"""What `swcli model eval --dataset REGISTRY/REPO:TAG --shard I/4` downloads (target: <= 1/4 of the dataset + 1 layer).

Makes a synthetic dataset of 224x224x3 random records (incompressible, so gzip hides nothing) in bounded layers,
pushes its image to Debian's docker-registry on a loopback port with no engine, then evaluates each shard I/4 with
a tiny handler straight from the registry, each in a fresh cache (as N pods would), and once more in a warm cache.
Bytes are counted on the registry's side: its access log's `GET /v2/.../blobs/<digest> 200 <bytes>` lines.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECORD = 224 * 224 * 3
SLICER = '''
from pathlib import Path

from builder.api.dataset import BuildExecutor

RECORD = 224 * 224 * 3


class Slicer(BuildExecutor):
    def iter_data_slice(self, path):
        with open(path, "rb") as fh:
            while chunk := fh.read(RECORD):
                yield chunk

    def iter_label_slice(self, path):
        for n in range(Path(path).stat().st_size // RECORD):
            yield bytes([n % 10])
'''
HANDLER = '''
from builder.api.model import PipelineHandler


class FirstByte(PipelineHandler):
    def ppl(self, data, **kw):
        return data[0] % 10, None

    def cmp(self, results):
        return {"records": sum(1 for _ in results)}
'''


def project(root: Path, size_mb: int, volume: str, layer: str) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "slicer.py").write_text(SLICER)
    (root / "data").mkdir()
    records = size_mb * (1 << 20) // RECORD
    with open(root / "data" / "records.bin", "wb") as fh:
        for _ in range(records):
            fh.write(os.urandom(RECORD))
    (root / "dataset.yaml").write_text(
        "name: synth\ndata_dir: data\ndata_filter: 'records.bin'\nlabel_filter: 'records.bin'\n"
        f"process: code.slicer:Slicer\nattr:\n  alignment_size: 4k\n  volume_size: {volume}\n  layer_size: {layer}\n")
    return root


def model(root: Path) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "ppl.py").write_text(HANDLER)
    (root / "model.yaml").write_text("name: firstbyte\nrun:\n  ppl: code.ppl:FirstByte\n")
    return root


def blob_gets(log: Path, since: int) -> list[tuple[str, int]]:
    """(digest, bytes) of every blob GET the registry answered 200, after byte ``since`` of its access log."""
    found = re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200 (\d+)', log.read_text()[since:])
    return [(d, int(n)) for d, n in found]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--volume", default="8M")
    ap.add_argument("--layer", default="32M")
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="swcli-slice-"))
    os.environ["SWCLI_HOME"] = str(tmp / "home")
    os.environ["DOCKER_HOST"] = "unix:///nonexistent"  # prove no engine is involved
    from builder.cli import main as swcli
    from builder.images import dataset_layers as dl
    from builder.registry.client import RegistryClient
    from builder.evaluate.model_eval import EvalOptions, evaluate
    from builder.store import Store
    from tests.registry_servers import Registry

    started = time.perf_counter()
    path = project(tmp / "ds", args.size_mb, args.volume, args.layer)
    assert swcli(["dataset", "build", str(path), "--no-load"]) == 0
    assert swcli(["model", "build", "--no-image", "--skip-gen-env", str(model(tmp / "model"))]) == 0
    entry = Store().resolve("model", "firstbyte").path
    print(f"made {args.size_mb} MB dataset and model in {time.perf_counter() - started:.1f} s")
    registry = Registry(tmp / "registry")
    try:
        ref = f"{registry.address}/bench/synth:v1"
        assert swcli(["dataset", "push", "synth", ref]) == 0
        client = RegistryClient(registry.address)
        manifest = json.loads(client.get_manifest("bench/synth", "v1").data)
        config = manifest["config"]
        buf = io.BytesIO()
        client.fetch_blob("bench/synth", config["digest"], buf)
        count = int(json.loads(buf.getvalue())["config"]["Labels"][dl.LAYERS_LABEL])
        volume_layers = manifest["layers"][-1 - count:-1]
        dataset_bytes = sum(layer["size"] for layer in manifest["layers"][-1 - count:])
        biggest = max(layer["size"] for layer in volume_layers)
        print(f"image: {count} volume layers + meta, dataset layers {dataset_bytes / 1e6:.1f} MB (as pushed), "
              f"largest layer {biggest / 1e6:.1f} MB")
        print(f"{'run':28s} {'blobs':>6s} {'MB got':>9s} {'target MB':>10s} {'seconds':>8s}  ok")
        ok = True
        target = dataset_bytes / args.shards + biggest
        for index in range(args.shards):
            since = len(registry.log.read_text())
            t0 = time.perf_counter()
            # a fresh store, so a fresh cache, per shard, as N pods have; the model is the built entry's folder
            evaluate(EvalOptions(model=str(entry), dataset=ref, shard=f"{index}/{args.shards}",
                                 output_dir=tmp / "out" / str(index), record=False), store=Store(tmp / f"pod{index}"))
            seconds = time.perf_counter() - t0
            time.sleep(0.3)  # the access log line is written as the request completes
            got = blob_gets(registry.log, since)
            fetched = sum(n for _, n in got)
            ok &= fetched <= target
            print(f"{f'eval --shard {index}/{args.shards}':28s} {len(got):6d} {fetched / 1e6:9.1f} {target / 1e6:10.1f} "
                  f"{seconds:8.2f}  {'OK' if fetched <= target else 'MISSED'}")
        since = len(registry.log.read_text())
        t0 = time.perf_counter()
        evaluate(EvalOptions(model=str(entry), dataset=ref, shard=f"0/{args.shards}", output_dir=tmp / "out" / "again",
                             record=False), store=Store(tmp / "pod0"))
        seconds = time.perf_counter() - t0
        time.sleep(0.3)
        got = blob_gets(registry.log, since)
        print(f"{'same slice, warm cache':28s} {len(got):6d} {sum(n for _, n in got) / 1e6:9.1f} {0:10.1f} "
              f"{seconds:8.2f}  {'OK' if not got else 'MISSED'}")
        print("target met" if ok and not got else "target MISSED")
    finally:
        registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
