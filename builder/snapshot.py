"""Walking a source tree the way a build context should see it: ignore rules, secrets out, sorted.

``.swignore`` uses ``.dockerignore`` syntax (Docker's patternmatcher): ``*`` and ``?`` stay within one path
segment, ``**`` spans any number of segments, ``!`` re-includes, a leading ``/`` and a trailing ``/`` are
dropped, the last matching pattern wins, and a pattern that matches a directory matches everything below it.
Defaults keep out what never belongs in an image: ``.git``, virtualenvs and conda envs, caches, ``.env`` files
and private keys. The walker is used for model snapshots and for image build contexts alike.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from builder.errors import SwcliError

IGNORE_FILE = ".swignore"
DEFAULT_IGNORES = (
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    "**/.ipynb_checkpoints",
    "**/.DS_Store",
    "**/.env",
    "**/*.pem",
    "**/*.key",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.swcli",
)


class SnapshotError(SwcliError):
    """The source tree cannot be snapshotted as it is (a link out of the tree, an unreadable file)."""


def _translate(pattern: str) -> re.Pattern:
    out, i, n = [], 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern[i : i + 2] == "**":
                i += 2
                if pattern[i : i + 1] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern
    negate: bool


class IgnoreRules:
    """An ordered list of ``.dockerignore``-style patterns; :meth:`ignored` says whether a path is left out."""

    def __init__(self, patterns: Iterable[str]):
        self.rules: list[_Rule] = []
        for raw in patterns:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = os.path.normpath(line.lstrip("/")).replace(os.sep, "/")
            if line in (".", ""):
                continue
            self.rules.append(_Rule(_translate(line), negate))

    @property
    def has_negations(self) -> bool:
        return any(rule.negate for rule in self.rules)

    @classmethod
    def for_tree(cls, root: Path, ignore_file: str = IGNORE_FILE, defaults: Iterable[str] = DEFAULT_IGNORES) -> IgnoreRules:
        patterns = list(defaults)
        path = root / ignore_file
        if path.is_file():
            patterns += path.read_text(encoding="utf-8").splitlines()
        return cls(patterns)

    def ignored(self, rel: str) -> bool:
        """Whether ``rel`` (posix, relative to the root) is excluded; a match on a parent dir counts."""
        parts = PurePosixPath(rel).parts
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        verdict = False
        for rule in self.rules:
            if any(rule.regex.match(p) for p in prefixes):
                verdict = not rule.negate
        return verdict


@dataclass(frozen=True)
class SourceFile:
    """One entry of a snapshot: a regular file or a symlink (kept as a link) inside the tree."""

    rel: str
    path: Path
    size: int
    executable: bool
    link: str | None = None


def _is_env_dir(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def walk_source(root: str | Path, *, ignore_file: str = IGNORE_FILE, always_include: Iterable[str] = (),
                rules: IgnoreRules | None = None) -> list[SourceFile]:
    """Every file of ``root`` that the ignore rules keep, sorted by path.

    ``always_include`` (relative paths, files or folders) are kept even when a rule ignores them: the weights a
    model.yaml names must ship whatever ``.swignore`` says. Virtualenvs and conda envs are never walked.
    A symlink whose target leaves ``root`` is a :class:`SnapshotError` naming it.
    """
    root = Path(root).resolve()
    rules = rules or IgnoreRules.for_tree(root, ignore_file)
    forced = [PurePosixPath(p).as_posix().rstrip("/") for p in always_include]

    def kept(rel: str) -> bool:
        if any(rel == f or rel.startswith(f + "/") for f in forced):
            return True
        return not rules.ignored(rel)

    def may_hold_kept(rel: str) -> bool:
        return rules.has_negations or any(f.startswith(rel + "/") for f in forced)

    out: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        rel_base = base.relative_to(root).as_posix()
        rel_base = "" if rel_base == "." else rel_base + "/"
        keep_dirs = []
        for name in sorted(dirnames):
            full = base / name
            rel = rel_base + name
            if full.is_symlink():
                filenames.append(name)
                continue
            if _is_env_dir(full):
                continue
            if kept(rel) or may_hold_kept(rel):
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in filenames:
            full = base / name
            rel = rel_base + name
            if not kept(rel):
                continue
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                resolved = (full.parent / target).resolve()
                if not resolved.is_relative_to(root):
                    raise SnapshotError(f"{full}: symlink points outside the source tree ({target})")
                out.append(SourceFile(rel, full, 0, False, link=target))
            elif stat.S_ISREG(st.st_mode):
                out.append(SourceFile(rel, full, st.st_size, bool(st.st_mode & 0o111)))
    out.sort(key=lambda f: f.rel)
    return out
