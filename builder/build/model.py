"""Building a model: snapshot the source tree and the weights into the store, with the environment lock.

The handler is checked without importing it (``ast``), so a build never runs user code or imports torch just
to find a typo in ``run.ppl``. Files are streamed (weights can be gigabytes) and hashed as they are copied; the
version is derived from every file's path, exec bit and content, the yaml and the environment lock (its kind and
text, or that there is none), so the same tree and env give the same version whatever the store already holds:
a package's version covers everything in it. Re-locking an unchanged env gives the same text, so the same version.

Every file is read once: the copy hashes it and scans it for credentials (``builder.snapshot``); a finding
refuses the build before anything is published. The result says what went in (count, size, the biggest files),
what the default credential rules left out, and warns when data files, not code or weights, dominate it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from builder import __version__
from builder.errors import SpecError, SwcliError
from builder.snapshot import IGNORE_FILE, SOURCE_SUFFIXES, SecretScanner, SourceFile, SourceWalk, refuse_secrets, walk_source_report
from builder.spec import ModelSpec, load_model_spec
from builder.files import HashingWriter, hash_fd, write_json_atomic
from builder.store import Entry, Store, make_version, utc_now
from builder.build.snapshot_memo import SnapshotMemo

Progress = Callable[[int], None]
CHUNK = 1 << 20


DATA_WARN_BYTES = 1 << 20  # below this a snapshot is small whatever it holds
BIGGEST = 5


@dataclass(frozen=True)
class ModelBuildResult:
    entry: Entry
    files: int
    weight_bytes: int
    seconds: float
    notes: list[str]
    total_bytes: int = 0
    biggest: list[tuple[str, int]] = field(default_factory=list)  # (path, size), largest first
    excluded: list[str] = field(default_factory=list)  # left out by the default credential rules
    warnings: list[str] = field(default_factory=list)


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


# files that are weights even when model.yaml names none: they get the weights layer, so a code-only change
# re-ships only the code layer
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".onnx", ".bin", ".h5", ".pb", ".tflite", ".gguf")


def _roles(spec: ModelSpec) -> Callable[[str], str]:
    def role(rel: str) -> str:
        for group, paths in (("weights", spec.model), ("config", spec.config)):
            if any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths):
                return group
        return "weights" if rel.lower().endswith(WEIGHT_SUFFIXES) else "code"

    return role


def _check_listed_files(spec: ModelSpec) -> None:
    for key, paths in (("model", spec.model), ("config", spec.config)):
        for rel in paths:
            if not (spec.root / rel).exists():
                raise SpecError(spec.path, f"'{rel}' does not exist under {spec.root}", field=key)


SCAN_HEAD = 1 << 20  # the part of a weights file scanned for credentials: its header (safetensors' JSON, a
# pickle's first objects), not gigabytes of tensors no credential pattern is written into; any other file is
# scanned whole
BIG_CHUNK = 8 << 20


def _copy_hash_scan(src: SourceFile, dest: Path, scan_limit: int | None = None) -> tuple[str, list[str]]:
    """Copy one file into the staging tree: its sha256 and the kinds of secret found in its first ``scan_limit``
    bytes (all of it when None: read once, hashed, scanned and written block by block). A file scanned in its
    head only (weights) is copied by the kernel (``copy_file_range``) while a second thread hashes it through
    read-only maps: about the time of the hash alone. Its size and mtime are checked again after, so the digest is
    that of the bytes copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.link is not None:
        os.symlink(src.link, dest)
        return hashlib.sha256(b"symlink:" + src.link.encode()).hexdigest(), []
    scanner = SecretScanner()
    with open(src.path, "rb", buffering=0) as fin, open(dest, "wb") as fout:
        if scan_limit is None:
            digest = _copy_blocks(fin, fout, scanner)
        else:
            scanner.feed(os.pread(fin.fileno(), scan_limit, 0))
            digest = _copy_in_kernel(fin, fout, src)
    os.chmod(dest, 0o755 if src.executable else 0o644)
    return digest, scanner.kinds


