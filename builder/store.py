"""The local store: where built datasets, models and runtimes live, and how refs find them.

Layout under ``$SWCLI_HOME`` (default ``~/.cache/swcli``)::

    datasets/<name>/<version>/manifest.json   (+ shards, index)
    models/<name>/<version>/manifest.json     (+ src/, env.lock)
    runtimes/<name>/<version>/manifest.json
    runs/<run-id>/                            evaluation outputs
    tmp/                                      staging; same filesystem, so publishing is one rename

Every entry is written into a staging directory first and renamed into place only when complete, so a failed
or interrupted build leaves nothing in the store. Versions are content-derived: the same inputs give the same
version, and publishing an existing version is a no-op.

Refs: ``name`` or ``name:latest`` (newest by creation time), ``name:<version>``, ``name:<prefix>`` for any
unambiguous prefix of at least 4 characters (the short form shown is 12), or a path to an entry directory.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from builder.errors import RefNotFoundError, SwcliError

KINDS = ("dataset", "model", "runtime")
SHORT_VERSION_LEN = 12
MIN_PREFIX_LEN = 4
MANIFEST = "manifest.json"


def swcli_home() -> Path:
    """The store root: ``$SWCLI_HOME`` or ``~/.cache/swcli``."""
    env = os.environ.get("SWCLI_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "swcli"


def make_version(digest: bytes) -> str:
    """A version id from a content digest: lowercase base32 without padding, like Starwhale's ``g4ytezbq...``."""
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def utc_now() -> str:
    """The creation timestamp written into manifests (ISO 8601, UTC). Microseconds: `name:latest` must tell apart
    two builds made within the same second (a script, a test, a CI job)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file beside ``path`` and rename it over, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should read like any written file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Entry:
    """One published dataset/model/runtime version."""

    kind: str
    name: str
    version: str
    path: Path
    manifest: dict

    @property
    def short_version(self) -> str:
        return self.version[:SHORT_VERSION_LEN]

    @property
    def ref(self) -> str:
        """The ref users type: ``name:short``."""
        return f"{self.name}:{self.short_version}"

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))

    @property
    def size(self) -> int:
        """Bytes on disk of every file in the entry."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())


def read_entry(kind: str, path: Path) -> Entry:
    """Load the entry at ``path`` (a directory holding ``manifest.json``)."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RefNotFoundError(kind, str(path), f"{manifest_path} does not exist") from None
    except (OSError, ValueError) as err:
        raise SwcliError(f"{manifest_path}: unreadable manifest: {err}") from None
    if manifest.get("kind", kind) != kind:
        raise RefNotFoundError(kind, str(path), f"it holds a {manifest.get('kind')}, not a {kind}")
    return Entry(kind, str(manifest.get("name", path.parent.name)), str(manifest.get("version", path.name)), path, manifest)


class Store:
    """Datasets, models and runtimes on local disk; see the module docstring for the layout and refs."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else swcli_home()

    def kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return self.root / f"{kind}s"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @contextlib.contextmanager
    def stage(self, kind: str) -> Iterator[Path]:
        """A fresh staging directory, removed on exit unless :meth:`publish` moved it into place."""
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp_root))
        try:
            yield staged
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def publish(self, kind: str, name: str, version: str, staged: Path) -> Entry:
        """Move a complete staging directory to ``<kind>s/<name>/<version>`` in one rename.

        The staged directory must hold ``manifest.json``. If that version already exists (same content), the
        staged copy is discarded and the existing entry returned.
        """
        if not (staged / MANIFEST).is_file():
            raise SwcliError(f"internal: {staged} has no {MANIFEST}; refusing to publish")
        final = self.kind_dir(kind) / name / version
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError:
            if not (final / MANIFEST).is_file():
                raise
            shutil.rmtree(staged, ignore_errors=True)
        return read_entry(kind, final)

    def list(self, kind: str, name: str | None = None) -> list[Entry]:
        """Every complete entry of ``kind`` (optionally one name), newest first."""
        base = self.kind_dir(kind)
        entries = []
        if name:
            names = [base / name]
        else:
            names = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        for name_dir in names:
            if not name_dir.is_dir():
                continue
            for version_dir in sorted(name_dir.iterdir()):
                if not version_dir.name.startswith(".") and (version_dir / MANIFEST).is_file():
                    entries.append(read_entry(kind, version_dir))
        entries.sort(key=lambda e: (e.created, e.version), reverse=True)
        return entries

    def resolve(self, kind: str, ref: str) -> Entry:
        """The entry a ref names; raises :class:`RefNotFoundError` with the closest names when nothing matches."""
        as_path = Path(ref).expanduser()
        if ("/" in ref or ref.startswith(".")) and (as_path / MANIFEST).is_file():
            return read_entry(kind, as_path.resolve())
        name, _, version = ref.partition(":")
        candidates = self.list(kind, name) if name else []
        if not candidates:
            known = sorted({e.name for e in self.list(kind)})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else (f"known: {', '.join(known)}" if known else f"the {kind} store is empty")
            raise RefNotFoundError(kind, ref, hint)
        if not version or version == "latest":
            return candidates[0]
        if len(version) < MIN_PREFIX_LEN:
            raise RefNotFoundError(kind, ref, f"a version prefix needs at least {MIN_PREFIX_LEN} characters")
        matches = [e for e in candidates if e.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RefNotFoundError(kind, ref, f"{name} has versions {', '.join(e.short_version for e in candidates)}")
        raise RefNotFoundError(kind, ref, f"ambiguous: {', '.join(e.short_version for e in matches)}")

    def remove(self, kind: str, ref: str) -> Entry:
        """Delete one entry; the name directory goes too when it was the last version."""
        entry = self.resolve(kind, ref)
        # rename first so a crash mid-delete never leaves a half-entry that still looks complete
        doomed = entry.path.with_name(f".removing-{entry.version}")
        os.rename(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        with contextlib.suppress(OSError):
            entry.path.parent.rmdir()
        return entry
