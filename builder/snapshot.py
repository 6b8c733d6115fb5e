"""Walking a source tree the way a build context should see it: ignore rules, credentials out, sorted.

``.swignore`` uses ``.dockerignore`` syntax (Docker's patternmatcher): ``*`` and ``?`` stay within one path
segment, ``**`` spans any number of segments, ``!`` re-includes, a leading ``/`` and a trailing ``/`` are
dropped, the last matching pattern wins, and a pattern that matches a directory matches everything below it.
Defaults keep out what never belongs in an image: ``.git``, virtualenvs and conda envs, caches, and the
well-known credential files (``.env*``, ``.aws``, ``.ssh``, ``.netrc``, ``.npmrc``, ``.pypirc``, docker and kube
configs, private keys); the walk reports what those credential rules left out. What is kept is then scanned
for secrets (:class:`SecretScanner`): a private key or token in a kept file refuses the snapshot unless
``.swignore`` re-includes that exact path with a ``!`` line. The walker is used for model snapshots.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from builder.errors import SwcliError

IGNORE_FILE = ".swignore"
# suffixes of source and small config files; any other file that is neither weights nor config counts as data
SOURCE_SUFFIXES = frozenset((".py", ".pyi", ".pyx", ".pxd", ".c", ".h", ".cc", ".cpp", ".cu", ".js", ".ts", ".sh",
                             ".yaml", ".yml", ".toml", ".cfg", ".ini", ".json", ".txt", ".md", ".rst", ".ipynb",
                             ".in", ".lock", ".j2", ".html", ".css"))
DEFAULT_IGNORES = (
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/__pycache__",
    "**/*.pyc",
    "**/.pytest_cache",
    "**/.ipynb_checkpoints",
    "**/.DS_Store",
    "**/.swcli",
)
# well-known places credentials live; what these leave out is reported, and `!PATH` in .swignore re-includes
CREDENTIAL_IGNORES = (
    "**/.env",
    "**/.env.*",
    "**/*.env",
    "**/.envrc",
    "**/.ssh",
    "**/.gnupg",
    "**/.aws",
    "**/.azure",
    "**/.config/gcloud",
    "**/.kube",
    "**/.docker/config.json",
    "**/.netrc",
    "**/_netrc",
    "**/.npmrc",
    "**/.pypirc",
    "**/.pgpass",
    "**/.git-credentials",
    "**/.htpasswd",
    "**/*.pem",
    "**/*.key",
    "**/*.p12",
    "**/*.pfx",
    "**/*.jks",
    "**/*.keystore",
    "**/id_rsa*",
    "**/id_dsa*",
    "**/id_ecdsa*",
    "**/id_ed25519*",
    "**/.boto",
    "**/.s3cfg",
    "**/.vault-token",
    "**/.terraformrc",
    "**/terraform.rc",
    "**/*.tfvars",
    "**/kubeconfig",
    "**/kubeconfig.*",
    "**/credentials.json",
    "**/client_secret*.json",
    "**/*service-account*.json",
    "**/.cargo/credentials",
    "**/.cargo/credentials.toml",
    "**/.gem/credentials",
    "**/.cache/huggingface/token",
    "**/.huggingface/token",
    "**/.config/gh/hosts.yml",
    "**/.config/hub",
    "**/.databrickscfg",
    "**/.my.cnf",
    "**/.dockercfg",
)


class SnapshotError(SwcliError):
    """The source tree cannot be snapshotted as it is (a link out of the tree, an unreadable file)."""


class SecretsFoundError(SnapshotError):
    """Kept files hold private keys or tokens; ``findings`` maps each path to what was found (never the secret)."""

    def __init__(self, findings: dict[str, list[str]]):
        self.findings = dict(sorted(findings.items()))
        listed = "; ".join(f"{rel} ({', '.join(kinds)})" for rel, kinds in self.findings.items())
        super().__init__(f"refusing to snapshot {len(self.findings)} file(s) that hold credentials: {listed}; "
                         f"list them in {IGNORE_FILE}, or re-include each one there with a '!PATH' line to ship it")


def glob_regex(pattern: str) -> re.Pattern:
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


_GLOB_CHARS = re.compile(r"[*?\[\\]")


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern
    negate: bool
    literal: str | None  # the pattern itself when it has no wildcards: the one path it names
    source: str  # "default", "credential" or the ignore file's name


class IgnoreRules:
    """An ordered list of ``.dockerignore``-style patterns; :meth:`ignored` says whether a path is left out."""

    def __init__(self, patterns: Iterable[str] = (), *, source: str = IGNORE_FILE):
        self.rules: list[_Rule] = []
        self.extend(patterns, source=source)

    def extend(self, patterns: Iterable[str], *, source: str) -> None:
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
            literal = None if _GLOB_CHARS.search(line) else line
            self.rules.append(_Rule(glob_regex(line), negate, literal, source))

    @property
    def has_negations(self) -> bool:
        return any(rule.negate for rule in self.rules)

    @classmethod
    def for_tree(cls, root: Path, ignore_file: str = IGNORE_FILE, defaults: Iterable[str] = DEFAULT_IGNORES,
                 credentials: Iterable[str] = CREDENTIAL_IGNORES) -> IgnoreRules:
        rules = cls()
        rules.extend(defaults, source="default")
        rules.extend(credentials, source="credential")
        path = root / ignore_file
        if path.is_file():
            try:
                rules.extend(path.read_text(encoding="utf-8").splitlines(), source=ignore_file)
            except UnicodeDecodeError as err:
                raise SnapshotError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        return rules

    def verdict(self, rel: str) -> _Rule | None:
        """The last rule matching ``rel`` or one of its parent dirs (posix, relative to the root), if any."""
        parts = PurePosixPath(rel).parts
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        last = None
        for rule in self.rules:
            if any(rule.regex.match(p) for p in prefixes):
                last = rule
        return last

    def ignored(self, rel: str) -> bool:
        """Whether ``rel`` (posix, relative to the root) is excluded; a match on a parent dir counts."""
        rule = self.verdict(rel)
        return rule is not None and not rule.negate

    def reincludes_exactly(self, rel: str) -> bool:
        """Whether a ``!rel`` line (that very path, no wildcards) re-includes ``rel``: consent to ship a secret."""
        return any(r.negate and r.literal == rel and r.source not in ("default", "credential") for r in self.rules)


@dataclass(frozen=True)
class SourceFile:
    """One entry of a snapshot: a regular file or a symlink (kept as a link) inside the tree."""

    rel: str
    path: Path
    size: int
    executable: bool
    link: str | None = None


@dataclass(frozen=True)
class SourceWalk:
    """What a walk kept (sorted), what the default credential rules left out (``dir/`` for a whole folder)."""

    files: list[SourceFile]
    excluded_credentials: list[str]
    rules: IgnoreRules


def _is_env_dir(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def walk_source(root: str | Path, *, ignore_file: str = IGNORE_FILE, always_include: Iterable[str] = (),
                rules: IgnoreRules | None = None) -> list[SourceFile]:
    """Every file of ``root`` that the ignore rules keep, sorted by path (see :func:`walk_source_report`)."""
    return walk_source_report(root, ignore_file=ignore_file, always_include=always_include, rules=rules).files


def walk_source_report(root: str | Path, *, ignore_file: str = IGNORE_FILE, always_include: Iterable[str] = (),
                       rules: IgnoreRules | None = None) -> SourceWalk:
    """Every file of ``root`` that the ignore rules keep, sorted by path, and what the credential rules left out.

    ``always_include`` (relative paths, files or folders) are kept even when a rule ignores them: the weights a
    model.yaml names must ship whatever ``.swignore`` says. Virtualenvs and conda envs are never walked.
    A symlink whose target leaves ``root`` is a :class:`SnapshotError` naming it.
    """
    root = Path(root).resolve()
    rules = rules or IgnoreRules.for_tree(root, ignore_file)
    forced = [PurePosixPath(p).as_posix().rstrip("/") for p in always_include]
    excluded: list[str] = []

    def kept(rel: str, shown: str) -> bool:
        if any(rel == f or rel.startswith(f + "/") for f in forced):
            return True
        rule = rules.verdict(rel)
        if rule is None or rule.negate:
            return True
        if rule.source == "credential":
            excluded.append(shown)
        return False

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
            if may_hold_kept(rel) or kept(rel, rel + "/"):
                keep_dirs.append(name)
        dirnames[:] = keep_dirs
        for name in filenames:
            full = base / name
            rel = rel_base + name
            if not kept(rel, rel):
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
    return SourceWalk(out, sorted(set(excluded)), rules)


# ------------------------------------------------------------------------------------------------ secrets

SCAN_CHUNK = 4 << 20
_B = rb"(?<![A-Za-z0-9])"  # a token starts at a word boundary, not inside a longer base64 run

# Each regex starts with a literal, so `re` finds candidates with its fast prefix search and confirms them in C:
# one pass per regex, no Python per candidate. A named group is the kind of secret; a lookbehind placed after
# the prefix keeps the prefix literal. Every match is shorter than _OVERLAP bytes, so one that straddles two
# blocks is seen whole in the second.
_DETECTORS = tuple(re.compile(p) for p in (
    rb"(?P<private_key>-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)",
    rb"AKIA(?P<aws_key_id>(?<![A-Za-z0-9]AKIA)[0-9A-Z]{16}(?![0-9A-Z])(?<!EXAMPLE))",
    rb"ASIA(?P<aws_session_key_id>(?<![A-Za-z0-9]ASIA)[0-9A-Z]{16}(?![0-9A-Z])(?<!EXAMPLE))",
    rb"AIza(?P<google_api_key>(?<![A-Za-z0-9]AIza)[0-9A-Za-z_-]{35})",
    *(rb"%s(?P<aws_secret>[\"']?[ \t]*[=:][ \t]*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+]))" % name
      for name in (b"aws_secret_access_key", b"AWS_SECRET_ACCESS_KEY")),
    rb"gh(?P<github_token>(?<![A-Za-z0-9]gh)[pousr]_[A-Za-z0-9]{36})",
    rb"github_pat_(?P<github_pat>(?<![A-Za-z0-9]github_pat_)[A-Za-z0-9_]{40})",
    rb"glpat-(?P<gitlab_token>(?<![A-Za-z0-9]glpat-)[A-Za-z0-9_-]{20})",
    rb"xox(?P<slack_token>(?<![A-Za-z0-9]xox)[abeoprs]-[A-Za-z0-9]{4,64}-[A-Za-z0-9-]{6,256})",
    rb"hooks\.slack\.com/services/(?P<slack_webhook>T[A-Z0-9]{6,32}/B[A-Z0-9]{6,32}/[A-Za-z0-9]{12})",
    rb"hf_(?P<huggingface_token>(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{34}(?![A-Za-z0-9]))",
    rb"pypi-AgE(?P<pypi_token>(?<![A-Za-z0-9]pypi-AgE)[A-Za-z0-9_-]{50})",
    rb"npm_(?P<npm_token>(?<![A-Za-z0-9]npm_)[A-Za-z0-9]{36}(?![A-Za-z0-9]))",
    rb"sk_live_(?P<stripe_key>(?<![A-Za-z0-9]sk_live_)[A-Za-z0-9]{20})",
    rb"machine(?P<netrc_password>[ \t]+\S{1,253}\s+(?:login[ \t]+\S{1,256}\s+)?password[ \t]+\S)",
    rb"\"auth\"(?P<registry_auth>[ \t]*:[ \t]*\"[A-Za-z0-9+/]{12,512}={0,2}\")",
    rb"\"type\"(?P<sa_type>\s{0,16}:\s{0,16}\"service_account\")",
    rb"(?P<sa_private_key>\"private_key\")",
))
KINDS = {
    "private_key": "private key", "aws_key_id": "AWS access key id", "aws_session_key_id": "AWS access key id",
    "google_api_key": "Google API key",
    "aws_secret": "AWS secret access key", "github_token": "GitHub token", "github_pat": "GitHub token",
    "gitlab_token": "GitLab token",
    "slack_token": "Slack token", "slack_webhook": "Slack webhook", "huggingface_token": "Hugging Face token",
    "pypi_token": "PyPI token", "npm_token": "npm token", "stripe_key": "Stripe secret key",
    "netrc_password": "netrc password", "registry_auth": "registry auth",
}
_OVERLAP = 1024


class SecretScanner:
    """Streams one file's bytes (``feed`` each block in order) and collects what kinds of secret it holds.

    Blocks are scanned with a tail of the previous one prepended, so a match across a block boundary is found;
    the scanner keeps the kind of a finding, never its text. Service-account JSON is its ``"type"`` and its
    ``"private_key"`` anywhere in one file.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._found: set[str] = set()
        self._done: set[int] = set()

    def feed(self, block: bytes) -> None:
        buf = self._tail + block if self._tail else block
        for n, regex in enumerate(_DETECTORS):
            if n in self._done:
                continue
            groups = set(regex.groupindex)
            for match in regex.finditer(buf):
                self._found.add(match.lastgroup)
                if groups <= self._found:
                    self._done.add(n)
                    break
        self._tail = buf[-_OVERLAP:]

    @property
    def kinds(self) -> list[str]:
        found = {KINDS[g] for g in self._found if g in KINDS}
        if {"sa_type", "sa_private_key"} <= self._found:
            found.add("service-account key")
        return sorted(found)


def scan_file(path: Path, chunk: int = SCAN_CHUNK) -> list[str]:
    """The kinds of secret in the file at ``path``, read once in ``chunk``-sized blocks."""
    scanner = SecretScanner()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            scanner.feed(block)
    return scanner.kinds


def refuse_secrets(findings: dict[str, list[str]], rules: IgnoreRules) -> None:
    """Raise :class:`SecretsFoundError` for every finding whose path ``.swignore`` does not re-include exactly."""
    refused = {rel: kinds for rel, kinds in findings.items() if kinds and not rules.reincludes_exactly(rel)}
    if refused:
        raise SecretsFoundError(refused)


def scan_sources(walk: SourceWalk, scan: Callable[[Path], list[str]] = scan_file) -> dict[str, list[str]]:
    """Scan every regular file a walk kept; raise :class:`SecretsFoundError` unless each finding is consented to."""
    findings = {f.rel: scan(f.path) for f in walk.files if f.link is None}
    refuse_secrets(findings, walk.rules)
    return {rel: kinds for rel, kinds in findings.items() if kinds}
