"""A pulled image's store entry: made only of what its own manifest lists, verified, and of the version it claims.

:func:`record_pulled` reads the entry's ``manifest.json`` out of the layers first (at most :data:`MAX_ENTRY_JSON`
bytes, refused from the tar header before any byte is read), turns it into a :class:`~builder.images.unpack.Listing`
(a dataset: the manifest, its shards and index at their sizes; a model: the manifest, the env lock, and every file
and link of ``src/``), and extracts only that (:func:`builder.images.unpack.unpack`); anything else in the folder is
refused in one line. Then the files are checked like `info --verify` (:func:`verify_entry`), and the version is
recomputed from them (:func:`check_version`): a version is a content digest, so an image labelled with another
entry's name and version is refused. Links: a model keeps the links its source had (`model build` keeps a link that
stays inside the tree), so a listed link is allowed when following it, and every link it meets, the way the kernel
would, never leaves ``src/`` (:func:`link_problem`); a dataset holds no link at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path

from builder import outdir
from builder.errors import RegistryError, SwcliError
from builder.images.recipes import files_dir
from builder.images.layer_tar import shown
from builder.images.unpack import Listing, read_member, unpack
from builder.registry.media import MAX_CONFIG
from builder.distribute.blobs import check_labels, one_line

# where each kind's store entry lives inside its image; a runtime's entry is only its manifest, made from labels
ENTRY_IN_IMAGE = {"dataset": "/dataset", "model": "/opt/swcli/model"}
# manifest.json, env.lock and a dataset image's layers.json: JSON or text swcli writes in kilobytes; a manifest of
# 30,000 shards is ~4 MB. The same bound as an image config (media.MAX_CONFIG).
MAX_ENTRY_JSON = MAX_CONFIG
DROPPED = {"dataset": {"layers.json": MAX_ENTRY_JSON}}  # in the image for registry readers; not part of the entry
MAX_LINK_HOPS = 40  # what Linux follows before ELOOP


class EntryContentError(SwcliError):
    """An entry's files are not what its manifest lists: one unlisted, a link leaving it, a size or sha256 that
    differs (exit 3, like a corrupt shard)."""

    exit_code = 3

    def __init__(self, path: Path | str, msg: str):
        super().__init__(f"{path}: {msg}")


def _inside_path_problem(rel: object) -> str | None:
    """Why ``rel`` is not a relative path that stays inside its folder, or None."""
    if not isinstance(rel, str) or not rel:
        return f"expected a relative path, got {shown(repr(rel))}"
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(not c.isprintable() for c in rel) or \
            any(p in ("", ".", "..") for p in parts):
        return f"{shown(repr(rel))} is not a relative path inside src/"
    return None


def _model_files(manifest: dict, where: Path) -> list[dict]:
    """The manifest's ``files``, each checked for the shape every later step relies on."""
    files = manifest.get("files")
    if not isinstance(files, list):
        raise RegistryError(f"{where}: field 'files': expected a list")
    for n, item in enumerate(files):
        field = f"files[{n}]"
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: field '{field}': expected an object")
        problem = _inside_path_problem(item.get("path"))
        if problem:
            raise RegistryError(f"{where}: field '{field}.path': {problem}")
        size, link, sha = item.get("size"), item.get("link"), item.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise RegistryError(f"{where}: field '{field}.size': expected a non-negative integer")
        if not isinstance(item.get("executable"), bool) or not isinstance(sha, str):
            raise RegistryError(f"{where}: field '{field}': 'executable' must be true or false, 'sha256' a string")
        if link is not None and (not isinstance(link, str) or not link or "\0" in link):
            raise RegistryError(f"{where}: field '{field}.link': expected a link target")
    if len({f["path"] for f in files}) != len(files):
        raise RegistryError(f"{where}: field 'files': lists the same path twice")
    return files


def listing_of(kind: str, manifest: dict, where: Path) -> Listing:
    """What the entry's folder may hold, from its manifest (checked before any name becomes a path)."""
    from builder.volumes import manifest_layout

    if kind == "dataset":
        layout = manifest_layout(manifest, where)
        files = {"manifest.json": MAX_ENTRY_JSON, layout.index: layout.index_size,
                 **{s.file: s.size for s in layout.volumes}}
        return Listing(files, {}, dict(DROPPED["dataset"]))
    items = _model_files(manifest, where)
    files = {"manifest.json": MAX_ENTRY_JSON, **({"env.lock": MAX_ENTRY_JSON} if manifest.get("env_lock") else {})}
    files.update({f"src/{f['path']}": f["size"] for f in items if f.get("link") is None})
    links = {f"src/{f['path']}": f["link"] for f in items if f.get("link") is not None}
    if set(files) & set(links):
        raise RegistryError(f"{where}: field 'files': a path is both a file and a link")
    for path in links:
        problem = link_problem(path[4:], {p[4:]: t for p, t in links.items()})
        if problem:
            raise RegistryError(f"{where}: field 'files': src/{shown(path[4:])} is a link that {problem}")
    return Listing(files, links)


