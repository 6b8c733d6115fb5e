#!/usr/bin/env python3
"""Image build times for the CIFAR example with the torch CPU env (~1 GB), beside a naive build, in one run.

swcli: the runtime image (env split into layers + swcli layer), the model image on it, then a code-only rebuild.
naive: one Dockerfile that COPYs the whole venv and the code into the base image, built the same way (docker-py,
legacy builder), full and after the same code-only change. Prints seconds and image sizes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._cifar import example_copy  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def naive_build(client, venv: Path, project: Path, tag: str, nocache: bool = False) -> float:
    """FROM base; COPY venv; COPY code: the whole env travels in the context on every build."""
    from builder.images import context as ctx
    from builder.images.engine import build_image

    dockerfile = (b"FROM swcli/base:bookworm-py3.11\nCOPY venv/ /opt/venv/\nCOPY code/ /opt/model/\n"
                  b"ENV PYTHONPATH=/opt/venv/lib/python3.11/site-packages\n")
    entries = ctx.from_tree("venv", venv) + ctx.from_tree("code", project) + [ctx.from_bytes("Dockerfile", dockerfile)]
    entries = [e for e in entries if "__pycache__" not in e.arcname]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as tar:
        ctx.write_context_tar(entries, tar)
        tar.seek(0)
        build_image(client, tar, [tag], nocache=nocache)
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(sys.prefix), help="the env to ship (default: this one)")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    from builder.images.build import build_model_image, build_runtime_image
    from builder.images.engine import connect
    from builder.services.model_build import build_model

    client = connect(timeout=600)
    project = example_copy()
    weights = project / "models" / "cifar_net.pth"
    if not weights.exists():
        import torch

        sys.path.insert(0, str(project))
        from code.cnn import Net

        weights.parent.mkdir(exist_ok=True)
        torch.save(Net().state_dict(), weights)
    tags = []
    (runtime, manifest), t_runtime = timed(lambda: build_runtime_image("bench-env", args.venv, client=client, nocache=True))
    tags += runtime.tags
    size = client.images.get(runtime.tags[0]).attrs["Size"]
    entry = build_model(project, skip_gen_env=True).entry
    model, t_model = timed(lambda: build_model_image(entry, runtime.tags[0], client=client))
    tags += model.tags
    with open(project / "code" / "ppl.py", "a") as fh:
        fh.write("\n# code-only change\n")
    entry2 = build_model(project, skip_gen_env=True).entry
    model2, t_code = timed(lambda: build_model_image(entry2, runtime.tags[0], client=client))
    tags += model2.tags
    layers = ", ".join(f"{l['dir'].split('/')[-1]} {l['size'] / 1e6:.0f} MB" for l in manifest["layers"])
    print(f"env {args.venv}: {layers}")
    print(f"swcli runtime image (full, no cache): {t_runtime:6.1f} s   image {size / 1e9:.2f} GB")
    print(f"swcli model image on it:             {t_model:6.1f} s")
    print(f"swcli code-only model rebuild:       {t_code:6.1f} s   (target < 3 s)")
    if not args.skip_naive:
        t_naive = naive_build(client, args.venv, project, "swcli-bench/naive:1", nocache=True)
        with open(project / "code" / "ppl.py", "a") as fh:
            fh.write("# another code-only change\n")
        t_naive_code = naive_build(client, args.venv, project, "swcli-bench/naive:2")
        tags += ["swcli-bench/naive:1", "swcli-bench/naive:2"]
        print(f"naive single Dockerfile (full, no cache): {t_naive:6.1f} s")
        print(f"naive code-only rebuild:             {t_naive_code:6.1f} s")
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
