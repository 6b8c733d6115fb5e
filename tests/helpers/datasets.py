"""The tiny dataset project most tests build: records pickled into files, sliced by a BuildExecutor of its own."""

from __future__ import annotations

import textwrap
from pathlib import Path

SLICER = '''
import pickle

from builder.api.dataset import BuildExecutor


class Slicer(BuildExecutor):
    """Records are the rows of an .npy-free pickle: {"data": [bytes...], "labels": [int...]}."""

    def iter_data_slice(self, path):
        with open(path, "rb") as fh:
            for item in pickle.load(fh)["data"]:
                yield item

    def iter_label_slice(self, path):
        with open(path, "rb") as fh:
            for label in pickle.load(fh)["labels"]:
                yield bytes([label])
'''


def write_tiny_dataset(root: Path, records: list[tuple[bytes, int]], *, files: int = 1, yaml_extra: str = "",
                       alignment: str = "64", volume: str = "1k", slicer: str = SLICER) -> Path:
    """A dataset project with ``records`` split over ``files`` pickles; returns its folder."""
    import pickle

    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "slicer.py").write_text(slicer)
    data = root / "data"
    data.mkdir(exist_ok=True)
    per = max(1, -(-len(records) // files))
    for n in range(files):
        chunk = records[n * per : (n + 1) * per]
        with open(data / f"part_{n}.pkl", "wb") as fh:
            pickle.dump({"data": [d for d, _ in chunk], "labels": [lbl for _, lbl in chunk]}, fh)
    (root / "dataset.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: tiny
            data_dir: data
            data_filter: "part_*.pkl"
            label_filter: "part_*.pkl"
            process: code.slicer:Slicer
            desc: tiny test dataset
            attr:
              alignment_size: {alignment}
              volume_size: {volume}
            """
        )
        + yaml_extra
    )
    return root
