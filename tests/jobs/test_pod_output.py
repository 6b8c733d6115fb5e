"""The model image's output folder is checked before the model loads (issue 21): `docker run` without `--user`
fails in one line saying how to run it, not after torch and the weights are in memory."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

import builder.cli.container as image
from builder.errors import EvalError
from builder.jobs.pod import check_writable

USER_FLAG = '--user "$(id -u):$(id -g)"'


def test_the_nearest_existing_folder_is_probed(tmp_path):
    probed = []
    check_writable(tmp_path / "out" / "parts" / "3", access=lambda path, mode: probed.append(path) or True)
    assert probed == [str(tmp_path)]
    with pytest.raises(EvalError) as err:
        check_writable(tmp_path, access=lambda path, mode: False)
    assert USER_FLAG in str(err.value) and str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def _as_uid(uid: int, run) -> tuple[int, str]:
    """``run()`` in a forked child as ``uid`` (no groups); its return code and what it wrote on stderr."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, then run
        code = 99
        try:
            sys.stderr = open(write_end, "w", buffering=1)  # what the app prints on sys.stderr (pytest holds fd 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = run()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 98)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        err = fh.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a folder of another uid and drops to a third")
def test_eval_in_the_image_refuses_a_folder_it_cannot_write_before_loading_the_model(tmp_path, monkeypatch, capsys):
    top = Path(tempfile.mkdtemp(prefix="swcli-output-"))  # under /tmp: pytest's own folders are root's only
    try:
        top.chmod(0o755)
        dataset, output = top / "dataset", top / "output"
        dataset.mkdir(mode=0o755)
        (dataset / "manifest.json").write_text("{}")
        output.mkdir(mode=0o755)
        os.chown(output, 1000, 1000)  # a host folder of another user, mounted at /output
        monkeypatch.setattr(image, "DATASET_DIR", dataset)
        monkeypatch.setattr(image, "MODEL_DIR", top / "no-model-here")  # loading it would fail with another line
        code, err = _as_uid(2000, lambda: image.main(["eval", "--output", str(output)]))
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1, err
        assert lines[0].startswith("swcli: error: ") and USER_FLAG in lines[0] and "uid 2000" in lines[0], err
        capsys.readouterr()
        assert image.main(["eval", "--output", str(output / "run")]) != 0  # root may write it: on to the model
        err = capsys.readouterr().err
        assert USER_FLAG not in err and "no-model-here" in err, err
    finally:
        shutil.rmtree(top)
