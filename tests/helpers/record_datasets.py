"""A dataset entry published straight into a store from record bytes (VolumeWriter volumes and a minimal manifest),
without a dataset project or a build: for the readers of records (the console's thumbnails)."""

from __future__ import annotations

import hashlib

from builder.files import write_json_atomic
from builder.store import Entry, Store, make_version
from builder.volumes import VolumeWriter


def cifar_like(count: int, seed: int = 0) -> list[bytes]:
    """``count`` records of 3072 bytes each (planar 3x32x32 uint8 pixels), different per record."""
    return [hashlib.shake_256(f"{seed}:{i}".encode()).digest(3072) for i in range(count)]


def publish_records(store: Store, name: str, records: list[bytes], labels: list[int] | None = None) -> Entry:
    """Publish ``records`` (data bytes; label i % 10 unless given) as dataset ``name``; returns its entry."""
    labels = labels if labels is not None else [i % 10 for i in range(len(records))]
    digest = hashlib.sha256(b"".join(records) + bytes(labels)).digest()
    version = make_version(digest)
    with store.stage("dataset") as staged:
        writer = VolumeWriter(staged, 64, 1 << 20)
        for data, label in zip(records, labels):
            writer.add(data, bytes([label]))
        writer.close()
        write_json_atomic(staged / "manifest.json", {"kind": "dataset", "name": name, "version": version,
                                                     "created": "2026-01-01T00:00:00+00:00", "records": len(records)})
        return store.publish("dataset", name, version, staged)
