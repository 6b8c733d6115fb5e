"""Building a dataset: run the user's slicer over the raw files and write the records into shards.

The build streams: records go to disk as the slicer yields them and each volume is hashed on the way, on a thread
of its own (no shard is read back), so memory stays flat whatever the dataset size. It writes into a staging directory and publishes with one rename, so a slicer
that raises, a count mismatch or Ctrl-C leaves nothing in the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Callable, Iterable, Iterator

from builder import __version__
from builder.api.dataset import BuildExecutor
from builder.errors import DatasetBuildError, USER_CODE_ERRORS, UserCodeError
from builder.loader import load_class
from builder.volumes import INDEX_NAME, VolumeWriter, VolumeInfo
from builder.snapshot import glob_regex  # the .swignore glob: one semantics for every pattern
from builder.spec import DatasetSpec, load_dataset_spec
from builder.files import sha256_file, write_json_atomic
from builder.store import Entry, Store, make_version, utc_now

Progress = Callable[[int], None]
_MISSING = object()


@dataclass(frozen=True)
class DatasetBuildResult:
    entry: Entry
    records: int
    volumes: int
    seconds: float


def filter_regex(pattern: str) -> re.Pattern:
    """One glob semantics for ``data_filter``/``label_filter``, the translator ``.swignore`` uses: ``*`` and ``?``
    stay within one path segment, ``**`` spans zero or more folders. A pattern with no ``/`` matches a file's name
    at any depth (``test_batch`` finds ``cifar-10-batches-py/test_batch``); a pattern with a ``/`` matches the
    whole path relative to ``data_dir`` (a leading ``/`` or ``./`` only anchors it there)."""
    if pattern.startswith("./"):
        pattern = "/" + pattern[2:]
    if pattern.startswith("/"):
        pattern = pattern.lstrip("/")
    elif "/" not in pattern:
        pattern = "**/" + pattern
    return glob_regex(pattern)


def find_files(spec: DatasetSpec, pattern: str, field: str) -> list[Path]:
    """Files under ``data_dir`` matching ``pattern`` (see :func:`filter_regex`), sorted by relative path.

    Symlinked folders are followed (people link their data in), each real folder once.
    """
    if not spec.data_dir.is_dir():
        raise DatasetBuildError(f"{spec.path}: field 'data_dir': {spec.data_dir} is not a directory")
    regex = filter_regex(pattern)
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(spec.data_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(spec.data_dir).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in filenames:
            rel = prefix + name
            if regex.match(rel) and (Path(dirpath) / name).is_file():
                found.append(rel)
    if not found:
        raise DatasetBuildError(f"{spec.path}: field '{field}': '{pattern}' matches no file under {spec.data_dir}")
    return [spec.data_dir / rel for rel in sorted(found)]


def _slices(kind: str, method: Callable[[str], Iterable[bytes]], files: list[Path], ref: str) -> Iterator[tuple[Path, int, bytes]]:
    """Yield (file, position in file, bytes) for every record, turning slicer failures into one-line errors."""
    for path in files:
        position = -1
        try:
            for position, item in enumerate(method(str(path))):
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise UserCodeError(
                        f"{ref}: iter_{kind}_slice({path.name}) yielded {type(item).__name__} at record {position}, expected bytes",
                        ref=ref,
                        record=position,
                    )
                yield path, position, bytes(item)
        except UserCodeError:
            raise
        except USER_CODE_ERRORS as err:
            raise UserCodeError(
                f"{ref}: iter_{kind}_slice({path}) raised {type(err).__name__}: {err} (after record {position})",
                ref=ref,
                record=position + 1,
            ) from None


def build_dataset(
    directory: str | Path,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> DatasetBuildResult:
    """Build the dataset described by ``directory/dataset.yaml`` into the store and return its entry."""
    started = time.perf_counter()
    store = store or Store()
    spec = load_dataset_spec(directory)
    data_files = find_files(spec, spec.data_filter, "data_filter")
    label_files = find_files(spec, spec.label_filter, "label_filter")
    slicer_cls = load_class(spec.process, spec.root, BuildExecutor, spec_file=spec.path, field="process")
    try:
        slicer = slicer_cls(spec=spec)
    except TypeError:
        slicer = slicer_cls()
    except USER_CODE_ERRORS as err:
        raise UserCodeError(f"{spec.process}: constructor raised {type(err).__name__}: {err}", ref=spec.process) from None

    with store.stage("dataset") as staged:
        writer = VolumeWriter(staged, spec.alignment_size, spec.volume_size)
        data_bytes = label_bytes = 0
        pairs = zip_longest(
            _slices("data", slicer.iter_data_slice, data_files, spec.process),
            _slices("label", slicer.iter_label_slice, label_files, spec.process),
            fillvalue=_MISSING,
        )
        try:
            for data_item, label_item in pairs:
                if data_item is _MISSING or label_item is _MISSING:
                    raise _count_mismatch(spec, data_item is _MISSING, writer.count, data_files, label_files, slicer)
                data, label = data_item[2], label_item[2]
                writer.add(data, label)
                data_bytes += len(data)
                label_bytes += len(label)
                if progress and writer.count % 1024 == 0:
                    progress(writer.count)
            if writer.count == 0:
                raise DatasetBuildError(f"{spec.path}: the slicer {spec.process} yielded no records")
        except BaseException:
            writer.abort()  # its hashing thread ends with it
            raise
        volumes = writer.close()
        if progress:
            progress(writer.count)
        version = dataset_version(spec, volumes, staged / INDEX_NAME)
        manifest = _manifest(spec, version, writer.count, volumes, staged, data_bytes, label_bytes, started)
        names = label_names(spec, slicer)
        if names is not None:
            manifest["label_names"] = names
        write_json_atomic(staged / "manifest.json", manifest)
        entry = store.publish("dataset", spec.name, version, staged)
    return DatasetBuildResult(entry, writer.count, len(volumes), time.perf_counter() - started)


def dataset_version(spec: DatasetSpec, volumes: list[VolumeInfo], index: Path) -> str:
    """The version names the bytes: the spec, then every volume's name, size and sha256 (hashed as they were
    written), then the index (records -> places and lengths, small). The same records and attrs give the same
    volumes, so the same version, and no record is hashed twice."""
    return version_of(spec.raw, [(vol.name, vol.records, vol.size, vol.sha256) for vol in volumes], sha256_file(index))


def version_of(raw_spec: object, volumes: list[tuple[str, int, int, str]], index_sha256: str) -> str:
    """:func:`dataset_version` from the spec and every volume's (name, records, size, sha256) as the manifest
    records them, and the index's sha256: what `swcli pull` recomputes from what it pulled."""
    digest = hashlib.sha256(json.dumps(raw_spec, sort_keys=True, default=str).encode())
    for name, records, size, sha256 in volumes:
        digest.update(f"\n{name}\0{records}\0{size}\0{sha256}".encode())
    digest.update(f"\n{INDEX_NAME}\0{index_sha256}".encode())
    return make_version(digest.digest())


