"""A dataset project whose image comes in many small layers (4k volumes, 12k layers), built into the test's
store with `--no-load`: for the tests of dataset layers, of pulls and of a pod's slice of a registry image."""

from __future__ import annotations

from pathlib import Path

from builder.store import Store
from tests.helpers.datasets import write_tiny_dataset


def records(count: int) -> list[tuple[bytes, int]]:
    """Records of 300..499 bytes: with 64-byte alignment and 4k volumes, about 9 per volume."""
    return [(bytes([i % 251]) * (300 + i % 200), i % 3) for i in range(count)]


def project(root: Path, count: int, *, volume: str = "4k", layer: str | None = "12k") -> Path:
    extra = f"  layer_size: {layer}\n" if layer else ""
    path = write_tiny_dataset(root, records(count), files=2, volume=volume)
    spec = path / "dataset.yaml"
    spec.write_text(spec.read_text() + extra)
    return path


def built(cli, path: Path):
    res = cli("dataset", "build", path, "--no-load")
    assert res.code == 0, res.err
    entry = Store().resolve("dataset", "tiny")
    from builder.images.image import read_image

    return entry, read_image(Store().layout, f"swds/tiny:{entry.version}")
