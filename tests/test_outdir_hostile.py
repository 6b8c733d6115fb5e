"""Output folders someone else prepared (issue 18, class 6): nothing is written through a link, nothing blocks on
a FIFO, a hard link to a file elsewhere is never changed.

Every command runs as a real process (``python -m builder``) with a deadline, so a regression that blocks on a
FIFO fails instead of hanging. A victim file outside the output folder stands for the file a planted link points
to: it must come out byte for byte unchanged, and a refusal is one ``swcli: error:`` line naming the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.counted import write_model

REPO = Path(__file__).resolve().parent.parent
VICTIM_TEXT = b"precious: not swcli's\n"
DEADLINE = 90  # seconds a command may take here; a FIFO that blocks it fails the test at this point


def swcli(*args, timeout: float = DEADLINE) -> subprocess.CompletedProcess:
    """``swcli ARGS`` as a process of its own (SWCLI_HOME is the test's, set by the swcli_home fixture)."""
    return subprocess.run([sys.executable, "-m", "builder", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "CALLS": os.devnull})


def refused(res: subprocess.CompletedProcess, *words: str) -> None:
    """One ``swcli: error:`` line containing ``words``, and a non-zero exit."""
    assert res.returncode != 0, (res.stdout, res.stderr)
    assert res.stderr.startswith("swcli: error: ") and res.stderr.count("\n") == 1, res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


@pytest.fixture()
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    return path


def untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_TEXT
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]  # nothing created beside it either


@pytest.fixture()
def built(cli, tiny_dataset, tmp_path):
    """The tiny dataset (50 records) and the `modthree` model in the test's store, and one finished run."""
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", "--skip-gen-env", write_model(tmp_path / "model")).code == 0
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "reference")
    assert res.returncode == 0, res.stderr
    return tmp_path / "reference"


def plant(kind: str, path: Path, victim: Path) -> None:
    if kind == "symlink":
        os.symlink(victim, path)
    elif kind == "hardlink":
        os.link(victim, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "keep").write_text("x")
    else:
        raise AssertionError(kind)


def interrupted_copy(reference: Path, out: Path, status: str = "interrupted") -> None:
    """``out`` as an interrupted run of the reference's model and dataset, with nothing predicted yet."""
    out.mkdir()
    (out / "run.json").write_text((reference / "run.json").read_text().replace('"succeeded"', f'"{status}"'))


# ------------------------------------------------------------------------------------------ model eval -o


FIXED = ["run.json", "metrics.json", "results.jsonl", "results.jsonl.partial", ".results.jsonl.tmp",
         ".swcli-run.lock"]


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_eval_refuses_a_link_or_fifo_at_every_fixed_name(built, tmp_path, victim, name, kind):
    out = tmp_path / "out"
    out.mkdir()
    plant(kind, out / name, victim)
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out)
    refused(res, str(out / name), "FIFO" if kind == "fifo" else "symbolic link")
    untouched(victim)
    assert (out / name).is_symlink() if kind == "symlink" else (out / name).is_fifo()  # left for the user to see


@pytest.mark.parametrize("name", [".swcli-run.lock"])
def test_eval_refuses_a_hard_link_where_it_writes_in_place(built, tmp_path, victim, name):
    out = tmp_path / "out"
    out.mkdir()
    plant("hardlink", out / name, victim)
    refused(swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out), str(out / name), "hard links")
    untouched(victim)


def test_eval_refuses_a_folder_where_a_file_belongs(built, tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    plant("folder", out / ".results.jsonl.tmp", victim)
    refused(swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out), str(out / ".results.jsonl.tmp"),
            "folder")
    assert (out / ".results.jsonl.tmp" / "keep").read_text() == "x"


