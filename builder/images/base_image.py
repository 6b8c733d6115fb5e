"""The Debian base image as a layer of ours: the reproducible rootfs tar of ``base.py`` plus a config swcli
writes, in the store's OCI layout. No engine and no `docker build` are involved, so base -> runtime -> model is
written by swcli end to end, and the same package list gives the same base image id on every machine.

``system_packages`` (runtime.yaml) give a variant, tagged by the package list's key; the plain base is
``swcli/base:bookworm-py3.X``. Rootfs tars are cached once per machine (``$SWCLI_BASE_CACHE``, default
``~/.cache/swcli-base``), whatever ``SWCLI_HOME`` is: they are content-keyed, and building one takes mmdebstrap
half a minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from builder.images.image import ConfigChanges, Image, NewLayer, read_image, write_image
from builder.images.layers import LayerCache
from builder.images.oci import MEDIA_LAYER, Descriptor, Layout

DEFAULT_SUITE = "bookworm"
BASE_REPO = "swcli/base"
BASE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}


def base_cache_dir() -> Path:
    env = os.environ.get("SWCLI_BASE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "swcli-base"


def can_build_rootfs() -> bool:
    return shutil.which("mmdebstrap") is not None and os.geteuid() == 0


def base_ref(python: str, packages: Sequence[str] = (), key: str = "") -> str:
    tag = f"{DEFAULT_SUITE}-py{python}"
    return f"{BASE_REPO}:{tag}-{key[:12]}" if packages else f"{BASE_REPO}:{tag}"


def rootfs_cached(packages: Sequence[str] = ()) -> bool:
    """Whether the rootfs tar for ``packages`` is in this machine's cache (else writing the base runs mmdebstrap)."""
    from builder.images.base import cache_key, package_list

    return (base_cache_dir() / f"{cache_key(DEFAULT_SUITE, package_list(packages))}.tar").is_file()


def rootfs_available(packages: Sequence[str] = ()) -> bool:
    """Whether the rootfs for ``packages`` is cached here or can be built (mmdebstrap, as root)."""
    return can_build_rootfs() or rootfs_cached(packages)


def _tar_blob(layout: Layout, tar: Path) -> Descriptor:
    """The rootfs tar as a layer blob: hard-linked into the layout when it can be (every store of a machine shares
    the 220 MB), else copied. Its digest is remembered beside the cached tar."""
    from builder.files import sha256_file

    memo = tar.with_suffix(".sha256")
    size = tar.stat().st_size
    try:
        digest = memo.read_text().strip()
    except OSError:
        digest = "sha256:" + sha256_file(tar)
        with contextlib.suppress(OSError):
            memo.write_text(digest + "\n")
    if not layout.has(digest, size):
        layout.blobs.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tar, layout.blob_path(digest))
        except OSError:
            with layout.writer(MEDIA_LAYER) as out, open(tar, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
            return out.descriptor
    return Descriptor(MEDIA_LAYER, digest, size)


def main(argv: list[str] | None = None) -> int:
    """`python -m builder.images.base_image [--load] [--tag T]`: the default base in the store (and the engine)."""
    import argparse
    import sys

    from builder.errors import SwcliError

    ap = argparse.ArgumentParser(prog="python -m builder.images.base_image", description=main.__doc__)
    ap.add_argument("--load", action="store_true", help="also load it into the Docker engine under --tag")
    ap.add_argument("--tag", default=f"{BASE_REPO}:{DEFAULT_SUITE}-py3.11")
    args = ap.parse_args(argv)
    try:
        from builder.store import Store

        layout = Store().layout
        image = ensure_base(layout, refs=[args.tag], log=lambda line: print(line, file=sys.stderr))
        sent = None
        if args.load:
            from builder.images.daemon import load
            from builder.images.engine import connect

            sent = load(connect(), layout, image, [args.tag]).bytes_sent
    except SwcliError as err:
        print(f"swcli: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"base image {args.tag}: id {image.image_id[:19]}" + (f", {sent} bytes sent to the engine" if args.load else ""))
    return 0


def ensure_base(layout: Layout, packages: Sequence[str] = (), *, log: Callable[[str], None] | None = None,
                refs: Sequence[str] = ()) -> Image:
    """The base image for ``packages`` in ``layout``, written from the (cached) rootfs tar when missing."""
    from builder.images.base import base_rootfs

    rootfs = base_rootfs(packages, cache_dir=base_cache_dir(), suite=DEFAULT_SUITE, log=log)
    tags = [base_ref(rootfs.python, packages, rootfs.key), *refs]
    for tag in tags:
        existing = read_image(layout, tag)
        if existing is not None and existing.labels.get("io.swcli.base-key") == rootfs.key:
            for other in tags:
                layout.tag(other, existing.manifest)
            return existing

    cache = LayerCache(layout)
    blob = cache.get(f"base-rootfs-{rootfs.key}")
    if blob is None:
        blob = _tar_blob(layout, rootfs.tar)
        cache.put(f"base-rootfs-{rootfs.key}", blob)
    labels = {"io.swcli.kind": "base", "io.swcli.python": rootfs.python, "io.swcli.base-key": rootfs.key,
              "io.swcli.base-packages": " ".join(rootfs.packages),
              "org.opencontainers.image.description": f"Debian {DEFAULT_SUITE} minbase + {' '.join(rootfs.packages)}"}
    return write_image(layout, None, [NewLayer(blob, f"debian {DEFAULT_SUITE} rootfs ({rootfs.key[:12]})")],
                       ConfigChanges(env=BASE_ENV, labels=labels, cmd=["python3"]), refs=tags)


if __name__ == "__main__":
    raise SystemExit(main())
