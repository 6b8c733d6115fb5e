#!/usr/bin/env python3
"""Put CIFAR-10 at data/cifar-10-batches-py, from the first source that works.

1. data/cifar-10-batches-py already there: nothing to do.
2. CIFAR10_TAR (env or --tar) names a tarball:
   - the original `cifar-10-python.tar.gz`: extracted;
   - a tarball of the images as JPEG folders (`<split>/<class>/*.jpg`, this repository's development copy at
     ../shared/data/cifar-10-images.tar.gz): converted to the same pickle layout by CIFAR10_CONVERTER
     (default ../shared/tools/cifar10_batches.py; needs numpy and pillow, ~10 s).
3. Otherwise download the original from the CIFAR-10 site (163 MB) and check its md5.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
REPO = HERE.parent.parent
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES = "cifar-10-batches-py"


def is_python_release(tar: tarfile.TarFile) -> bool:
    return any(m.name.endswith(f"{BATCHES}/test_batch") for m in tar.getmembers())


def extract_python_release(tar: tarfile.TarFile, data_dir: Path) -> None:
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        members = [m for m in tar.getmembers() if BATCHES in m.name and m.isfile()]
        tar.extractall(tmp, members=members, filter="data")
        found = next(Path(tmp).rglob("test_batch")).parent
        found.rename(data_dir / BATCHES)


def convert_images(tar_path: Path, data_dir: Path, converter: Path) -> None:
    if not converter.is_file():
        raise SystemExit(f"{tar_path} holds JPEG images; the converter {converter} is missing (set CIFAR10_CONVERTER)")
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        subprocess.run([sys.executable, str(converter), tmp, "--tar", str(tar_path)], check=True)
        (Path(tmp) / BATCHES).rename(data_dir / BATCHES)


def download(data_dir: Path) -> Path:
    target = data_dir / "cifar-10-python.tar.gz"
    print(f"downloading {URL} ...")
    try:
        with urllib.request.urlopen(URL, timeout=60) as resp, open(target.with_suffix(".part"), "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as err:
        raise SystemExit(f"cannot download CIFAR-10 ({err}); set CIFAR10_TAR to a local copy") from None
    digest = hashlib.md5(target.with_suffix(".part").read_bytes()).hexdigest()
    if digest != MD5:
        raise SystemExit(f"downloaded file has md5 {digest}, expected {MD5}")
    target.with_suffix(".part").rename(target)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE / "data")
    ap.add_argument("--tar", type=Path, default=os.environ.get("CIFAR10_TAR") or None)
    ap.add_argument("--converter", type=Path,
                    default=os.environ.get("CIFAR10_CONVERTER") or REPO.parent / "shared" / "tools" / "cifar10_batches.py")
    args = ap.parse_args()
    data_dir = args.data_dir
    if (data_dir / BATCHES / "test_batch").is_file():
        print(f"{data_dir / BATCHES} is ready")
        return 0
    data_dir.mkdir(parents=True, exist_ok=True)
    tar_path = args.tar if args.tar and args.tar.is_file() else None
    if args.tar and tar_path is None:
        print(f"CIFAR10_TAR={args.tar} does not exist; downloading instead", file=sys.stderr)
    if tar_path is None:
        tar_path = download(data_dir)
    with tarfile.open(tar_path) as tar:
        if is_python_release(tar):
            extract_python_release(tar, data_dir)
        else:
            convert_images(tar_path, data_dir, args.converter)
    print(f"{data_dir / BATCHES} is ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
