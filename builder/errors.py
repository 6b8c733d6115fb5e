"""The one exception tree swcli raises for anything a user can fix.

Every error a user can cause (a bad yaml, a slicer that raises, a corrupt shard, no Docker daemon...) is a
:class:`SwcliError`. The CLI turns it into a single line on stderr and a non-zero exit code; anything else is
a bug and keeps its traceback. Subclasses carry the data that names the culprit (file, field, record, shard),
so tests and callers can check *what* failed without parsing the message.
"""

from __future__ import annotations

from pathlib import Path


# what user code (a slicer, a handler, a module imported from the user's tree) may raise that is its failure, not
# ours: any exception, and sys.exit(), which must not end swcli silently in the middle of a run
USER_CODE_ERRORS = (Exception, SystemExit)


class SwcliError(Exception):
    """Root of every user-facing error. ``str(err)`` is the one-line message the CLI prints."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # keep it on one line whatever the cause said
        return " ".join(self.message.split())


class SpecError(SwcliError):
    """A yaml spec (dataset.yaml, model.yaml, runtime.yaml) is missing, unparsable or invalid."""

    def __init__(self, file: str | Path, message: str, *, field: str | None = None, line: int | None = None):
        self.file = str(file)
        self.field = field
        self.line = line
        where = self.file + (f":{line}" if line else "")
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


class UserCodeError(SwcliError):
    """User code (a slicer, a pipeline handler) could not be imported, has the wrong type, or raised."""

    def __init__(self, message: str, *, ref: str | None = None, record: int | None = None):
        self.ref = ref
        self.record = record
        super().__init__(message)


class DatasetBuildError(SwcliError):
    """Building a dataset failed for a reason that is not a spec or user-code problem (no files, count mismatch)."""


class ShardCorruptError(SwcliError):
    """A shard's bytes do not match what its header or index promises."""

    exit_code = 3

    def __init__(self, shard: str | Path, offset: int, message: str, *, record: int | None = None):
        self.shard = str(shard)
        self.offset = offset
        self.record = record
        rec = f" (record {record})" if record is not None else ""
        super().__init__(f"corrupt shard {self.shard} at offset {offset}{rec}: {message}")


class RefNotFoundError(SwcliError):
    """A dataset/model/runtime ref names nothing in the store."""

    def __init__(self, kind: str, ref: str, hint: str = ""):
        self.kind = kind
        self.ref = ref
        super().__init__(f"no {kind} matches '{ref}'" + (f"; {hint}" if hint else ""))


class EvalError(SwcliError):
    """An evaluation could not run or finish (no records, a record failed with ignore_error=False...)."""


class DockerError(SwcliError):
    """The Docker engine is unreachable or refused a build, run or push."""

    exit_code = 4


class UsageError(SwcliError):
    """A flag value or a combination of flags the command cannot take, found past the CLI's own parsing (a service
    checks it): exit 2, like any usage error typer reports (``--threads -1``)."""

    exit_code = 2


class RegistryError(SwcliError):
    """A registry is unreachable, refused the credentials, or failed mid-transfer."""

    exit_code = 5


class StoreError(SwcliError):
    """The store cannot be read or written at ``path`` (read-only, not a folder, a bad manifest...)."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")
