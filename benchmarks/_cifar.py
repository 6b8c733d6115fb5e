"""Shared set-up for the benchmarks: the real CIFAR-10 test batch, a temp store, a temp copy of the example."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cifar10"
BATCHES = EXAMPLE / "data" / "cifar-10-batches-py"


def ensure_batches() -> Path:
    """The example's data folder, fetched/converted by its own script when missing."""
    if not (BATCHES / "test_batch").is_file():
        env = dict(os.environ)
        env.setdefault("CIFAR10_TAR", str(REPO.parent / "shared" / "data" / "cifar-10-images.tar.gz"))
        env.setdefault("CIFAR10_CONVERTER", str(REPO.parent / "shared" / "tools" / "cifar10_batches.py"))
        subprocess.run([sys.executable, str(EXAMPLE / "scripts" / "get_data.py")], check=True, env=env)
    return BATCHES


def example_copy() -> Path:
    """A throwaway copy of the example whose data/ links to the real batches; SWCLI_HOME points inside it."""
    work = Path(tempfile.mkdtemp(prefix="swcli-bench-"))
    atexit.register(shutil.rmtree, work, True)  # its store holds the dataset and model: gone when the run ends
    project = work / "cifar10"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (project / "data").mkdir()
    (project / "data" / "cifar-10-batches-py").symlink_to(ensure_batches())
    os.environ["SWCLI_HOME"] = str(work / "home")
    return project
