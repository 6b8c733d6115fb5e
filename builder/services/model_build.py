"""Building a model: snapshot the source tree and the weights into the store, with the environment lock.

The handler is checked without importing it (``ast``), so a build never runs user code or imports torch just
to find a typo in ``run.ppl``. Files are streamed (weights can be gigabytes) and hashed as they are copied; the
version is derived from every file's path, exec bit and content plus the yaml, so the same tree gives the same
version. The environment lock is recorded but not hashed: re-locking the same env must not re-version a model.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from builder import __version__
from builder.errors import SpecError, SwcliError
from builder.snapshot import SourceFile, walk_source
from builder.spec import ModelSpec, load_model_spec
from builder.store import Entry, Store, make_version, utc_now, write_json_atomic

Progress = Callable[[int], None]
CHUNK = 1 << 20


class EnvLockError(SwcliError):
    """Exporting the environment lock failed."""


@dataclass(frozen=True)
class ModelBuildResult:
    entry: Entry
    files: int
    weight_bytes: int
    seconds: float
    notes: list[str]


def check_handler_source(spec: ModelSpec) -> Path:
    """The file that defines ``run.ppl``'s class, found and parsed without importing it."""
    module, _, name = spec.ppl.partition(":")
    base = spec.root.joinpath(*module.split("."))
    candidates = [base.with_suffix(".py"), base / "__init__.py"]
    source = next((c for c in candidates if c.is_file()), None)
    if source is None:
        raise SpecError(spec.path, f"module '{module}' not found (looked for {candidates[0].relative_to(spec.root)})", field="run.ppl")
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except SyntaxError as err:
        raise SpecError(spec.path, f"{source}:{err.lineno}: syntax error: {err.msg}", field="run.ppl") from None
    bound = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    if name not in bound:
        raise SpecError(spec.path, f"{source.relative_to(spec.root)} defines no '{name}'", field="run.ppl")
    return source


def _roles(spec: ModelSpec) -> Callable[[str], str]:
    def role(rel: str) -> str:
        for group, paths in (("weights", spec.model), ("config", spec.config)):
            if any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths):
                return group
        return "code"

    return role


def _check_listed_files(spec: ModelSpec) -> None:
    for key, paths in (("model", spec.model), ("config", spec.config)):
        for rel in paths:
            if not (spec.root / rel).exists():
                raise SpecError(spec.path, f"'{rel}' does not exist under {spec.root}", field=key)


def _copy_and_hash(src: SourceFile, dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.link is not None:
        os.symlink(src.link, dest)
        return hashlib.sha256(b"symlink:" + src.link.encode()).hexdigest()
    sha = hashlib.sha256()
    with open(src.path, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(CHUNK):
            sha.update(block)
            fout.write(block)
    os.chmod(dest, 0o755 if src.executable else 0o644)
    return sha.hexdigest()


def export_env_lock() -> tuple[str, str]:
    """``(kind, text)``: ``conda env export`` inside an active conda env with conda on PATH, else ``pip freeze``."""
    if os.environ.get("CONDA_PREFIX") and shutil.which("conda"):
        cmd, kind = ["conda", "env", "export", "--prefix", os.environ["CONDA_PREFIX"]], "conda-env-export"
    else:
        cmd, kind = [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], "pip-freeze"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvLockError(f"exporting the environment lock ({' '.join(cmd)}) failed: {err}; use --skip-gen-env") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvLockError(f"'{' '.join(cmd)}' exited {proc.returncode}: {last}; use --skip-gen-env to build without a lock")
    return kind, proc.stdout


def build_model(
    directory: str | Path,
    *,
    skip_gen_env: bool = False,
    store: Store | None = None,
    progress: Progress | None = None,
    env_lock: Callable[[], tuple[str, str]] = export_env_lock,
) -> ModelBuildResult:
    """Snapshot the model folder into the store and return its entry."""
    started = time.perf_counter()
    store = store or Store()
    directory = Path(directory)
    if directory.is_dir() and not (directory / "model.yaml").is_file():
        raise SpecError(directory / "model.yaml", f"no model.yaml in {directory}")
    spec = load_model_spec(directory)
    check_handler_source(spec)
    _check_listed_files(spec)
    files = walk_source(spec.root, always_include=spec.model + spec.config)
    role = _roles(spec)
    lock_kind, lock_text = (None, None) if skip_gen_env else env_lock()

    digest = hashlib.sha256(json.dumps(spec.raw, sort_keys=True, default=str).encode())
    with store.stage("model") as staged:
        listing = []
        copied = 0
        for src in files:
            sha = _copy_and_hash(src, staged / "src" / src.rel)
            listing.append({"path": src.rel, "size": src.size, "sha256": sha, "role": role(src.rel),
                            "executable": src.executable, **({"link": src.link} if src.link else {})})
            digest.update(f"{src.rel}\0{int(src.executable)}\0{sha}\n".encode())
            copied += src.size
            if progress:
                progress(copied)
        if lock_text is not None:
            (staged / "env.lock").write_text(lock_text, encoding="utf-8")
        version = make_version(digest.digest())
        totals = {r: sum(f["size"] for f in listing if f["role"] == r) for r in ("code", "weights", "config")}
        manifest = {
            "kind": "model",
            "name": spec.name,
            "version": version,
            "created": utc_now(),
            "model_version": spec.version,
            "handler": spec.ppl,
            "runtime": spec.runtime,
            "desc": spec.desc,
            "tag": spec.tag,
            "spec": spec.raw,
            "files": listing,
            "totals": {"files": len(listing), "bytes": sum(totals.values()), **{f"{k}_bytes": v for k, v in totals.items()}},
            "env_lock": lock_kind,
            "notes": spec.notes,
            "build_seconds": round(time.perf_counter() - started, 3),
            "swcli_version": __version__,
        }
        write_json_atomic(staged / "manifest.json", manifest)
        entry = store.publish("model", spec.name, version, staged)
    return ModelBuildResult(entry, len(listing), totals["weights"], time.perf_counter() - started, spec.notes)


def model_source(ref_or_dir: str | Path, store: Store | None = None) -> tuple[Path, ModelSpec, dict]:
    """Where a model's code lives and its spec: a source dir (model.yaml), a store entry dir, or a store ref."""
    path = Path(ref_or_dir).expanduser()
    if (path / "model.yaml").is_file():
        spec = load_model_spec(path)
        return spec.root, spec, {"name": spec.name, "version": None, "source": str(spec.root)}
    if (path / "manifest.json").is_file():
        from builder.store import read_entry

        entry = read_entry("model", path.resolve())
    elif path.is_dir():
        raise SpecError(path / "model.yaml", f"{path} holds neither model.yaml nor a model manifest.json")
    else:
        entry = (store or Store()).resolve("model", str(ref_or_dir))
    root = entry.path / "src"
    spec = load_model_spec(root)
    return root, spec, {"name": entry.name, "version": entry.version, "ref": entry.ref}