def test_eval_refuses_a_symlinked_output_folder(built, tmp_path, victim):
    link = tmp_path / "out"
    os.symlink(victim.parent, link)
    refused(swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", link), str(link), "symbolic link")
    untouched(victim)
    # a link at a level swcli would create is refused too, not followed
    (tmp_path / "deep").mkdir()
    os.symlink(victim.parent, tmp_path / "deep" / "a")
    refused(swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", tmp_path / "deep" / "a"), "symbolic link")
    untouched(victim)


def test_eval_temp_names_are_not_guessable_and_hard_links_are_replaced(built, tmp_path, victim):
    """Links planted at the pid-based temp names of the next few hundred processes catch nothing, and a hard link
    at a name written whole (to a temp file renamed over it, or removed and created anew) is replaced: the other
    link keeps its bytes, and the outputs equal an untouched folder's."""
    out = tmp_path / "out"
    out.mkdir()
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last + 1, last + 400):
        for name in ("run.json", "metrics.json"):
            os.symlink(victim, out / f".{name}.{pid}.tmp")
    for name in ("run.json", "metrics.json", "results.jsonl", ".results.jsonl.tmp"):
        plant("hardlink", out / name, victim)
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out)
    assert res.returncode == 0, res.stderr
    untouched(victim)
    for name in ("results.jsonl", "metrics.json"):
        assert (out / name).read_bytes() == (built / name).read_bytes()
        assert os.stat(out / name).st_nlink == 1


# ------------------------------------------------------------------------------------------------ --resume


RESUMED = ["results.jsonl.partial", "results.jsonl", ".results.jsonl.tmp"]  # found, moved, cut and appended to


@pytest.mark.parametrize("kind,name", [(kind, name) for kind in ("symlink", "hardlink", "fifo") for name in RESUMED]
                         + [("symlink", "metrics.json"), ("fifo", "metrics.json")])
def test_resume_never_reads_cuts_or_appends_through_a_planted_file(built, tmp_path, victim, name, kind):
    out = tmp_path / "out"
    interrupted_copy(built, out)
    plant(kind, out / name, victim)
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume")
    untouched(victim)
    refused(res, str(out / name), {"symlink": "symbolic link", "hardlink": "hard links", "fifo": "FIFO"}[kind])


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_resume_refuses_a_planted_run_json(built, tmp_path, victim, kind):
    out = tmp_path / "out"
    out.mkdir()
    # the victim is a run.json of this very run: followed, it would be taken for this folder's
    victim.write_bytes((built / "run.json").read_bytes().replace(b'"succeeded"', b'"interrupted"'))
    text = victim.read_bytes()
    if kind == "symlink":
        os.symlink(victim, out / "run.json")
    else:
        os.mkfifo(out / "run.json")
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume")
    refused(res, str(out / "run.json"))
    assert victim.read_bytes() == text


def test_resume_refuses_a_run_json_too_big_to_be_ours(built, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / "run.json", "wb") as fh:  # sparse: 5 GiB on paper, nothing on disk
        fh.truncate(5 << 30)
    res = swcli("model", "eval", "modthree", "--dataset", "tiny", "-o", out, "--resume", timeout=30)
    refused(res, str(out / "run.json"), "larger than")


# -------------------------------------------------------------------------------------------- eval report


