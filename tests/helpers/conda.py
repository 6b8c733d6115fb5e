"""A conda-format env as conda leaves it (package records in conda-meta), built by hand: no conda needed."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write(path: Path, text: str = "x", size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() + b"\0" * size)
    return path


def make_conda_env(root: Path, python_version: str = "3.11.2") -> Path:
    """A conda-format env as conda leaves it: package records in conda-meta listing their files.

    The interpreter is the Debian base image's python3 (an absolute link), so the packed env runs there.
    """
    files = {
        "python": ["bin/python3"],
        "hello": ["lib/python3.11/site-packages/hello/__init__.py", "share/hello/data.txt"],
    }
    (root / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", root / "bin" / "python3")
    write(root / "lib/python3.11/site-packages/hello/__init__.py", f"PREFIX = '{root}'\n")
    write(root / "share/hello/data.txt", "hello")
    (root / "conda-meta").mkdir()
    versions = {"python": python_version, "hello": "1.0"}
    for name, paths in files.items():
        record = {"name": name, "version": versions[name], "build": "0", "url": f"https://example.invalid/{name}",
                  "link": None, "files": paths}
        (root / "conda-meta" / f"{name}-{versions[name]}-0.json").write_text(json.dumps(record))
    return root
