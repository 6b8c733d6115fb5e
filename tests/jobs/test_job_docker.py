"""`swcli job run` against the real engine when the handler kills its container: the exit code and the log's end.

The `docker` marker (an engine with the base image); the engine and runtime fixtures come from tests/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.helpers.models import HANDLER, write_model

pytestmark = pytest.mark.docker

# record 3 prints a line (not flushed: a container's stdout is a pipe) and ends the process, as a crashing
# native library would: no exception, no summary, no Python cleanup
EXITS = HANDLER.replace("    def ppl(self, data, **kw):\n", """    def ppl(self, data, **kw):
        print(f"ppl on record {kw['index']}")
        if kw["index"] == 3:
            import os
            os._exit(3)
""")


@pytest.mark.parametrize("shards", [1, 2])
def test_a_container_that_exits_says_so_with_the_end_of_its_log(engine, cli, tiny_dataset, tiny_runtime,  # noqa: F811
                                                               tmp_path, shards):
    assert cli("dataset", "build", tiny_dataset).code == 0
    res = cli("model", "build", write_model(tmp_path / "model", EXITS), "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    image = next(t for t in engine.images.get("swmp/modthree:latest").tags if not t.endswith(":latest"))
    res = cli("job", "run", "--model", "modthree", "--dataset", "tiny", "--shards", shards, "-o", tmp_path / "out")
    assert res.code == 3
    what = "eval" if shards == 1 else "eval shard 0"
    lines = res.out.splitlines()
    header = f"container {image} ({what}) exited with code 3; last log lines:"
    assert header in lines, res.out
    after = lines[lines.index(header) + 1:]
    tail = after[:next((i for i, line in enumerate(after) if not line.startswith("  ")), len(after))]
    assert 0 < len(tail) <= 20 and tail[-1] == "  ppl on record 3", res.out  # its own lines, not the other shard's
    if shards > 1:
        assert "shard(s) 0 of 2 failed; not merging" in lines
    assert engine.containers.list(all=True, filters={"ancestor": image}) == []  # all removed


def test_docker_run_without_user_fails_on_the_output_folder_in_one_line(engine, cli, tiny_runtime, tmp_path):
    """The image runs as uid 1000; a root-owned host folder mounted at /output is refused before the model loads."""
    from docker.errors import ContainerError

    from tests.helpers.engine import run_removed

    res = cli("model", "build", write_model(tmp_path / "model", HANDLER), "--skip-gen-env", "--runtime", tiny_runtime)
    assert res.code == 0, res.err
    dataset, output = tmp_path / "dataset", tmp_path / "output"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")  # a dataset is mounted; the output check comes before reading it
    output.mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # reachable by uid 1000, writable by root only
    with pytest.raises(ContainerError) as err:
        run_removed(engine, "swmp/modthree:latest", ["eval"],
                    volumes={str(dataset): {"bind": "/dataset", "mode": "ro"}, str(output): {"bind": "/output", "mode": "rw"}})
    lines = [line for line in err.value.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and '--user "$(id -u):$(id -g)"' in lines[0] and "uid 1000" in lines[0], lines
    assert list(output.iterdir()) == []
