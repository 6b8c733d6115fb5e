"""The CycloneDX SBOM every runtime image carries at :data:`SBOM_PATH`, made with ``cyclonedx-python-lib``.

Components: every Python distribution on the image's ``PYTHONPATH`` (the env's site-packages and swcli's own
``/opt/swcli/lib``: name, version, license, ``pkg:pypi/...``), a conda env's packages from its ``conda-meta``
records (``pkg:conda/...``; the Python dists conda installed are listed once, as conda packages), and the base
image's Debian packages from ``var/lib/dpkg/status`` in its layers (``pkg:deb/debian/...?arch=``).

The document depends on nothing but its inputs: ``timestamp`` is ``SOURCE_DATE_EPOCH`` (the image's ``created``),
the serial number a uuid5 of the content, so the same env on the same base gives the same bytes and the runtime
image stays reproducible. It is cached in the layout by the env layers' digests and the base's manifest digest: an
unchanged rebuild reads it back instead of parsing metadata again. :func:`read_sbom` finds it in any image built on
a runtime (a model image inherits its runtime's).
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import posixpath
import re
import tarfile
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Callable, Iterable

from builder.images.context import ContextEntry
from builder.images.image import Image, created_time
from builder.images.oci import Descriptor, Layout
from builder.files import write_bytes_atomic

SBOM_PATH = "/opt/swcli/sbom.cdx.json"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
DPKG_STATUS = "/var/lib/dpkg/status"
_LICENSE_FIELD_MAX = 100  # a longer (or multi-line) ``License`` field is a license text, not a name
# trove classifiers whose license is unambiguous; any other names itself (``License :: ... :: <name>``)
_CLASSIFIER_SPDX = {"MIT License": "MIT", "ISC License (ISCL)": "ISC", "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
                    "Python Software Foundation License": "PSF-2.0", "The Unlicense (Unlicense)": "Unlicense",
                    "Apache License 2.0": "Apache-2.0", "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0"}
_DIST_INFO = re.compile(r"(?P<dir>(?P<parent>/.+)/[^/]+\.(?:dist-info|egg-info))/(?:METADATA|PKG-INFO)")
_CONDA_META = re.compile(r"(?P<prefix>/.+)/conda-meta/[^/]+\.json")


@dataclass(frozen=True)
class Package:
    """One component: ``purl`` is its identity (and bom-ref); ``path`` where its record sits in the image."""

    name: str
    version: str
    purl: str
    license: str | None
    path: str


def wanted(arcname: str) -> bool:
    """Whether a context file can matter to the SBOM (the rest of an env's tens of thousands are never read)."""
    return arcname.endswith(("/METADATA", "/PKG-INFO", "/INSTALLER")) or (
        "/conda-meta/" in arcname and arcname.endswith(".json"))


def _read(entry: ContextEntry) -> bytes | None:
    if entry.link is not None:
        return None
    if entry.data is not None:
        return entry.data
    with open(entry.source, "rb") as fh:
        return fh.read()


def _purl(kind: str, name: str, version: str, namespace: str | None = None, **qualifiers: str) -> str:
    from packageurl import PackageURL

    return PackageURL(type=kind, namespace=namespace, name=name, version=version,
                      qualifiers={k: v for k, v in qualifiers.items() if v}).to_string()


def normalize(name: str) -> str:
    """PEP 503: what pip and the ``pypi`` purl type call a distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_license(meta) -> str | None:
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    field = " ".join((meta.get("License") or "").split())
    if field and "\n" not in (meta.get("License") or "").strip() and len(field) <= _LICENSE_FIELD_MAX \
            and field.upper() not in ("UNKNOWN", "NONE"):
        return field
    names = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    names = [_CLASSIFIER_SPDX.get(n, n) for n in names if n not in ("OSI Approved", "Other/Proprietary License")]
    if not names:
        return None
    return " OR ".join(sorted(set(names))) if all(n in _CLASSIFIER_SPDX.values() for n in names) else "; ".join(names)


def python_packages(files: dict[str, ContextEntry], python_path: Iterable[str]) -> list[Package]:
    """The distributions whose metadata folder sits directly in a folder of ``python_path`` (vendored copies
    inside packages are not importable as dists and are left out); ``files`` maps image paths to entries.
    Dists a conda package installed (INSTALLER ``conda``, or listed in a conda record) are left to that package."""
    roots = set(python_path)
    conda_owned = {f"{m.group('prefix')}/{f}" for path, entry in files.items() if (m := _CONDA_META.fullmatch(path))
                   for f in (_conda_record(entry) or {}).get("files") or []}
    out = []
    parser = email.parser.HeaderParser()  # on text: a non-ASCII header stays a str (bytes would give Header objects)
    for path in sorted(files):
        match = _DIST_INFO.fullmatch(path)
        if not match or match.group("parent") not in roots or path in conda_owned:
            continue
        installer = files.get(f"{match.group('dir')}/INSTALLER")
        if installer is not None and (_read(installer) or b"").strip() == b"conda":
            continue
        meta = parser.parsestr((_read(files[path]) or b"").decode("utf-8", "replace"))
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            continue
        out.append(Package(normalize(name), version, _purl("pypi", normalize(name), version),
                           _python_license(meta), match.group("dir")))
    return out


def _conda_record(entry: ContextEntry) -> dict | None:
    try:
        record = json.loads(_read(entry) or b"")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def conda_packages(files: dict[str, ContextEntry]) -> list[Package]:
    """The packages of a conda env from its ``conda-meta/*.json`` records (records without name or version are
    skipped: the env build has refused a broken conda-meta already)."""
    out = []
    for path in sorted(files):
        if not _CONDA_META.fullmatch(path):
            continue
        record = _conda_record(files[path]) or {}
        name, version = record.get("name"), record.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            continue
        subdir = record.get("subdir") or ""
        channel = str(record.get("channel") or "").rstrip("/")
        channel = channel.removesuffix(f"/{subdir}") if subdir else channel
        out.append(Package(name, version, _purl("conda", name, version, build=str(record.get("build") or ""),
                                                channel=channel.rsplit("/", 1)[-1], subdir=subdir),
                           str(record.get("license") or "") or None, path))
    return out


def debian_packages(status: bytes) -> list[Package]:
    """The installed packages of a dpkg status file (``Status: install ok installed``)."""
    out = []
    for stanza in status.decode("utf-8", "replace").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name, version, arch = fields.get("Package"), fields.get("Version"), fields.get("Architecture")
        if not name or not version or fields.get("Status", "").split()[-1:] != ["installed"]:
            continue
        out.append(Package(name, version, _purl("deb", name, version, "debian", arch=arch or ""), None, DPKG_STATUS))
    return out


# --------------------------------------------------------------------------------------- reading image files


def read_image_file(layout: Layout, layers: Iterable[Descriptor], path: str) -> bytes | None:
    """A regular file's bytes as the image's filesystem has it: from the topmost layer holding ``path``, unless a
    layer above deleted it (a whiteout of it or of a folder above it, or an opaque folder). Layers are
    uncompressed tars, so only their headers are read on the way down."""
    target = path.strip("/")
    parts = target.split("/")
    ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
    deleted = {posixpath.join(posixpath.dirname(p), ".wh." + posixpath.basename(p)) for p in [*ancestors, target]}
    deleted |= {f"{a}/.wh..wh..opq" for a in ancestors}
    for blob in reversed(list(layers)):
        gone = False
        with tarfile.open(layout.blob_path(blob.digest), "r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./").strip("/")
                if name == target:
                    if not (member.isfile() or member.islnk()):
                        return None
                    with tar.extractfile(member) as fh:
                        return fh.read()
                gone = gone or name in deleted
        if gone:
            return None
    return None


def read_sbom(layout: Layout, image: Image) -> bytes | None:
    """The SBOM file's bytes from ``image``'s layers (a runtime's, or inherited by an image built on one), or None."""
    return read_image_file(layout, image.layers, SBOM_PATH)


def base_packages(layout: Layout, base: Image | None) -> list[Package]:
    """The base image's Debian packages (none for a base without dpkg, or no base at hand), remembered per base in
    the layout's cache: finding the status file reads ~10,000 tar headers, and a changed env keeps its base."""
    from builder import __version__

    if base is None:
        return []
    memo = layout.root / "cache" / "sbom" / f"debian-{base.manifest.hex}-{__version__}.json"
    try:
        return [Package(**p) for p in json.loads(memo.read_bytes())]
    except (OSError, ValueError, TypeError):
        pass
    status = read_image_file(layout, base.layers, DPKG_STATUS)
    packages = debian_packages(status) if status else []
    write_bytes_atomic(memo, json.dumps([asdict(p) for p in packages]).encode())
    return packages


# --------------------------------------------------------------------------------------- the document


def make_sbom(name: str, version: str, python: list[Package], conda: list[Package], debian: list[Package]) -> bytes:
    """The CycloneDX 1.6 JSON document: the runtime as the described component, swcli as the tool."""
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    from builder import __version__

    when = created_time()
    groups = {"pypi": python, "conda": conda, "deb": debian}
    content = json.dumps([name, version, when, __version__, {k: [asdict(p) for p in v] for k, v in groups.items()}],
                         sort_keys=True).encode()
    licenses = LicenseFactory()
    root = Component(type=ComponentType.CONTAINER, name=name, version=version, bom_ref=f"swrt/{name}:{version}")
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"swcli-sbom:{hashlib.sha256(content).hexdigest()}"),
              metadata=BomMetaData(timestamp=datetime.fromisoformat(when.replace("Z", "+00:00")), component=root))
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="swcli", version=__version__,
                                                bom_ref=f"swcli@{__version__}"))
    seen = set()
    for packages in groups.values():
        for p in packages:
            if p.purl in seen:
                continue
            seen.add(p.purl)
            bom.components.add(Component(
                type=ComponentType.LIBRARY, name=p.name, version=p.version, purl=PackageURL.from_string(p.purl),
                bom_ref=p.purl, licenses=[licenses.make_from_string(p.license)] if p.license else [],
                properties=[Property(name="swcli:path", value=p.path)]))
    bom.register_dependency(root, bom.components)
    return (JsonV1Dot6(bom).output_as_string(indent=2) + "\n").encode()


def runtime_sbom(layout: Layout, name: str, version: str, base: Image | None, layer_digests: Iterable[str],
                 files: Callable[[], dict[str, ContextEntry]], python_path: Iterable[str]) -> bytes:
    """The SBOM of a runtime image, cached in the layout by everything it is made from: the runtime's name and
    version, its layers' digests, the base's manifest digest, the clock (``SOURCE_DATE_EPOCH``) and swcli's version.
    ``files()`` (image path -> context entry of the metadata files, see :func:`wanted`) is called only on a miss."""
    from builder import __version__

    python_path = list(python_path)
    h = hashlib.sha256(f"sbom\0{__version__}\0{name}\0{version}\0{created_time()}\0"
                       f"{base.manifest.digest if base else ''}\0{python_path}\n".encode())
    for digest in layer_digests:
        h.update(f"{digest}\n".encode())
    cached = layout.root / "cache" / "sbom" / f"{h.hexdigest()}.cdx.json"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    found = files()
    data = make_sbom(name, version, python_packages(found, python_path), conda_packages(found),
                     base_packages(layout, base))
    write_bytes_atomic(cached, data)
    return data