def _copy_blocks(fin, fout, scanner: SecretScanner) -> str:
    """Read, scan, write and hash (on a second thread, two alternating buffers) block by block."""
    buffers = (bytearray(BIG_CHUNK), bytearray(BIG_CHUNK))
    out = HashingWriter(fout, behind=True)
    turn = 0
    while n := fin.readinto(buffers[turn]):
        block = memoryview(buffers[turn])[:n]
        scanner.feed(bytes(block))
        out.write(block)  # a buffered file writes a big block whole
        turn ^= 1
    return out.digest().partition(":")[2]


def _copy_in_kernel(fin, fout, src: SourceFile) -> str:
    before = os.fstat(fin.fileno())
    sha = hashlib.sha256()
    hasher = threading.Thread(target=hash_fd, args=(sha, fin.fileno(), before.st_size))
    hasher.start()
    try:
        copied = 0
        while copied < before.st_size:
            try:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), before.st_size - copied, copied, copied)
            except OSError:  # a file system that cannot: copy through user space
                n = os.pwrite(fout.fileno(), os.pread(fin.fileno(), BIG_CHUNK, copied), copied)
            if not n:
                break
            copied += n
    finally:
        hasher.join()
    after = os.fstat(fin.fileno())
    if copied != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise SwcliError(f"{src.path}: changed while it was copied into the store; build again once it is written")
    return sha.hexdigest()


def _copy_sources(walk: SourceWalk, dest: Path, role: Callable[[str], str], progress: Progress | None,
                  memo=None) -> list[dict]:
    """Every file of the walk copied under ``dest``, hashed and scanned in one read; its listing for the manifest
    (path, size, sha256, role, exec bit, link). A credential found refuses the build before anything is published
    (the staging folder goes with it). Weights are scanned in their first :data:`SCAN_HEAD` bytes."""
    listing, findings = [], {}
    copied = 0
    for src in walk.files:
        kind = role(src.rel)
        sha, findings[src.rel] = _copy_hash_scan(src, dest / src.rel, SCAN_HEAD if kind == "weights" else None)
        if memo is not None:
            memo.remember(src, sha, findings[src.rel])
        listing.append(_listing(src, sha, kind))
        copied += src.size
        if progress:
            progress(copied)
    refuse_secrets(findings, walk.rules)
    return listing


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"  # the units the CLI prints sizes in


