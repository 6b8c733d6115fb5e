"""`swcli runtime build`: snapshot a venv onto a base image and record the runtime in the store.

The store entry is the manifest (layers, lock, image tag): the image itself is the snapshot, and copying GBs of
an env a second time into the store would only cost disk.
"""

from __future__ import annotations

from pathlib import Path

from builder.images.build import DEFAULT_BASE, ImageResult, build_runtime_image, current_env_prefix
from builder.services.model_build import export_env_lock
from builder.store import Entry, Store, utc_now, write_json_atomic


def _lock_for(prefix: Path) -> str:
    python = prefix / "bin" / "python"
    if not python.exists():
        return ""
    import subprocess

    proc = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=300)
    return proc.stdout if proc.returncode == 0 else ""


def build_runtime(name: str, prefix: Path | None = None, *, base_image: str = DEFAULT_BASE, store: Store | None = None,
                  dockerfile_only: Path | None = None, client=None, log=None) -> tuple[Entry | None, ImageResult]:
    """Build `swrt/<name>` from the venv at ``prefix`` (default: the current env) and record it."""
    store = store or Store()
    prefix = Path(prefix) if prefix else current_env_prefix()
    lock = _lock_for(prefix) if prefix != current_env_prefix() else export_env_lock()[1]
    result, manifest = build_runtime_image(name, prefix, base_image=base_image, lock_text=lock, client=client,
                                           dockerfile_only=dockerfile_only, log=log)
    if dockerfile_only is not None:
        return None, result
    manifest["created"] = utc_now()
    with store.stage("runtime") as staged:
        (staged / "env.lock").write_text(lock, encoding="utf-8")
        write_json_atomic(staged / "manifest.json", manifest)
        entry = store.publish("runtime", name, manifest["version"], staged)
    return entry, result


def runtime_image_for(ref: str, store: Store | None = None) -> str:
    """The image tag a runtime ref names; a ref with a '/' that is not in the store is taken as an image."""
    from builder.errors import RefNotFoundError

    try:
        return (store or Store()).resolve("runtime", ref).manifest["image"]
    except RefNotFoundError:
        if "/" in ref:
            return ref
        raise
