"""`swcli runtime build`: snapshot a venv or conda env onto a base image and record the runtime in the store.

Sources, in order: `--venv PATH`, `--conda-prefix PATH`, a `runtime.yaml` (whose `requirements` are resolved
into a cached host venv, so nothing is pip-installed inside an image build), or the current environment.
The store entry is the manifest (layers, lock, image tag): the image itself is the snapshot.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.errors import SwcliError
from builder.images.build import DEFAULT_BASE, ImageResult, build_runtime_image, current_env_prefix
from builder.spec import Field, SpecError, _check_name, check_fields, read_yaml_mapping
from builder.store import Entry, Store, utc_now, write_json_atomic

RUNTIME_FIELDS = {
    "name": Field((str,), required=True),
    "mode": Field((str,), default="venv", help="venv or conda"),
    "python": Field((str, float), default="3.11"),
    "base_image": Field((str,), default=DEFAULT_BASE),
    "requirements": Field((str, list), default=None, help="a requirements file or a list of requirements"),
    "conda_prefix": Field((str,), default=None),
    "desc": Field((str,), default=""),
}


@dataclass(frozen=True)
class RuntimeSpec:
    path: Path
    name: str
    mode: str
    python: str
    base_image: str
    requirements: list[str]
    conda_prefix: Path | None


def load_runtime_spec(path: str | Path) -> RuntimeSpec:
    file = Path(path) / "runtime.yaml" if Path(path).is_dir() else Path(path)
    doc = read_yaml_mapping(file)
    v = check_fields(doc, doc.data, RUNTIME_FIELDS)
    if v["mode"] not in ("venv", "conda"):
        raise doc.error(f"expected 'venv' or 'conda', got {v['mode']!r}", "mode")
    python = str(v["python"])
    reqs = v["requirements"]
    if isinstance(reqs, str):
        req_file = (file.parent / reqs)
        if not req_file.is_file():
            raise doc.error(f"{req_file} does not exist", "requirements")
        reqs = [line.strip() for line in req_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if v["mode"] == "conda" and not v["conda_prefix"]:
        raise doc.error("conda channels are not resolved by swcli; give an existing env as conda_prefix", "conda_prefix")
    if v["mode"] == "venv" and not reqs:
        raise doc.error("a venv runtime.yaml needs requirements (or use --venv PATH)", "requirements")
    prefix = (file.parent / v["conda_prefix"]).resolve() if v["conda_prefix"] else None
    return RuntimeSpec(file, _check_name(doc, v["name"]), v["mode"], python, v["base_image"], [str(r) for r in reqs or []], prefix)


class EnvResolveError(SwcliError):
    """Installing a runtime's requirements into its cached host venv failed."""


def resolved_venv(spec: RuntimeSpec, store: Store) -> Path:
    """A host venv with the spec's requirements, cached by (python, requirements): the second build reuses it."""
    key = hashlib.sha256(("\n".join([spec.python, *sorted(spec.requirements)])).encode()).hexdigest()[:16]
    venv = store.root / "cache" / "envs" / key
    if (venv / ".swcli-complete").is_file():
        return venv
    host_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    if host_minor != spec.python:
        raise SpecError(spec.path, f"resolving needs a host Python {spec.python}; this is {host_minor}", field="python")
    tmp = venv.with_name(key + ".tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
    proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *spec.requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        errors = [line for line in proc.stderr.splitlines() if "ERROR" in line] or proc.stderr.splitlines() or ["no output"]
        raise EnvResolveError(f"{spec.path}: pip could not install the requirements: {errors[-1].strip()}")
    (tmp / ".swcli-complete").write_text(utc_now())
    shutil.rmtree(venv, ignore_errors=True)
    tmp.rename(venv)
    # a venv's scripts hard-code its path: recreate the interpreter links at the final place
    subprocess.run([sys.executable, "-m", "venv", "--upgrade", str(venv)], check=True, capture_output=True)
    return venv


def _lock_for(prefix: Path) -> str:
    """pip freeze of the env; for a conda env without conda on PATH, its package records as an explicit list."""
    records = sorted((prefix / "conda-meta").glob("*.json"))
    if records:
        import json

        lines = ["# conda packages (from conda-meta; conda itself is not installed here)"]
        for rec in records:
            info = json.loads(rec.read_text())
            lines.append(f"{info.get('name')}=={info.get('version')}={info.get('build', '')}")
        return "\n".join(lines) + "\n"
    python = prefix / "bin" / "python"
    if not python.exists():
        return ""
    proc = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=300)
    return proc.stdout if proc.returncode == 0 else ""


def build_runtime(name: str | None = None, prefix: Path | None = None, *, spec_dir: Path | None = None,
                  base_image: str | None = None, store: Store | None = None, dockerfile_only: Path | None = None,
                  client=None, log=None, nocache: bool = False) -> tuple[Entry | None, ImageResult]:
    """Build `swrt/<name>` from an env (explicit, runtime.yaml, or the current one) and record it."""
    store = store or Store()
    if prefix is None and spec_dir is not None:
        spec = load_runtime_spec(spec_dir)
        name = name or spec.name
        base_image = base_image or spec.base_image
        prefix = spec.conda_prefix if spec.mode == "conda" else resolved_venv(spec, store)
    if not name:
        raise SwcliError("a runtime needs a name: pass --name or write runtime.yaml")
    prefix = Path(prefix) if prefix else current_env_prefix()
    result, manifest = build_runtime_image(name, prefix, base_image=base_image or DEFAULT_BASE, lock_text=_lock_for(prefix),
                                           client=client, dockerfile_only=dockerfile_only, log=log, nocache=nocache)
    if dockerfile_only is not None:
        return None, result
    manifest["created"] = utc_now()
    with store.stage("runtime") as staged:
        (staged / "env.lock").write_text(_lock_for(prefix), encoding="utf-8")
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


def runtime_for_model(entry: Entry, runtime: str | None = None, *, store: Store | None = None,
                      dockerfile_only: Path | None = None, log=None) -> str:
    """The runtime image a model image is built FROM.

    `--runtime` (a runtime ref or an image), else model.yaml's `run.runtime`, else a runtime made from the model's
    `pip_req` (resolved into a cached host venv), else one made from the current environment.
    """
    store = store or Store()
    ref = runtime or entry.manifest.get("runtime")
    if ref:
        return runtime_image_for(ref, store)
    pip_req = (entry.manifest.get("spec") or {}).get("pip_req")
    req_file = entry.path / "src" / pip_req if pip_req else None
    prefix = None
    if req_file is not None and req_file.is_file():
        requirements = [line.strip() for line in req_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
        spec = RuntimeSpec(req_file, f"{entry.name}-env", "venv", f"{sys.version_info.major}.{sys.version_info.minor}",
                           DEFAULT_BASE, requirements, None)
        prefix = resolved_venv(spec, store)
    _, image = build_runtime(f"{entry.name}-env", prefix, store=store, dockerfile_only=dockerfile_only, log=log)
    return image.tags[0]