def link_problem(rel: str, links: dict[str, str]) -> str | None:
    """Follow ``rel`` (relative to src/) through ``links`` (path -> target, relative to src/) as the kernel would;
    why that leaves src/, or None. The entry holds exactly the listing, so this is what the kernel would do."""
    done: list[str] = []
    pending = rel.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return "leads out of src/"
            done.pop()
            continue
        here = "/".join(done + [part])
        if here in links:
            hops += 1
            target = links[here]
            if hops > MAX_LINK_HOPS or target.startswith("/"):
                return "goes through too many links" if hops > MAX_LINK_HOPS else "points to an absolute path"
            pending = target.split("/") + pending
            continue
        done.append(part)
    return None


def exact_contents_problem(folder: Path, listing: Listing) -> tuple[Path, str] | None:
    """The first file, link or folder under ``folder`` that ``listing`` does not name as it is, or None."""
    dirs = listing.dirs
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = path.relative_to(folder).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                if listing.links.get(rel) != os.readlink(path):
                    return path, "a link the manifest does not list"
            elif stat.S_ISDIR(mode):
                if rel not in dirs:
                    return path, "a folder the manifest does not list"
            elif not stat.S_ISREG(mode) or rel not in listing.files:
                return path, "a file the manifest does not list"
    return None


def verify_entry(entry, *, known_files: Path | None = None) -> None:
    """`info --verify` of a dataset or model, and the check of a pulled one: every listed file as the manifest
    says (sizes, sha256, records), nothing else in the folder, no link leaving it, and the version recomputed.
    ``known_files``: a folder of files named by their sha256, checked as they were written (a pull's
    ``oci/files``): a model file that is one of them (the same inode) is taken at that digest, not read again."""
    from builder.build.dataset import verify_dataset

    where = entry.path / "manifest.json"
    try:  # the same checks as a pull, reported as a corrupt entry (exit 3)
        listing = listing_of(entry.kind, entry.manifest, where)
        if entry.kind == "dataset":
            verify_dataset(entry)
        else:
            verify_model_files(entry.path, entry.manifest, where, known_files)
        problem = exact_contents_problem(entry.path, listing)  # after: a listed file's own problem is named first
        if problem:
            raise EntryContentError(*problem)
    except RegistryError as err:
        raise EntryContentError(where, str(err).removeprefix(f"{where}: ")) from None
    got = recomputed_version(entry.kind, entry.manifest, entry.path)
    if got != entry.version:
        raise EntryContentError(where, f"its content makes version {got}, not {entry.version}")


def recomputed_version(kind: str, manifest: dict, folder: Path) -> str:
    """The version the (verified) files and manifest of an entry make, the way a build makes it."""
    from builder.build.dataset import version_of
    from builder.build.model import model_version
    from builder.volumes import manifest_layout
    from builder.files import sha256_file

    spec = manifest.get("spec")
    if kind == "dataset":
        layout = manifest_layout(manifest, folder / "manifest.json")
        return version_of(spec, [(s.file, s.records, s.size, s.sha256) for s in layout.volumes],
                          sha256_file(folder / layout.index))
    lock_kind, lock_text = manifest.get("env_lock"), None  # the lock is part of the version: kind and text, or none
    if lock_kind:
        try:  # never through a link, bounded like the entry's other JSON
            lock_text = outdir.read_bytes(folder / "env.lock", MAX_ENTRY_JSON).decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise EntryContentError(folder / "env.lock", getattr(err, "strerror", None) or str(err)) from None
    return model_version(spec, manifest["files"], lock_kind, lock_text)


def _known(known_files: Path | None, st: os.stat_result, sha: str) -> bool:
    if known_files is None or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
        return False
    try:
        named = os.stat(known_files / sha, follow_symlinks=False)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino)


def verify_model_files(folder: Path, manifest: dict, where: Path, known_files: Path | None = None) -> None:
    """Every file the manifest lists is inside ``src/``, a regular file of its size, mode and sha256 (a link: a
    link with its recorded target and the sha256 a build gives it); errors name the manifest, field and file."""
    import hashlib

    from builder.files import sha256_file

    src = folder / "src"
    for n, item in enumerate(_model_files(manifest, where)):
        field, rel = f"files[{n}]", item["path"]
        path = src / rel
        if any((src / "/".join(rel.split("/")[:k])).is_symlink() for k in range(1, rel.count("/") + 1)):
            raise RegistryError(f"{where}: field '{field}.path': {shown(rel)!r} passes through a link")
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise RegistryError(f"{where}: field '{field}.path': src/{shown(rel)} is not in the image") from None
        link = item.get("link")
        if link is not None:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != link or \
                    item["sha256"] != hashlib.sha256(b"symlink:" + link.encode()).hexdigest():
                raise RegistryError(f"{where}: field '{field}.link': src/{shown(rel)} is not a link to "
                                    f"{shown(link)!r} as listed")
            continue
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(f"{where}: field '{field}.path': src/{shown(rel)} is not a regular file")
        if st.st_size != item["size"]:
            raise RegistryError(f"{where}: field '{field}.size': src/{shown(rel)} is {st.st_size} bytes, "
                                f"the manifest says {item['size']}")
        if bool(st.st_mode & 0o111) != item["executable"]:
            raise RegistryError(f"{where}: field '{field}.executable': src/{shown(rel)} differs from the manifest")
        if not _known(known_files, st, item["sha256"]) and sha256_file(path) != item["sha256"]:
            raise RegistryError(f"{where}: field '{field}.sha256': src/{shown(rel)} differs from the manifest")


