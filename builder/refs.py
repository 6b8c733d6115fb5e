"""Names and image references: what a package name may be, what an image reference may be, and which image a
store entry is.

Every value that ends up in an image tag, a Dockerfile ``FROM``, a label or a store path is checked here, where it
enters (a yaml field, a flag, a label read back from a pulled image). The grammar is the one of Docker's
``distribution/reference`` package; matching is whole-string (``re.fullmatch``), so a trailing newline or a
second line can never slip through the way it does with ``re.match(...$)``.
"""

from __future__ import annotations

import re

# distribution/reference, spelled out piece by piece
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
TAG = r"[\w][\w.-]{0,127}"
DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
_REFERENCE_RE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{TAG}))?(?:@(?P<digest>{DIGEST}))?", re.ASCII)
_NAME_RE = re.compile(PATH_COMPONENT)
_TAG_RE = re.compile(TAG, re.ASCII)
_VERSION_RE = re.compile(r"[a-z0-9]{4,128}")
MAX_NAME_LEN = 128  # a package name is one path component of `swds/<name>`
MAX_REFERENCE_NAME_LEN = 255

KIND_PREFIX = {"dataset": "swds", "model": "swmp", "runtime": "swrt"}


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a dataset/model/runtime name (it becomes ``swds/<name>`` and a store folder), or None."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if len(name) > MAX_NAME_LEN:
        return f"is {len(name)} characters long; at most {MAX_NAME_LEN}"
    if not _NAME_RE.fullmatch(name):
        return (f"{name!r} is not a valid name: use lowercase letters and digits, separated by single '.', '_', "
                "'__' or dashes, starting and ending with a letter or digit (it becomes an image name)")
    return None


def image_ref_problem(ref: object) -> str | None:
    """Why ``ref`` is not an image reference (``[host[:port]/]path[:tag][@digest]``), or None."""
    if not isinstance(ref, str):
        return f"expected a string, got {type(ref).__name__}"
    match = _REFERENCE_RE.fullmatch(ref)
    if match is None:
        return (f"{ref!r} is not an image reference: expected [HOST[:PORT]/]NAME[:TAG][@DIGEST] with a lowercase "
                "NAME, e.g. swcli/base:bookworm-py3.11 or registry.example:5000/swrt/env:1")
    name = match.group("name")
    if len(name) > MAX_REFERENCE_NAME_LEN:
        return f"image name is longer than {MAX_REFERENCE_NAME_LEN} characters"
    first, _, rest = name.partition("/")
    # like Docker: the first component is a registry host only with a '.' or ':' in it, or as 'localhost'
    if rest and not ("." in first or ":" in first or first == "localhost") and not _NAME_RE.fullmatch(first):
        return f"{ref!r} is not an image reference: repository names are lowercase"
    return None


def is_version(value: object) -> bool:
    """A store version (lowercase base32 of a digest) or a prefix of one: safe as a tag and as a folder name."""
    return isinstance(value, str) and _VERSION_RE.fullmatch(value) is not None


def is_tag(value: object) -> bool:
    return isinstance(value, str) and _TAG_RE.fullmatch(value) is not None


def image_name(kind: str, name: str) -> str:
    """The local image repository of a store entry: ``swds/<name>``, ``swmp/<name>``, ``swrt/<name>``."""
    return f"{KIND_PREFIX[kind]}/{name}"


IMAGE_ID_TAG_LEN = 12  # hex digits of the image id in a model image's tag: what `docker images` shows as IMAGE ID


def model_tag(version: str, image_id: str) -> str:
    """A model image's version tag, ``<model version>-<12 hex of its image id>``. One model version runs on any
    number of runtimes, each making another image: the image id (the digest of its config, which digests the
    runtime's layers and config, the model's layers and labels) is part of the tag, so a tag names one image for
    good and a build on another runtime adds a tag instead of moving one."""
    algo, _, hexd = image_id.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise ValueError(f"not an image id: {image_id!r}")
    return f"{version}-{hexd[:IMAGE_ID_TAG_LEN]}"


def is_model_tag_of(tag: str, version: str) -> bool:
    """Whether ``tag`` is one of ``version``'s image tags (or the bare version an older swcli tagged with)."""
    return tag == version or re.fullmatch(rf"{re.escape(version)}-[0-9a-f]{{{IMAGE_ID_TAG_LEN}}}", tag) is not None


def image_tags(kind: str, name: str, version: str, image_id: str | None = None) -> list[str]:
    """The tags an image build gives: ``<repo>:<version>`` and ``<repo>:latest``; for a model,
    ``<repo>:<version>-<image id>`` (:func:`model_tag`) once its ``image_id`` is known. ``latest`` is the one tag that
    moves: to the newest image built or pulled of that name."""
    repo = image_name(kind, name)
    tag = model_tag(version, image_id) if kind == "model" and image_id is not None else version
    return [f"{repo}:{tag}", f"{repo}:latest"]
