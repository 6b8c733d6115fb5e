"""The local store: where built datasets, models and runtimes live, and how refs find them.

Layout under ``$SWCLI_HOME`` (default ``~/.cache/swcli``)::

    datasets/<name>/<version>/manifest.json   (+ shards, index)
    models/<name>/<version>/manifest.json     (+ src/, env.lock)
    runtimes/<name>/<version>/manifest.json
    runs/<run-id>/                            evaluation outputs
    oci/                                      the OCI image layout (:attr:`Store.layout`)
    tmp/<kind>-XXXX/ + tmp/<kind>-XXXX.lock   staging; same filesystem, so publishing is one rename

Every entry is written into a staging directory first and renamed into place only when complete, so a failed
or interrupted build leaves nothing in the store. A staging directory is owned by whoever holds the ``flock`` on
its ``.lock`` file; the kernel drops that lock when the process dies (even by ``kill -9``), so the next
:meth:`Store.stage` or :meth:`Store.scan` removes staging left by dead builds and never a live one's
(:mod:`builder.staging`).
Published entries get the mode ``0777 & ~umask`` (staging starts private), so a container running as another
user can read them. Versions are content-derived: the same inputs give the same version, and publishing an
existing version is a no-op.

Refs: ``name`` or ``name:latest`` (newest by creation time), ``name:<version>``, ``name:<prefix>`` for any
unambiguous prefix of at least 4 characters (the short form shown is 12), or a path to an entry directory. The
name and version of a ref are checked with :mod:`builder.refs` before they become paths; a path ref can be read
(info, eval) but :meth:`Store.remove` deletes only real entries inside the store.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import json
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager

from builder import staging
from builder.errors import RefNotFoundError, StoreError, SwcliError
from builder.files import current_umask, file_error
from builder.refs import is_version, name_problem

if TYPE_CHECKING:
    from builder.images.oci import Layout

KINDS = ("dataset", "model", "runtime")
SHORT_VERSION_LEN = 12
MIN_PREFIX_LEN = 4
MANIFEST = "manifest.json"


def swcli_home() -> Path:
    """The store root: ``$SWCLI_HOME`` or ``~/.cache/swcli``, checked by :func:`check_root`."""
    env = os.environ.get("SWCLI_HOME")
    return check_root(Path(env).expanduser() if env else Path.home() / ".cache" / "swcli")


_NOT_A_FOLDER = ((stat.S_ISREG, "a file"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_root(root: Path) -> Path:
    """``root`` when it can be a store: a folder (or a link to one) we may read, or nothing yet (made on the first
    write). Anything else is a :class:`StoreError` before any command reads or writes under it, so `list` never
    shows an empty table for a store it could not open. Only metadata is read: a FIFO is never opened."""
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:
        if os.path.islink(root):
            raise StoreError(root, f"the store root is a link to nothing ({os.readlink(root)}); check SWCLI_HOME") from None
        return root  # a first run: made when something is written
    except OSError as err:  # a file in the middle of the path, a folder we may not search, a link loop
        raise StoreError(root, f"the store root cannot be reached: {err.strerror or err}; check SWCLI_HOME") from None
    if not stat.S_ISDIR(mode):
        what = next((name for test, name in _NOT_A_FOLDER if test(mode)), "not a folder")
        raise StoreError(root, f"the store root is {what}, not a folder; check SWCLI_HOME")
    if not os.access(root, os.R_OK | os.X_OK):
        raise StoreError(root, "the store root cannot be read (permission denied); check SWCLI_HOME")
    return root


def make_version(digest: bytes) -> str:
    """A version id from a content digest: lowercase base32 without padding, like Starwhale's ``g4ytezbq...``."""
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def utc_now() -> str:
    """The creation timestamp written into manifests (ISO 8601, UTC). Microseconds: `name:latest` must tell apart
    two builds made within the same second (a script, a test, a CI job)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


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


def read_entry(kind: str, path: Path) -> Entry:
    """Load the entry at ``path`` (a directory holding ``manifest.json``); a manifest of the wrong shape is a
    :class:`StoreError` naming the file."""
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RefNotFoundError(kind, str(path), f"{manifest_path} does not exist") from None
    except (OSError, ValueError, RecursionError) as err:
        raise StoreError(manifest_path, f"unreadable manifest: {getattr(err, 'strerror', None) or err}") from None
    if not isinstance(manifest, dict):
        raise StoreError(manifest_path, f"expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("kind", kind) != kind:
        raise RefNotFoundError(kind, str(path), f"it holds a {manifest.get('kind')}, not a {kind}")
    name, version = manifest.get("name"), manifest.get("version")
    problem = name_problem(name)
    if problem:
        raise StoreError(manifest_path, f"field 'name': {problem}")
    if not is_version(version):
        raise StoreError(manifest_path, f"field 'version': expected a lowercase base32 version, got {version!r}")
    problem = _shape_problem(manifest)
    if problem:
        raise StoreError(manifest_path, problem)
    return Entry(kind, name, version, path, manifest)


# the fields every consumer (info, list, images, pull) reads without checking again: their types, where present
_FIELD_TYPES = {"created": str, "desc": str, "records": int, "totals": dict, "attr": dict, "tag": list,
                "files": list, "shards": list, "layers": list, "label_names": dict, "handler": str, "image": str}


def _shape_problem(manifest: dict) -> str | None:
    for key, kind in _FIELD_TYPES.items():
        value = manifest.get(key)
        if key in manifest and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"field '{key}': expected {kind.__name__}, got {type(value).__name__}"
    for key in ("totals", "attr"):
        bad = [k for k, v in (manifest.get(key) or {}).items() if not isinstance(v, int) or isinstance(v, bool)]
        if bad:
            return f"field '{key}.{bad[0]}': expected a whole number"
    if not all(isinstance(t, str) for t in manifest.get("tag") or []):
        return "field 'tag': expected a list of strings"
    return None


class Store:
    """Datasets, models and runtimes on local disk; see the module docstring for the layout and refs."""

    def __init__(self, root: Path | None = None):
        self.root = check_root(Path(root)) if root is not None else swcli_home()

    def kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        return self.root / f"{kind}s"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def layout(self) -> Layout:
        """The OCI image layout of this store (``oci/``): every image swcli builds, pulls or loads."""
        from builder.images.oci import Layout  # only the commands that touch images pay for it

        return Layout(self.root / "oci")

    # ---------------------------------------------------------------------------------------------- staging

    def stage(self, kind: str) -> ContextManager[Path]:
        """A fresh staging directory under ``tmp/``, held by its lock and removed on exit unless :meth:`publish`
        moved it into place (:func:`builder.staging.stage`)."""
        return staging.stage(self.tmp_dir, kind, KINDS)

    def clean_stale_staging(self) -> list[Path]:
        """Remove the staging folders no live process holds; returns what was removed. Never raises."""
        return staging.clean_stale(self.tmp_dir, KINDS)

    # ---------------------------------------------------------------------------------------------- publish

    def publish(self, kind: str, name: str, version: str, staged: Path) -> Entry:
        """Move a complete staging directory to ``<kind>s/<name>/<version>`` in one rename.

        The staged directory must hold ``manifest.json``. If that version already exists (same content), the
        staged copy is discarded and the existing entry returned.
        """
        problem = name_problem(name)
        if problem:
            raise StoreError(staged / MANIFEST, f"name: {problem}")
        if not is_version(version):
            raise StoreError(staged / MANIFEST, f"version: {version!r} is not a store version")
        if not (staged / MANIFEST).is_file():
            raise SwcliError(f"internal: {staged} has no {MANIFEST}; refusing to publish")
        final = self.kind_dir(kind) / name / version
        mode = 0o777 & ~current_umask()
        try:
            for directory in [staged, *sorted(p for p in staged.rglob("*") if p.is_dir() and not p.is_symlink())]:
                os.chmod(directory, mode)  # staging is private while it is built; entries read like any folder
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise file_error(final.parent, "cannot publish", err) from None
        try:
            os.rename(staged, final)
        except OSError as err:
            if not (final / MANIFEST).is_file():
                raise file_error(final, "cannot publish", err) from None
            shutil.rmtree(staged, ignore_errors=True)
        return read_entry(kind, final)

    # ------------------------------------------------------------------------------------------------- read

    def scan(self, kind: str, name: str | None = None) -> tuple[list[Entry], list[str]]:
        """Every readable entry of ``kind`` (optionally one name), newest first, and one ``"path: why"`` line per
        folder that is not a readable entry. Stale staging is cleaned on the way."""
        self.clean_stale_staging()
        base = self.kind_dir(kind)
        entries: list[Entry] = []
        problems: list[str] = []
        if name is not None:
            problem = name_problem(name)
            if problem:
                return [], [f"{name}: {problem}"]
            name_dirs = [base / name]
        else:
            name_dirs = _children(base, problems) if base.exists() else []
        for name_dir in name_dirs:
            if name_dir.name.startswith(".") or not name_dir.exists():
                continue
            problem = name_problem(name_dir.name)
            if problem or not name_dir.is_dir():
                problems.append(f"{name_dir}: not a {kind} name folder" + (f" ({problem})" if problem else ""))
                continue
            for version_dir in _children(name_dir, problems):
                if version_dir.name.startswith("."):
                    continue  # .removing-<version>: a remove in progress
                entry, problem = self._scan_one(kind, version_dir)
                if entry:
                    entries.append(entry)
                else:
                    problems.append(problem)
        entries.sort(key=lambda e: (e.created, e.version), reverse=True)
        return entries, problems

    def _scan_one(self, kind: str, version_dir: Path) -> tuple[Entry | None, str]:
        if not is_version(version_dir.name) or not version_dir.is_dir():
            return None, f"{version_dir}: not a {kind} version folder"
        if not (version_dir / MANIFEST).is_file():
            return None, f"{version_dir}: no {MANIFEST}"
        try:
            entry = read_entry(kind, version_dir)
        except SwcliError as err:
            return None, str(err)
        if (entry.name, entry.version) != (version_dir.parent.name, version_dir.name):
            return None, (f"{version_dir / MANIFEST}: names {entry.name}:{entry.version}, "
                          f"which does not match its folder")
        return entry, ""

    def list(self, kind: str, name: str | None = None) -> list[Entry]:
        """Every readable entry of ``kind`` (optionally one name), newest first; see :meth:`scan` for the rest."""
        return self.scan(kind, name)[0]

    def resolve(self, kind: str, ref: str) -> Entry:
        """The entry a ref names; raises :class:`RefNotFoundError` with the closest names when nothing matches."""
        as_path = Path(ref).expanduser()
        if "/" in ref or ref.startswith((".", "~")):
            if (as_path / MANIFEST).is_file():
                return read_entry(kind, as_path.resolve())
            raise RefNotFoundError(kind, ref, f"{as_path / MANIFEST} does not exist")
        name, _, version = ref.partition(":")
        problem = name_problem(name)
        if problem:
            raise RefNotFoundError(kind, ref, problem)
        if version and version != "latest":
            if len(version) < MIN_PREFIX_LEN:
                raise RefNotFoundError(kind, ref, f"a version prefix needs at least {MIN_PREFIX_LEN} characters")
            if not is_version(version):
                raise RefNotFoundError(kind, ref, f"{version!r} is not a version (lowercase letters and digits)")
        candidates, problems = self.scan(kind, name)
        if not candidates:
            if problems:
                raise RefNotFoundError(kind, ref, f"unreadable: {problems[0]}")
            known = sorted({e.name for e in self.list(kind)})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else (f"known: {', '.join(known)}" if known else f"the {kind} store is empty")
            raise RefNotFoundError(kind, ref, hint)
        if not version or version == "latest":
            return candidates[0]
        matches = [e for e in candidates if e.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RefNotFoundError(kind, ref, f"{name} has versions {', '.join(e.short_version for e in candidates)}")
        raise RefNotFoundError(kind, ref, f"ambiguous: {', '.join(e.short_version for e in matches)}")

    # ----------------------------------------------------------------------------------------------- remove

    def owns(self, kind: str, entry: Entry) -> bool:
        """Whether ``entry`` is a real folder ``<kind>s/<name>/<version>`` of this store (no link leads out)."""
        if name_problem(entry.name) or not is_version(entry.version):
            return False
        expected = Path(os.path.realpath(self.kind_dir(kind))) / entry.name / entry.version
        return Path(os.path.realpath(entry.path)) == expected and not os.path.islink(entry.path)

    def remove(self, kind: str, ref: str) -> Entry:
        """Delete one entry; the name directory goes too when it was the last version. Only entries inside the
        store are deleted: a path ref to a folder elsewhere is refused."""
        entry = self.resolve(kind, ref)
        if not self.owns(kind, entry):
            raise StoreError(entry.path, f"not a {kind} in the store {self.kind_dir(kind)}; remove deletes store "
                                         "entries only (delete an outside folder yourself)")
        path = Path(os.path.realpath(entry.path))
        from builder.images.recipes import adopt  # images built from the entry keep its big files

        try:
            adopt(self.layout, path)
        except (OSError, ValueError) as err:
            raise StoreError(path, f"cannot keep the files its images use: {err}") from None
        # rename first so a crash mid-delete never leaves a half-entry that still looks complete
        doomed = path.with_name(f".removing-{entry.version}")
        try:
            os.rename(path, doomed)
        except OSError as err:
            raise file_error(path, "cannot remove", err) from None
        shutil.rmtree(doomed, ignore_errors=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        return entry


def _children(folder: Path, problems: list[str]) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        problems.append(f"{folder}: cannot list: {err.strerror or err}")
        return []