def _manifest(data: bytes | None, kind: str, name: str, version: str, where: Path) -> dict:
    if data is None:
        raise RegistryError(f"{where}: missing; the image holds no swcli {kind} entry")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise RegistryError(f"{where}: not a readable manifest ({one_line(err)})") from None
    if not isinstance(manifest, dict):
        raise RegistryError(f"{where}: not a manifest (expected a JSON object)")
    for key, label in (("kind", kind), ("name", name), ("version", version)):
        if manifest.get(key) != label:
            raise RegistryError(f"{where}: field '{key}': the manifest says {shown(repr(manifest.get(key)))}, "
                                f"the label io.swcli.{key} says {label!r}")
    return manifest


def extract_entry(layout, image, kind: str, name: str, version: str, staged: Path) -> None:
    """The entry of a dataset or model image into ``staged``: the manifest first, then only what it lists; then
    verified, and its version recomputed."""
    from builder.store import Entry

    inside, where = ENTRY_IN_IMAGE[kind], staged / "manifest.json"
    scratch = staged / ".swcli-manifest"
    scratch.mkdir()
    try:
        data, touched = read_member(layout, image.layers, inside, "manifest.json", MAX_ENTRY_JSON, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = _manifest(data, kind, name, version, where)
    unpack(layout, touched, inside, staged, listing_of(kind, manifest, where))
    verify_entry(Entry(kind, name, version, staged, manifest), known_files=files_dir(layout))


def record_pulled(layout, image, target: str, store, *, known: bool = False):
    """Put a pulled image's store entry in place (see the module docstring); a runtime's is written from its
    labels after its version is recomputed from its layers. An entry of that name and version already in the
    store is kept: the version names its content, checked here for the pulled one. ``known``: the image is the
    one the layout already tags with that version (checked when it was built or pulled), so an entry present
    is taken as it is, without extracting it again."""
    from builder.errors import RefNotFoundError
    from builder.refs import image_name
    from builder.files import write_json_atomic
    from builder.store import utc_now

    kind, name, version = check_labels(target, image.labels)
    if known:
        with contextlib.suppress(RefNotFoundError):
            existing = store.resolve(kind, f"{name}:{version}")
            if existing.version == version:
                return existing
    with store.stage(kind) as staged:
        if kind in ENTRY_IN_IMAGE:
            try:
                extract_entry(layout, image, kind, name, version, staged)
            except SwcliError as err:  # name the file as it is in the image, not in the staging folder
                raise RegistryError(f"{shown(target)}: not recording it: "
                                    f"{str(err).replace(str(staged), ENTRY_IN_IMAGE[kind])}") from None
        else:
            check_runtime_version(image, version, target)
            write_json_atomic(staged / "manifest.json", {
                "kind": kind, "name": name, "version": version, "mode": image.labels.get("io.swcli.env-mode"),
                "image": f"{image_name(kind, name)}:{version}", "image_id": image.image_id, "created": utc_now(),
                "source": f"pulled from {target}"})
        try:
            existing = store.resolve(kind, f"{name}:{version}")
        except RefNotFoundError:
            return store.publish(kind, name, version, staged)
        other = existing.manifest.get("image_id")
        if existing.version == version and kind == "runtime" and isinstance(other, str) and other != image.image_id:
            raise RegistryError(f"{shown(target)}: the store's runtime {name}:{version} is image {shown(other)}, "
                                f"the pulled image is {image.image_id}; refusing it (remove the local one first)")
        return existing if existing.version == version else store.publish(kind, name, version, staged)


def check_runtime_version(image, version: str, target: str) -> None:
    """A runtime's version is made from its environment's layers (after the base, before the SBOM's), as
    :func:`builder.images.runtime_image.runtime_version`; some run of the pulled layers must make it."""
    from builder.images.runtime_image import runtime_version
    from builder.images.image import NewLayer

    mode = image.labels.get("io.swcli.env-mode", "")
    layers = [NewLayer(blob, "") for blob in image.layers]
    if not any(runtime_version(mode, layers[k:-1]) == version for k in range(1, len(layers) - 1)):
        raise RegistryError(f"{shown(target)}: not recording it: no run of its layers makes version {version} "
                            "(label io.swcli.version); it is not the runtime it names")
