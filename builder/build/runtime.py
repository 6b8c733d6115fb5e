"""`swcli runtime build`: snapshot a venv or conda env onto a base image and record the runtime in the store.

Sources, in order: `--venv PATH`, `--conda-prefix PATH`, a `runtime.yaml` (whose `requirements` are resolved
into a cached host venv, so nothing is pip-installed inside an image build), or the current environment.
A `runtime.yaml` in the folder also gives the name and base image whenever it is there; flags win.
The store entry is the manifest (layers, lock, image tag): the image itself is the snapshot. The lock is
:func:`builder.build.env_lock.export_env_lock`'s, exported once per build.
:func:`read_runtime_sbom` is `swcli runtime info --sbom`: the SBOM file's bytes exactly as the image holds them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from builder.errors import SpecError, SwcliError, UsageError
from builder.build.entry_image import image_for
from builder.build.env_lock import EnvLock, export_env_lock
from builder.images.build import DEFAULT_BASE, ImageResult
from builder.images.runtime_image import build_runtime_image
from builder.images.env import RuntimeError_, current_env_prefix, env_mode
from builder.refs import image_ref_problem, name_problem
from builder.spec import spec_file
from builder.yamldoc import Field, check_fields, read_yaml_mapping
from builder.files import write_json_atomic
from builder.store import Entry, Store, utc_now

RUNTIME_FIELDS = {
    "name": Field((str,), required=True),
    "mode": Field((str,), default="venv", help="venv or conda"),
    "python": Field((str, float), default="3.11"),
    "base_image": Field((str,), default=DEFAULT_BASE),
    "requirements": Field((str, list), default=None, help="a requirements file or a list of requirements"),
    "conda_prefix": Field((str,), default=None),
    "desc": Field((str,), default=""),
    "system_packages": Field((list,), default=None, help="Debian packages added to swcli's base, e.g. [libgl1]"),
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
    system_packages: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # yaml key -> line, for errors

    def error(self, message: str, key: str) -> SpecError:
        return SpecError(self.path, message, field=key, line=self.lines.get(key))


def load_runtime_spec(path: str | Path) -> RuntimeSpec:
    """Parse and check runtime.yaml; whether it can give an env by itself is :func:`_env_from_spec`'s question."""
    file = spec_file(path, "runtime.yaml", "swcli runtime build")
    doc = read_yaml_mapping(file)
    v = check_fields(doc, doc.data, RUNTIME_FIELDS)
    if problem := name_problem(v["name"]):
        raise doc.error(problem, "name")
    if problem := image_ref_problem(v["base_image"]):
        raise doc.error(problem, "base_image")
    if v["mode"] not in ("venv", "conda"):
        raise doc.error(f"expected 'venv' or 'conda', got {v['mode']!r}", "mode")
    python = str(v["python"])
    if isinstance(v["python"], float) and len(python.partition(".")[2]) == 1:
        raise doc.error(f"{v['python']} is read as a number; quote the version (e.g. python: '{python}0')", "python")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise doc.error(f"expected a Python major.minor version such as '3.11', got {python!r}", "python")
    reqs = v["requirements"]
    if isinstance(reqs, str):
        req_file = (file.parent / reqs)
        if not req_file.is_file():
            raise doc.error(f"{req_file} does not exist", "requirements")
        reqs = [line.strip() for line in req_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    prefix = (file.parent / v["conda_prefix"]).resolve() if v["conda_prefix"] else None
    system = tuple(v["system_packages"] or ())
    if system:
        from builder.images.base import PackageNameError, package_list

        if v["base_image"] != DEFAULT_BASE:
            raise doc.error("system_packages extend swcli's Debian base; drop base_image or the packages", "system_packages")
        try:
            package_list([p if isinstance(p, str) else repr(p) for p in system])
        except PackageNameError as err:
            raise doc.error(str(err), "system_packages") from None
    return RuntimeSpec(file, v["name"], v["mode"], python, v["base_image"], [str(r) for r in reqs or []], prefix,
                       tuple(system), doc.lines)


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
        raise spec.error(f"resolving needs a host Python {spec.python}; this is {host_minor}", "python")
    tmp = venv.with_name(key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _venv_step(spec, tmp, "could not create the venv", [sys.executable, "-m", "venv", str(tmp)])
    _venv_step(spec, tmp, "pip could not install the requirements",
               [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                *spec.requirements])
    (tmp / ".swcli-complete").write_text(utc_now())
    shutil.rmtree(venv, ignore_errors=True)
    tmp.rename(venv)
    # a venv's scripts hard-code its path: recreate the interpreter links at the final place
    _venv_step(spec, venv, "could not move the venv into place", [sys.executable, "-m", "venv", "--upgrade", str(venv)])
    return venv


def _venv_step(spec: RuntimeSpec, venv: Path, failed: str, cmd: list[str]) -> None:
    """Run one step of resolving ``venv``. A failure removes the venv (the next build starts afresh) and is one
    :class:`EnvResolveError` line: the runtime.yaml, what failed, the command, its exit code and the last error line
    of its stderr (pip's last ``ERROR`` line, else the last line)."""
    shown = " ".join(cmd[:1] + cmd[1:4])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    except OSError as err:
        shutil.rmtree(venv, ignore_errors=True)
        raise EnvResolveError(f"{spec.path}: {failed}: '{shown}' could not run: {err}") from None
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        last = ([line for line in lines if "ERROR" in line] or lines or ["no output"])[-1].strip()
        raise EnvResolveError(f"{spec.path}: {failed}: '{shown}' exited {proc.returncode}: {last}")


BASE_STEP = "building the Debian base image (first time, ~40 s)"


def build_base_first(layout, base_image: str, packages: tuple[str, ...] = (),
                     on_step: Callable[[str], None] | None = None) -> None:
    """Write swcli's Debian base (or its ``packages`` variant) into ``layout`` now, saying so with ``on_step``, when
    building on ``base_image`` would first run mmdebstrap (half a minute, once per machine); the image build that
    follows finds it there. Nothing when the base is another image, or is written already, or cannot be built here."""
    from builder.images.base_image import can_build_rootfs, ensure_base, rootfs_cached
    from builder.images.image import read_image

    if on_step is None or base_image != DEFAULT_BASE or rootfs_cached(packages) or not can_build_rootfs():
        return
    if not packages and read_image(layout, base_image) is not None:
        return
    on_step(BASE_STEP)
    ensure_base(layout, packages, refs=() if packages else (base_image,))


def build_runtime(name: str | None = None, prefix: Path | None = None, *, spec_dir: Path | None = None,
                  base_image: str | None = None, store: Store | None = None, dockerfile_only: Path | None = None,
                  client=None, log=None, nocache: bool = False, skip_gen_env: bool = False, load: bool = True,
                  verify: bool = False, env_lock: Callable[[Path], EnvLock] = export_env_lock,
                  on_step: Callable[[str], None] | None = None, step: str | None = None) -> tuple[Entry | None, ImageResult]:
    """Build `swrt/<name>` from an env (explicit, runtime.yaml, or the current one) and record it.

    A runtime.yaml in ``spec_dir`` gives the name and base image (``name``/``base_image`` win) and, when no
    ``prefix`` is given, the env. The lock is exported once and goes into both the image and the store entry.
    """
    store = store or Store()
    if dockerfile_only is not None:  # a used folder fails before an env is resolved or locked, not after
        from builder.images.context import check_context_dir

        check_context_dir(dockerfile_only)
    spec = _spec_in(spec_dir, required=prefix is None)
    system_packages: tuple[str, ...] = ()
    if spec is not None:
        system_packages = spec.system_packages
        name = name or spec.name
        base_image = base_image or spec.base_image
        if prefix is None:
            prefix = _env_from_spec(spec, store)
    if not name:
        raise UsageError("a runtime needs a name: pass --name or write runtime.yaml")
    if problem := name_problem(name):
        raise SwcliError(f"runtime name: {problem}")
    prefix = Path(prefix) if prefix else current_env_prefix()
    if not prefix.is_dir():
        raise RuntimeError_(f"{prefix}: environment folder does not exist")
    env_mode(prefix)  # not an env: say so before running pip in it
    lock = None if skip_gen_env else env_lock(prefix)
    if dockerfile_only is None:  # the long steps of an image build, named as they start
        build_base_first(store.layout, base_image or DEFAULT_BASE, system_packages, on_step)
        if on_step is not None:
            on_step(step or f"building runtime {name}")
    result, manifest = build_runtime_image(name, prefix, base_image=base_image or DEFAULT_BASE,
                                           lock_text=lock.text if lock else "", client=client,
                                           dockerfile_only=dockerfile_only, log=log, nocache=nocache, load=load,
                                           verify=verify, system_packages=system_packages, layout=store.layout)
    if dockerfile_only is not None:
        return None, result
    manifest["created"] = utc_now()
    manifest["env_lock"] = lock.kind if lock else None
    with store.stage("runtime") as staged:
        if lock is not None:
            (staged / "env.lock").write_text(lock.text, encoding="utf-8")
        write_json_atomic(staged / "manifest.json", manifest)
        entry = store.publish("runtime", name, manifest["version"], staged)
    return entry, result


def _spec_in(spec_dir: Path | None, *, required: bool) -> RuntimeSpec | None:
    """The runtime.yaml of ``spec_dir`` (a folder or the file itself); None when there is none and none is needed."""
    if spec_dir is None:
        return None
    spec_dir = Path(spec_dir)
    if not required and spec_dir.is_dir() and not (spec_dir / "runtime.yaml").is_file():
        return None
    return load_runtime_spec(spec_dir)


def _env_from_spec(spec: RuntimeSpec, store: Store) -> Path:
    """The env runtime.yaml describes by itself: its conda_prefix, or its requirements resolved into a venv."""
    if spec.mode == "conda":
        if spec.conda_prefix is None:
            raise spec.error("conda channels are not resolved by swcli; give an existing env as conda_prefix "
                            "(or use --conda-prefix PATH)", "conda_prefix")
        return spec.conda_prefix
    if not spec.requirements:
        raise spec.error("a venv runtime.yaml needs requirements (or use --venv PATH)", "requirements")
    return resolved_venv(spec, store)


def runtime_for_model(entry: Entry, runtime: str | None = None, *, store: Store | None = None,
                      dockerfile_only: Path | None = None, log=None, skip_gen_env: bool = False, load: bool = True,
                      on_step: Callable[[str], None] | None = None) -> str:
    """The runtime image a model image is built FROM.

    `--runtime` (a runtime ref or an image), else model.yaml's `run.runtime`, else a runtime made from the model's
    `pip_req` (resolved into a cached host venv), else one made from the current environment.
    """
    store = store or Store()
    ref = runtime or entry.manifest.get("runtime")
    if ref:
        return image_for("runtime", ref, store)
    pip_req = (entry.manifest.get("spec") or {}).get("pip_req")
    req_file = entry.path / "src" / pip_req if pip_req else None
    prefix, name = None, f"{entry.name}-env"
    say = on_step or (lambda message: None)
    if req_file is not None and req_file.is_file():
        requirements = [line.strip() for line in req_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
        spec = RuntimeSpec(req_file, name, "venv", f"{sys.version_info.major}.{sys.version_info.minor}",
                           DEFAULT_BASE, requirements, None)
        say(f"resolving {pip_req} of model {entry.name} into a venv (cached)")
        prefix = resolved_venv(spec, store)
        if dockerfile_only is None:
            reused = _reuse_runtime(prefix, name, store, load=load, log=log)
            if reused:
                return reused
    # `--skip-gen-env` is about the user's own env; a venv swcli resolved from pip_req always records its lock
    source = "its pip_req" if prefix is not None else "the current environment"
    built, image = build_runtime(name, prefix, store=store, dockerfile_only=dockerfile_only, log=log,
                                 skip_gen_env=skip_gen_env and prefix is None, load=load, on_step=on_step,
                                 step=f"building runtime {name} for model {entry.name} (from {source})")
    if prefix is not None and built is not None:
        write_json_atomic(prefix / RUNTIME_MEMO, {"name": built.name, "version": built.version, "image": image.tags[0]})
    return image.tags[0]


RUNTIME_MEMO = ".swcli-runtime.json"  # in a venv swcli resolved (and never changes): the runtime built from it


def _reuse_runtime(prefix: Path, name: str, store: Store, *, load: bool, log=None) -> str | None:
    """The runtime image already built from the resolved venv ``prefix``, made present in the engine when
    ``load``; None when there is none (or it is gone from the store), so it is built."""
    from builder.images.image import read_image

    try:
        memo = json.loads((prefix / RUNTIME_MEMO).read_text(encoding="utf-8"))
        store.resolve("runtime", f"{memo['name']}:{memo['version']}")
    except (OSError, ValueError, KeyError, TypeError, SwcliError):
        return None
    layout = store.layout
    image = read_image(layout, memo["image"]) if memo.get("name") == name else None
    if image is None:
        return None
    if load:
        from builder.images.daemon import load as load_into
        from builder.images.engine import connect

        load_into(connect(), layout, image, [memo["image"], memo["image"].rsplit(":", 1)[0] + ":latest"], log=log)
    return memo["image"]


class SbomMissingError(SwcliError):
    """A runtime whose image is not in the store's OCI layout, or has no SBOM (built before swcli wrote one)."""


def read_runtime_sbom(ref: str, *, store: Store | None = None, layout=None) -> bytes:
    """The CycloneDX SBOM of runtime ``ref``, read from its image's layers in the store (the exact bytes)."""
    from builder.images.image import read_image
    from builder.images.sbom import SBOM_PATH, read_sbom

    store = store or Store()
    entry = store.resolve("runtime", ref)
    layout = layout or store.layout
    tag = entry.manifest.get("image")
    image = read_image(layout, tag) if isinstance(tag, str) else None
    if image is None:
        raise SbomMissingError(f"runtime {entry.ref}: its image {tag} is not in the store ({layout.root}); "
                               f"build it again with `swcli runtime build`")
    data = read_sbom(layout, image)
    if data is None:
        raise SbomMissingError(f"runtime {entry.ref}: image {tag} has no {SBOM_PATH} (built before swcli wrote "
                               f"SBOMs); build it again with `swcli runtime build`")
    return data