def label_names(spec: DatasetSpec, slicer: BuildExecutor) -> dict[str, str] | None:
    """{str(label value): name}: dataset.yaml's ``labels:`` if it has them, else the slicer's ``label_names()``
    (checked: a list or a mapping of non-empty strings), else None. Keys sorted, numbers numerically."""
    names = getattr(spec, "label_names", None)
    if names:
        return _sorted_names(dict(names))
    hook = getattr(slicer, "label_names", None)
    if hook is None:
        return None
    where = f"{spec.process}.label_names()"
    try:
        names = hook()
    except USER_CODE_ERRORS as err:
        raise UserCodeError(f"{where} raised {type(err).__name__}: {err}", ref=spec.process) from None
    if names is None:
        return None
    if isinstance(names, (list, tuple)):
        pairs = list(enumerate(names))
    elif isinstance(names, dict):
        pairs = list(names.items())
    else:
        raise UserCodeError(f"{where} returned {type(names).__name__}, expected a list or a mapping of names",
                            ref=spec.process)
    out = {}
    for key, name in pairs:
        if not isinstance(name, str) or not name.strip():
            raise UserCodeError(f"{where}: the name of label {key!r} is {name!r}, expected a non-empty string",
                                ref=spec.process)
        if isinstance(key, bool) or not isinstance(key, (int, str)) or (isinstance(key, str) and not key):
            raise UserCodeError(f"{where}: label value {key!r} is not an int or a non-empty string", ref=spec.process)
        if str(key) in out:
            raise UserCodeError(f"{where}: label value {key!r} is named twice", ref=spec.process)
        out[str(key)] = name
    return _sorted_names(out) if out else None


