"""`swcli gc`: reclaim the disk that nothing in the store needs any more.

Removed: blobs of the store's OCI layout that no ref of ``index.json`` reaches (through its manifests and configs),
that the layer cache does not name, and that no live process has pinned (a build or pull that is about to tag
them: :meth:`builder.images.oci.Layout.collect`); temp blobs and `copy` temp files of processes that are gone; and
staging folders no live process holds (:meth:`builder.store.Store.clean_stale_staging`). Store entries, runs and
tagged images are never touched. It runs under the layout's exclusive gc lock, so it is safe beside any other
swcli command.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GcResult:
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0
    staging: list[Path] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)


def _stale_copy_temps(folder: Path) -> tuple[list[Path], int]:
    """`swcli copy` temp files (``.copy-<pid>-XXXX``) whose process is gone."""
    from builder.files import pid_alive

    removed, freed = [], 0
    for path in sorted(folder.glob(".copy-*")) if folder.is_dir() else []:
        pid = path.name.split("-")[1]
        if pid.isdigit() and not pid_alive(int(pid)) and not path.is_symlink():
            with contextlib.suppress(OSError):
                size = path.lstat().st_size
                os.unlink(path)
                removed.append(path)
                freed += size
    return removed, freed


def collect_garbage(store=None, layout=None) -> GcResult:
    """Remove what nothing needs (see the module docstring) and say what was freed."""
    from builder.store import Store

    store = store or Store()
    layout = layout or store.layout
    result = GcResult()
    result.staging = store.clean_stale_staging()
    result.temp_files, result.bytes = _stale_copy_temps(store.tmp_dir)
    if layout.blobs.is_dir():
        blobs, freed = layout.collect()
        result.blobs, result.bytes = blobs, result.bytes + freed
    return result
