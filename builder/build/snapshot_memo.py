"""What a model build learned about each source file, keyed by its stat, so an unchanged tree is not read again.

A record per source folder, ``<store>/cache/snapshot/<sha256 of the folder's absolute path>.json``, maps each file's
relative path to ``[size, mtime_ns, inode, executable, sha256, kinds of secret found]``, the key env layers use
too. A file whose size, mtime_ns, inode and exec bit all match is taken at its recorded digest without being read;
``--verify`` ignores the record and reads every file again. The record is written only after a build succeeded, so
it never holds a digest a build did not check. A record that cannot be read is no record.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from builder.errors import SwcliError
from builder.files import write_json_atomic
from builder.snapshot import SourceFile

MAX_RECORD = 64 << 20  # bounded before it is parsed: a record of a million files is ~150 MB; above this, none


def _stat_key(src: SourceFile) -> list | None:
    if src.link is not None:
        return None
    try:
        st = os.stat(src.path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, bool(src.executable)]


class SnapshotMemo:
    """The stat -> digest record of one source folder in one store."""

    def __init__(self, store_root: Path, source_root: Path):
        name = hashlib.sha256(str(Path(source_root).resolve()).encode()).hexdigest()
        self.path = Path(store_root) / "cache" / "snapshot" / f"{name}.json"
        self._old = self._read()
        self._new: dict[str, list] = {}

    def _read(self) -> dict:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_RECORD + 1)
            record = json.loads(data) if len(data) <= MAX_RECORD else {}
        except (OSError, ValueError, RecursionError):
            return {}
        return record if isinstance(record, dict) else {}

    def known(self, src: SourceFile) -> tuple[str, list[str]] | None:
        """(sha256, secret kinds) of a file whose stat matches its record, else None."""
        key = _stat_key(src)
        old = self._old.get(src.rel)
        if key is None or not isinstance(old, list) or len(old) != 6 or old[:4] != key:
            return None
        sha, kinds = old[4], old[5]
        if not (isinstance(sha, str) and len(sha) == 64 and isinstance(kinds, list)):
            return None
        return sha, [str(k) for k in kinds]

    def remember(self, src: SourceFile, sha: str, kinds: list[str]) -> None:
        key = _stat_key(src)
        if key is not None:
            self._new[src.rel] = [*key, sha, list(kinds)]

    def save(self) -> None:
        """Write what this build learned (files no longer in the tree drop out)."""
        try:
            write_json_atomic(self.path, self._new)
        except (OSError, SwcliError):
            pass  # a cache: the next build reads the files again