@pytest.mark.parametrize("name", ["report.html", ".report.html.tmp"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_report_refuses_a_planted_report_or_temp_name(built, tmp_path, victim, name, kind):
    where = tmp_path / "site"
    where.mkdir()
    plant(kind, where / name, victim)
    res = swcli("eval", "report", built, "-o", where / "report.html")
    untouched(victim)
    if name.endswith(".tmp"):  # the temp name is a new random one: what was planted at the old one is not used
        assert res.returncode == 0 and (where / "report.html").read_text().startswith("<!"), res.stderr
        return
    refused(res, str(where / "report.html"), "FIFO" if kind == "fifo" else "symbolic link")


@pytest.mark.parametrize("name", ["results.jsonl", "metrics.json"])
def test_report_does_not_block_on_a_fifo_in_the_run_folder(built, tmp_path, name):
    run = tmp_path / "run"
    run.mkdir()
    for other in ("results.jsonl", "metrics.json", "run.json"):
        if other != name:
            (run / other).write_bytes((built / other).read_bytes())
    os.mkfifo(run / name)
    refused(swcli("eval", "report", run, "-o", tmp_path / "r.html"), str(run / name), "FIFO")
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------- eval merge


@pytest.fixture()
def parts(built, tmp_path) -> list[Path]:
    out = []
    for index in range(2):
        part = tmp_path / f"part{index}"
        res = swcli("model", "eval", "modthree", "--dataset", "tiny", "--shard", f"{index}/2", "-o", part)
        assert res.returncode == 0, res.stderr
        out.append(part)
    return out


@pytest.mark.parametrize("name", ["run.json", "metrics.json", "results.jsonl", ".results.jsonl.tmp"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_merge_refuses_a_planted_output_name(parts, tmp_path, victim, name, kind):
    out = tmp_path / "merged"
    out.mkdir()
    plant(kind, out / name, victim)
    res = swcli("eval", "merge", *parts, "-o", out)
    untouched(victim)
    if name.startswith("."):  # the old fixed temp name: now a new random one, so what is planted there is not used
        assert res.returncode == 0, res.stderr
        reference = parts[0].parent / "reference"
        assert (out / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()
        return
    refused(res, str(out / name), "FIFO" if kind == "fifo" else "symbolic link")


@pytest.mark.parametrize("name", ["run.json", "results.jsonl"])
@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_merge_does_not_read_a_part_through_a_link_or_block_on_a_fifo(parts, tmp_path, victim, name, kind):
    if kind == "symlink":  # a part's file swapped for a link to a copy elsewhere: never read through
        victim.write_bytes((parts[0] / name).read_bytes())
    text = victim.read_bytes()
    (parts[0] / name).unlink()
    plant(kind, parts[0] / name, victim)
    refused(swcli("eval", "merge", *parts, "-o", tmp_path / "merged"), str(parts[0] / name))
    assert victim.read_bytes() == text


def test_merge_refuses_a_symlinked_output_folder(parts, tmp_path, victim):
    os.symlink(victim.parent, tmp_path / "merged")
    refused(swcli("eval", "merge", *parts, "-o", tmp_path / "merged"), "symbolic link")
    untouched(victim)


# -------------------------------------------------------------- job run -o, --dockerfile-only, dataset export


def test_job_run_refuses_a_symlinked_output_folder_before_any_work(built, tmp_path, victim):
    os.symlink(victim.parent, tmp_path / "out")
    refused(swcli("job", "run", "-m", "modthree", "-d", "tiny", "-o", tmp_path / "out"), str(tmp_path / "out"), "symbolic link")
    untouched(victim)


def test_dockerfile_only_refuses_a_symlinked_folder(cli, tiny_dataset, tmp_path):
    empty = tmp_path / "elsewhere-empty"
    empty.mkdir()
    os.symlink(empty, tmp_path / "ctx")
    refused(swcli("dataset", "build", tiny_dataset, "--dockerfile-only", tmp_path / "ctx"), str(tmp_path / "ctx"),
            "symbolic link")
    assert list(empty.iterdir()) == []


def test_dataset_export_refuses_a_symlinked_folder(built, tmp_path, victim):
    """Already so before issue 18 (engine.check_target): kept so the export stays covered with the others."""
    os.symlink(victim.parent, tmp_path / "export")
    refused(swcli("dataset", "export", "tiny", tmp_path / "export"), str(tmp_path / "export"), "symbolic link")
    untouched(victim)


# ------------------------------------------------------------------------------------------- the adapter


def test_a_fifo_is_refused_without_blocking_for_every_way_in(tmp_path):
    """Reading, writing in place and appending all check the file before a byte moves."""
    from builder import outdir

    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    for attempt in (lambda: outdir.read_bytes(fifo), lambda: outdir.open_in_place(fifo),
                    lambda: outdir.open_in_place(fifo, os.O_WRONLY | os.O_APPEND),
                    lambda: outdir.create_new(fifo), lambda: outdir.write_file(fifo, b"x")):
        with pytest.raises(outdir.UnsafeFileError, match="FIFO"):
            attempt()
    assert fifo.is_fifo()
