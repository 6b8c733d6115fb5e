"""A remote image reference, REGISTRY/REPOSITORY[:TAG][@DIGEST], split into the parts the distribution API needs.

The grammar is the one :mod:`builder.refs` checks (Docker's ``distribution/reference``). Unlike Docker, the
registry part is required: swcli never guesses Docker Hub, so ``team/model:1`` is an error, not a Hub pull.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import RegistryError
from builder.refs import image_ref_problem


def _is_registry(first: str) -> bool:
    """Docker's rule: the first path component is a host when it has a '.' or ':' or is 'localhost'."""
    return "." in first or ":" in first or first == "localhost"


@dataclass(frozen=True)
class Reference:
    registry: str         # "127.0.0.1:5000"
    repository: str       # "team/modthree"
    tag: str | None       # None when only a digest is given; "latest" when neither is given
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        problem = image_ref_problem(text)
        if problem is not None:
            raise RegistryError(problem)
        rest, _, digest = text.partition("@")
        slash = rest.find("/")
        colon = rest.rfind(":")
        tag = None
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1:]
        registry, _, repository = rest.partition("/")
        if slash < 0 or not _is_registry(registry):
            raise RegistryError(f"{text!r} names no registry: expected REGISTRY/REPOSITORY[:TAG][@DIGEST], "
                                "e.g. 127.0.0.1:5000/team/model:1 or registry.example/team/model")
        digest = digest or None
        if digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RegistryError(f"{text!r}: the digest must be sha256: and 64 lowercase hex digits")
        return cls(registry, repository, tag if tag or digest else "latest", digest)

    @property
    def ref(self) -> str:
        """What goes after /manifests/: the digest when there is one (it pins the bytes), else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return (f"{self.registry}/{self.repository}" + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))