def data_warning(listing: list[dict]) -> str | None:
    """A warning when files that are neither code nor weights/config make up most of a (not tiny) snapshot."""
    total = sum(f["size"] for f in listing)
    data = [f for f in listing if f["role"] == "code" and PurePosixPath(f["path"]).suffix.lower() not in SOURCE_SUFFIXES]
    data_bytes = sum(f["size"] for f in data)
    if data_bytes < DATA_WARN_BYTES or 2 * data_bytes <= total:
        return None
    by_top: dict[str, int] = {}
    for f in data:
        top, sep, _ = f["path"].partition("/")
        by_top[top + ("/" if sep else "")] = by_top.get(top + ("/" if sep else ""), 0) + f["size"]
    tops = sorted(by_top.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{top} {_mb(size)}" for top, size in tops[:3]) + (", ..." if len(tops) > 3 else "")
    return (f"data files are {_mb(data_bytes)} of this {_mb(total)} model snapshot ({shown}); they are neither code "
            f"nor listed as weights/config in model.yaml: add them to {IGNORE_FILE} (e.g. '{tops[0][0]}') to keep "
            "them out of the model")


def model_version(spec_raw: dict, files: list[dict], lock_kind: str | None, lock_text: str | None) -> str:
    """The version of a model entry: its yaml, every file (path, exec bit, sha256 of its bytes or of its link) and
    its env lock (kind and text; none is part of it too). What a build computes, and what a pulled entry's
    manifest, files and env.lock can be checked against."""
    digest = hashlib.sha256(json.dumps(spec_raw, sort_keys=True, default=str).encode())
    for f in files:
        digest.update(f"{f['path']}\0{int(f['executable'])}\0{f['sha256']}\n".encode())
    lock = b"none" if lock_kind is None else f"{lock_kind}\0".encode() + (lock_text or "").encode("utf-8")
    digest.update(b"env.lock\0" + hashlib.sha256(lock).digest())
    return make_version(digest.digest())


def _current_env_lock():
    from builder.build.env_lock import export_env_lock  # the one exporter; imported only when locking

    return export_env_lock()


def _listing(src: SourceFile, sha: str, kind: str) -> dict:
    return {"path": src.rel, "size": src.size, "sha256": sha, "role": kind, "executable": src.executable,
            **({"link": src.link} if src.link else {})}


def _known_listing(walk: SourceWalk, role: Callable[[str], str], memo: SnapshotMemo) -> list[dict] | None:
    """The listing of a tree whose every file is in the memo with its stat unchanged (None when one is not): no
    file is read. Secrets found when the files were read still refuse the build under today's rules."""
    listing, findings = [], {}
    for src in walk.files:
        if src.link is not None:
            sha, kinds = hashlib.sha256(b"symlink:" + src.link.encode()).hexdigest(), []
        elif (hit := memo.known(src)) is not None:
            sha, kinds = hit
        else:
            return None
        findings[src.rel] = kinds
        memo.remember(src, sha, kinds)
        listing.append(_listing(src, sha, role(src.rel)))
    refuse_secrets(findings, walk.rules)
    return listing


def _existing(store: Store, name: str, version: str) -> Entry | None:
    try:
        return store.resolve("model", f"{name}:{version}")
    except SwcliError:
        return None


def build_model(
    directory: str | Path,
    *,
    skip_gen_env: bool = False,
    store: Store | None = None,
    progress: Progress | None = None,
    env_lock: Callable[[], object] = _current_env_lock,
    verify: bool = False,
) -> ModelBuildResult:
    """Snapshot the model folder into the store and return its entry. A tree whose files all have the stat they had
    at the last build (``--verify``: not trusted, every file read) is not read: when its version is in the store,
    that entry is the result."""
    started = time.perf_counter()
    store = store or Store()
    directory = Path(directory)
    spec = load_model_spec(directory)
    check_handler_source(spec)
    _check_listed_files(spec)
    walk = walk_source_report(spec.root, always_include=spec.model + spec.config)
    lock = None if skip_gen_env else env_lock()
    lock_kind, lock_text = (lock.kind, lock.text) if lock else (None, None)
    memo = SnapshotMemo(store.root, spec.root)
    known = None if verify else _known_listing(walk, _roles(spec), memo)
    entry = known and _existing(store, spec.name, model_version(spec.raw, known, lock_kind, lock_text))
    if entry:
        listing = known
    else:
        with store.stage("model") as staged:
            listing = _copy_sources(walk, staged / "src", _roles(spec), progress, memo)
            if lock is not None:
                (staged / "env.lock").write_text(lock.text, encoding="utf-8")
            version = model_version(spec.raw, listing, lock_kind, lock_text)
            write_json_atomic(staged / "manifest.json", _manifest(spec, version, listing, lock_kind, started))
            entry = store.publish("model", spec.name, version, staged)
    memo.save()
    totals = {r: sum(f["size"] for f in listing if f["role"] == r) for r in ("code", "weights", "config")}
    biggest = sorted(((f["path"], f["size"]) for f in listing), key=lambda ps: (-ps[1], ps[0]))[:BIGGEST]
    warning = data_warning(listing)
    return ModelBuildResult(entry, len(listing), totals["weights"], time.perf_counter() - started, spec.notes,
                            total_bytes=sum(totals.values()), biggest=biggest, excluded=walk.excluded_credentials,
                            warnings=[warning] if warning else [])


def _manifest(spec: ModelSpec, version: str, listing: list[dict], lock_kind: str | None, started: float) -> dict:
    totals = {r: sum(f["size"] for f in listing if f["role"] == r) for r in ("code", "weights", "config")}
    return {
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
