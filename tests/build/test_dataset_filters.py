"""`data_filter`/`label_filter`: one glob semantics (the .swignore one), checked through real builds."""

from __future__ import annotations

import textwrap

import pytest

from builder.build.dataset import filter_regex
from builder.volumes import DatasetReader
from builder.store import Store

ONE_RECORD_PER_FILE = '''
from pathlib import Path

from builder.api.dataset import BuildExecutor


class Slicer(BuildExecutor):
    """One record per file: data = the file's bytes, label = its path relative to data/."""

    def iter_data_slice(self, path):
        yield Path(path).read_bytes()

    def iter_label_slice(self, path):
        yield Path(path).relative_to(Path(self.spec.data_dir)).as_posix().encode()
'''

FILES = ["a.bin", "b.txt", "sub/c.bin", "sub/deep/d.bin", "sub/deep/e.txt", "x.bin.bak"]


def project(root, data_filter: str):
    (root / "code").mkdir(parents=True)
    (root / "code" / "__init__.py").write_text("")
    (root / "code" / "slicer.py").write_text(ONE_RECORD_PER_FILE)
    for rel in FILES:
        (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / rel).write_bytes(rel.encode())
    (root / "dataset.yaml").write_text(textwrap.dedent(f"""\
        name: files
        data_dir: data
        data_filter: "{data_filter}"
        label_filter: "{data_filter}"
        process: code.slicer:Slicer
        """))
    return root


def labels_built(cli, root) -> list[str]:
    res = cli("dataset", "build", "--no-image", root)
    assert res.code == 0, res.err
    with DatasetReader(Store().resolve("dataset", "files").path) as reader:
        return [r.label.decode() for r in reader]


@pytest.mark.parametrize("pattern, expected", [
    ("**/*.bin", ["a.bin", "sub/c.bin", "sub/deep/d.bin"]),   # ** is zero folders too: a.bin at the top counts
    ("*.bin", ["a.bin", "sub/c.bin", "sub/deep/d.bin"]),      # no '/': the file name, at any depth
    ("sub/*.bin", ["sub/c.bin"]),                              # '*' does not cross '/'
    ("sub/**/*.bin", ["sub/c.bin", "sub/deep/d.bin"]),
    ("/*.bin", ["a.bin"]),                                     # a leading '/' anchors at data_dir
    ("./*.bin", ["a.bin"]),
    ("sub/**", ["sub/c.bin", "sub/deep/d.bin", "sub/deep/e.txt"]),
    ("*/deep/?.txt", ["sub/deep/e.txt"]),
])
def test_filters_select_the_same_files_whatever_the_depth(cli, tmp_path, pattern, expected):
    assert labels_built(cli, project(tmp_path / "p", pattern)) == expected


def test_star_stays_within_one_segment():
    assert filter_regex("sub/*.bin").match("sub/c.bin")
    assert not filter_regex("sub/*.bin").match("sub/deep/d.bin")
    assert filter_regex("*b.bin").match("su/b/b.bin")  # the name part alone matches
    assert not filter_regex("s*/d.bin").match("sub/deep/d.bin")
    assert not filter_regex("**/*.bin").match("x.bin.bak")


def test_a_filter_matching_nothing_is_one_line(cli, tmp_path):
    res = cli("dataset", "build", "--no-image", project(tmp_path / "p", "nothing/*.bin"))
    assert res.code != 0 and len(res.err.strip().splitlines()) == 1
    assert "field 'data_filter'" in res.err and "nothing/*.bin" in res.err