def _sorted_names(names: dict[str, str]) -> dict[str, str]:
    def order(key: str):
        return (0, int(key), key) if key.lstrip("-").isdigit() else (1, 0, key)

    return {key: names[key] for key in sorted(names, key=order)}


def _count_mismatch(spec, data_ran_out, seen, data_files, label_files, slicer) -> DatasetBuildError:
    """Both counts, so the user knows which side is short; counting the rest is cheap next to a failed build."""
    other = slicer.iter_label_slice if data_ran_out else slicer.iter_data_slice
    try:
        total = str(sum(1 for f in (label_files if data_ran_out else data_files) for _ in other(str(f))))
    except USER_CODE_ERRORS:
        total = f"more than {seen}"
    longer, shorter = ("label", "data") if data_ran_out else ("data", "label")
    return DatasetBuildError(
        f"{spec.path}: data/label count mismatch: {shorter}_filter files yield {seen} records, "
        f"{longer}_filter files yield {total}"
    )


def _manifest(spec, version, count, volumes, staged: Path, data_bytes, label_bytes, started) -> dict:
    shards = []
    for vol in volumes:
        shards.append({"file": vol.name, "records": vol.records, "size": vol.size, "sha256": vol.sha256})
    index = staged / INDEX_NAME
    return {
        "kind": "dataset",
        "name": spec.name,
        "version": version,
        "created": utc_now(),
        "format": "swds/2",
        "records": count,
        "attr": {"alignment_size": spec.alignment_size, "volume_size": spec.volume_size, "layer_size": spec.layer_size},
        "totals": {
            "records": count,
            "data_bytes": data_bytes,
            "label_bytes": label_bytes,
            "shard_bytes": sum(s["size"] for s in shards),
            "shards": len(shards),
        },
        "shards": shards,
        "index": {"file": index.name, "size": index.stat().st_size},
        "desc": spec.desc,
        "tag": spec.tag,
        "spec": spec.raw,
        "build_seconds": round(time.perf_counter() - started, 3),
        "swcli_version": __version__,
    }


def _regular_file(path: Path, what: str) -> int:
    """The size of ``path``, which must be a regular file (not a link, not a folder); ShardCorruptError otherwise."""
    from builder.errors import ShardCorruptError

    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ShardCorruptError(path, 0, f"{what} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ShardCorruptError(path, 0, f"{what} is not a regular file")
    return st.st_size


def verify_dataset(entry: Entry) -> None:
    """Check the manifest's shape (every file a plain name inside the entry), every shard's size and sha256, the
    index's size, then read back every record (header and payload CRCs). Runs on every pulled dataset too."""
    from builder.errors import ShardCorruptError
    from builder.refs import is_version, name_problem
    from builder.volumes import MANIFEST_NAME, DatasetReader, ManifestError, manifest_layout

    where = entry.path / MANIFEST_NAME
    m = entry.manifest
    layout = manifest_layout(m, where)
    if m.get("kind", "dataset") != "dataset":
        raise ManifestError(where, "kind", f"{m.get('kind')!r} is not 'dataset'")
    problem = name_problem(m.get("name"))
    if problem:
        raise ManifestError(where, "name", problem)
    if not is_version(m.get("version")):
        raise ManifestError(where, "version", f"{m.get('version')!r} is not a version")
    for shard in layout.volumes:
        path = entry.path / shard.file
        size = _regular_file(path, "shard file")
        if size != shard.size:
            raise ShardCorruptError(path, min(size, shard.size), f"file is {size} bytes, manifest says {shard.size}")
        if sha256_file(path) != shard.sha256:
            raise ShardCorruptError(path, 0, "sha256 differs from the manifest")
    index = entry.path / layout.index
    size = _regular_file(index, "index file")
    if size != layout.index_size:
        raise ShardCorruptError(index, min(size, layout.index_size), f"file is {size} bytes, manifest says {layout.index_size}")
    with DatasetReader(entry.path, m) as reader:
        if len(reader) != layout.records:
            raise ShardCorruptError(index, 0, f"index holds {len(reader)} records, manifest says {layout.records}")
        for _ in reader:
            pass
