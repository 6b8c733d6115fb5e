"""What a user relies on without checking: a package's version covers everything in it (the env lock too), an
image tag names one image for good, a bad flag value is a usage error (exit 2) whatever checks it, and a store
root that is not a folder is one line and a non-zero exit, never an empty table."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.store import Store
from tests.helpers.cli import one_line_error

ROOT = Path(__file__).resolve().parents[2]


def _built(res) -> tuple[str, str]:
    """(version, env lock) from `model build`'s summary line."""
    assert res.code == 0, res.err
    said = re.search(r"built model modthree:(\w+): .* env lock: (\S+?),", res.out)
    assert said, res.out
    return Store().resolve("model", f"modthree:{said.group(1)}").version, said.group(2)


# ------------------------------------------------------------------------------------------------- env lock


def test_the_env_lock_is_part_of_the_version_skip_first(cli, model_dir, swcli_home, tmp_path, monkeypatch):
    skipped, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert said == "skipped"
    locked, said = _built(cli("model", "build", "--no-image", model_dir))
    assert said == "pip-freeze" and locked != skipped
    assert {e.version for e in Store().list("model")} == {skipped, locked}
    assert Store().resolve("model", f"modthree:{locked}").manifest["env_lock"] == "pip-freeze"
    assert Store().resolve("model", f"modthree:{skipped}").manifest["env_lock"] is None
    # a fresh store gives the same version for the same command
    monkeypatch.setenv("SWCLI_HOME", str(tmp_path / "fresh"))
    fresh, said = _built(cli("model", "build", "--no-image", model_dir))
    assert (fresh, said) == (locked, "pip-freeze")
    fresh, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert (fresh, said) == (skipped, "skipped")


def test_the_env_lock_is_part_of_the_version_lock_first(cli, model_dir):
    locked, said = _built(cli("model", "build", "--no-image", model_dir))
    assert said == "pip-freeze"
    skipped, said = _built(cli("model", "build", "--no-image", model_dir, "--skip-gen-env"))
    assert said == "skipped" and skipped != locked
    entry = Store().resolve("model", f"modthree:{skipped}")
    assert not (entry.path / "env.lock").exists()
    # the same command again is the same version: re-locking an unchanged env does not re-version
    again, said = _built(cli("model", "build", "--no-image", model_dir))
    assert (again, said) == (locked, "pip-freeze")
    assert len(Store().list("model")) == 2


def test_another_lock_text_is_another_version(model_dir, swcli_home):
    from builder.build.model import build_model
    from builder.build.env_lock import EnvLock

    a = build_model(model_dir, env_lock=lambda: EnvLock("pip-freeze", "numpy==1.0\n")).entry
    b = build_model(model_dir, env_lock=lambda: EnvLock("pip-freeze", "numpy==2.0\n")).entry
    c = build_model(model_dir, env_lock=lambda: EnvLock("dist-info", "numpy==1.0\n")).entry
    assert len({a.version, b.version, c.version}) == 3
    assert (b.path / "env.lock").read_text() == "numpy==2.0\n"


# ------------------------------------------------------------------------------------- a store root that is not one


def _swcli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, SWCLI_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "builder", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)


def _one_line(proc: subprocess.CompletedProcess, *words: str, code: int | None = None) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, (proc.returncode, proc.stderr, proc.stdout)
    assert lines[0].startswith("swcli: error: ") and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "name" not in proc.stdout, proc.stdout  # no empty table


def _file(tmp: Path) -> Path:
    (tmp / "home").write_text("not a folder")
    return tmp / "home"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "home")
    return tmp / "home"


def _dangling(tmp: Path) -> Path:
    (tmp / "home").symlink_to(tmp / "gone")
    return tmp / "home"


def _link_to_a_file(tmp: Path) -> Path:
    (tmp / "target").write_text("x")
    (tmp / "home").symlink_to(tmp / "target")
    return tmp / "home"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "home"


def _link_loop(tmp: Path) -> Path:
    (tmp / "home").symlink_to(tmp / "home")
    return tmp / "home"


HOMES = {"file": (_file, "a file"), "fifo": (_fifo, "a FIFO"), "dangling link": (_dangling, "a link to nothing"),
         "link to a file": (_link_to_a_file, "a file"), "under a file": (_under_a_file, "cannot be reached"),
         "link loop": (_link_loop, "cannot be reached")}


@pytest.mark.parametrize("shape", sorted(HOMES))
def test_a_store_root_that_is_not_a_folder_fails_list_with_one_line(tmp_path, shape):
    make, what = HOMES[shape]
    home = make(tmp_path)
    for args in (("dataset", "list"), ("model", "list"), ("runtime", "list"), ("eval", "list"),
                 ("model", "list", "-o", "json"), ("dataset", "info", "x")):
        _one_line(_swcli(home, *args, timeout=30), str(home), what, "SWCLI_HOME", code=1)
    if shape == "fifo":
        assert os.path.exists(home) and not os.path.isdir(home)  # never opened, nothing made beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"home", "target", "file", "gone"} &
                                                                {p.name for p in tmp_path.iterdir()})


@pytest.mark.parametrize("shape", ["file", "fifo", "dangling link"])
def test_a_store_root_that_is_not_a_folder_fails_builds_and_pulls_with_one_line(tmp_path, tiny_dataset, model_dir,
                                                                                 shape):
    make, what = HOMES[shape]
    home = make(tmp_path)
    for args in (("dataset", "build", "--no-image", tiny_dataset), ("model", "build", "--no-image", model_dir),
                 ("model", "build", "--no-load", "--skip-gen-env", model_dir),
                 ("runtime", "build", "--name", "x", "--venv", sys.prefix, "--no-load"),
                 ("pull", "127.0.0.1:9/swds/x:1"), ("eval", "pull", "127.0.0.1:9/swmp/x@sha256:" + "0" * 64)):
        _one_line(_swcli(home, *args), str(home), what)
    assert not (tmp_path / "gone").exists()  # nothing created through the dangling link


def test_a_store_root_that_does_not_exist_yet_is_a_first_run(tmp_path):
    for home in (tmp_path / "new", tmp_path / "a" / "b"):
        proc = _swcli(home, "dataset", "list", "-o", "json", timeout=30)
        assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stderr
    link = tmp_path / "link"
    (tmp_path / "real").mkdir()
    link.symlink_to(tmp_path / "real")  # a link to a folder is a store like any (a home on a bigger disk)
    assert _swcli(link, "model", "list").returncode == 0


# ------------------------------------------------------------------------------------------------ usage errors


def _usage(res, *words: str) -> None:
    one_line_error(res, *words)
    assert res.code == 2, (res.code, res.err)


@pytest.fixture()
def eval_world(cli, model_dir, tiny_dataset):
    assert cli("dataset", "build", "--no-image", tiny_dataset).code == 0
    assert cli("model", "build", "--no-image", "--skip-gen-env", model_dir).code == 0
    return model_dir


EVAL_USAGE = {
    "shard not I/N": (["--shard", "x"], "shard 'x' is not I/N"),
    "shard I >= N": (["--shard", "3/2"], "need 0 <= I < N"),
    "shard 0/0": (["--shard", "0/0"], "need 0 <= I < N"),
    "more shards than records": (["--shard", "0/999"], "at most"),
    "batch size 0": (["--batch-size", "0"], "--batch-size must be >= 1"),
    "batch size -3": (["--batch-size", "-3"], "--batch-size must be >= 1"),
    "threads with workers": (["--threads", "2", "--workers", "2"], "--threads 2 with --workers 2"),
    "cuda with workers": (["--device", "cuda", "--workers", "2"], "CUDA does not survive fork"),
    "resume without output": (["--resume"], "--resume needs --output"),
}


@pytest.mark.parametrize("case", sorted(EVAL_USAGE))
def test_model_eval_usage_errors_exit_2(cli, eval_world, swcli_home, case):
    flags, words = EVAL_USAGE[case]
    _usage(cli("model", "eval", "modthree", "--dataset", "tiny", *flags), words)
    assert not (swcli_home / "runs").exists() or not any((swcli_home / "runs").iterdir())


def test_more_usage_errors_exit_2(cli, eval_world, swcli_home, tmp_path, monkeypatch):
    _usage(cli("model", "eval", "modthree", "--dataset", "tiny", "-o", swcli_home / "runs"), "inside the store")
    # a --device the handler does not take
    ppl = eval_world / "code" / "ppl.py"
    ppl.write_text(ppl.read_text().replace('def __init__(self, device="cpu"):', "def __init__(self):")
                   .replace("        self.device = device\n", ""))
    _usage(cli("model", "eval", eval_world, "--dataset", "tiny", "--device", "cpu"), "drop --device")
    assert cli("model", "eval", eval_world, "--dataset", "tiny", "-o", tmp_path / "run").code == 0
    _usage(cli("eval", "show", str(tmp_path / "run"), "--fail-under", "accuracy"), "--fail-under takes METRIC=NUMBER")
    _usage(cli("eval", "show", str(tmp_path / "run"), "--fail-under", "accuracy=high"), "METRIC=NUMBER")
    # job run: before any engine is asked
    _usage(cli("job", "run", "-m", "modthree", "-d", "tiny", "--shards", "0"), "--shards must be >= 1")
    for flags, words in ((["--shards", "0"], "--shards"), (["--cpu", "lots"], "--cpu"), (["--memory", "1 GB"], "--memory"),
                         (["--parts", "ftp"], "--parts"), (["--dataset-mount", "nfs"], "--dataset-mount")):
        _usage(cli("job", "k8s", "-m", "r.example/swmp/m:1", "-d", "r.example/swds/d:1", *flags), words)
    # runtime build
    _usage(cli("runtime", "build", "--venv", sys.prefix, "--conda-prefix", sys.prefix), "not both")
    _usage(cli("runtime", "build", "--venv", sys.prefix, "--no-load"), "a runtime needs a name")
    # eval pull: a bad --run, or neither a digest nor --run (refused before any connection)
    _usage(cli("eval", "pull", "127.0.0.1:9/swmp/x:1", "--run", "../etc"), "--run", "not a run id")
    _usage(cli("eval", "pull", "127.0.0.1:9/swmp/x:1"), "name the evaluation by its digest")
    # typer's own checks, for comparison: the same exit code
    _usage(cli("model", "eval", "modthree", "--dataset", "tiny", "--threads", "-1"), "--threads")
    _usage(cli("dataset", "list", "-o", "xml"), "xml")


def test_registry_flag_combinations_exit_2(tmp_path):
    home = tmp_path / "home"
    for args, words in ((("dataset", "push", "x", "127.0.0.1:9/x:1", "--password-stdin"), "--password-stdin needs --username"),
                        (("pull", "127.0.0.1:9/x:1", "-u", "me"), "--password-stdin"),
                        (("login", "127.0.0.1:9", "-u", "me"), "stdin is not a terminal")):
        proc = _swcli(home, *args, timeout=60)
        _one_line(proc, words, code=2)


def test_the_model_images_entrypoint_usage_errors_exit_2(tmp_path):
    env = dict(os.environ, SWCLI_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    for args, words in ((["eval", "--dataset", "not a ref"], "expected a dataset image in a registry"),
                        (["eval", "--dataset", "127.0.0.1:9/swds/x:1", "--push-part", "127.0.0.1:9/swmp/m:1"],
                         "--push-part and --job go together")):
        proc = subprocess.run([sys.executable, "-m", "builder.container", *args], env=env, capture_output=True,
                              text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
        _one_line(proc, words, code=2)


# ------------------------------------------------------------------------------------------- one image per tag


def _fake_runtimes(home: Path, *names: str) -> list[str]:
    """Runtime images written straight into the store's layout (a config and no layer): all a model image needs of
    its parent to be written with --no-load, no engine and no base."""
    from builder.images.image import ConfigChanges, write_image
    from builder.images.oci import Layout

    layout = Layout(home / "oci")
    refs = []
    for name in names:
        ref = f"swrt/{name}:1"
        write_image(layout, None, [], ConfigChanges(env={"RUNTIME": name}, labels={"io.swcli.kind": "runtime"}),
                    refs=[ref])
        refs.append(ref)
    return refs


def _layout_refs(home: Path) -> dict[str, str]:
    from builder.images.oci import Layout

    return {ref: d.digest for ref, d in Layout(home / "oci").refs().items()}


def test_a_model_version_on_two_runtimes_gets_two_tags_that_never_move(cli, model_dir, swcli_home, no_engine):
    rt_a, rt_b = _fake_runtimes(swcli_home, "rta", "rtb")
    seen: dict[str, str] = {}
    for runtime in (rt_a, rt_b, rt_a, rt_b):
        res = cli("model", "build", "--skip-gen-env", "--no-load", "--runtime", runtime, model_dir)
        assert res.code == 0, res.err
        refs = _layout_refs(swcli_home)
        for ref, digest in seen.items():  # no tag ever names another image, `latest` aside
            if not ref.endswith(":latest"):
                assert refs.get(ref) == digest, f"{ref} moved or vanished"
        seen.update(refs)
    entry = Store().resolve("model", "modthree")
    tags = sorted(r for r in _layout_refs(swcli_home) if r.startswith("swmp/"))
    assert len(tags) == 3 and f"swmp/modthree:{entry.version}" not in tags  # two images and latest; no bare version
    from builder.images.image import read_image
    from builder.images.oci import Layout

    layout = Layout(swcli_home / "oci")
    by_runtime = {}
    for tag in tags:
        image = read_image(layout, tag)
        if not tag.endswith(":latest"):
            assert tag == f"swmp/modthree:{entry.version}-{image.image_id.split(':')[1][:12]}"  # the tag is its id
            by_runtime[image.labels["io.swcli.runtime"]] = tag
    assert sorted(by_runtime) == [rt_a, rt_b]
    # the model ref names the newest (what :latest names); another runtime's image is named by its own tag
    from builder.build.entry_image import image_for

    assert image_for("model", "modthree") == by_runtime[rt_b]
    assert image_for("model", f"modthree:{entry.short_version}") == by_runtime[rt_b]
    assert image_for("model", by_runtime[rt_a]) == by_runtime[rt_a]
    info = cli("model", "info", "modthree")
    assert info.code == 0 and by_runtime[rt_a] in info.out and by_runtime[rt_b] in info.out


def test_images_on_several_runtimes_none_the_newest_is_one_line_naming_each(cli, model_dir, swcli_home, no_engine):
    rt_a, rt_b = _fake_runtimes(swcli_home, "rta", "rtb")
    for runtime in (rt_a, rt_b):
        assert cli("model", "build", "--skip-gen-env", "--no-load", "--runtime", runtime, model_dir).code == 0
    first = Store().resolve("model", "modthree")
    (model_dir / "code" / "extra.py").write_text("X = 1\n")  # another version: :latest goes to it
    assert cli("model", "build", "--skip-gen-env", "--no-load", "--runtime", rt_a, model_dir).code == 0
    res = cli("job", "k8s", "-m", f"modthree:{first.short_version}", "-d", "nothing")
    one_line_error(res, "has 2 images", rt_a, rt_b, "name one of them")
    res = cli("model", "push", f"modthree:{first.short_version}", "127.0.0.1:9/swmp/modthree:1")
    one_line_error(res, "has 2 images")
    # no image at all
    (model_dir / "code" / "extra.py").write_text("X = 2\n")
    assert cli("model", "build", "--skip-gen-env", "--no-image", model_dir).code == 0
    one_line_error(cli("model", "push", "modthree", "127.0.0.1:9/swmp/modthree:1"), "has no image", "swcli model build")



@pytest.fixture(scope="module")
def engine(base_engine):
    return base_engine


@pytest.mark.docker
def test_two_runtimes_in_the_engine_each_keep_their_tag_and_job_run_picks_by_tag(engine, cli, model_dir, tiny_dataset,
                                                                                  tmp_path):
    import docker

    from builder.images.runtime_image import build_runtime_image

    made: list[str] = []
    try:
        runtimes = []
        for name in ("integrity-rt-a", "integrity-rt-b"):
            venv = tmp_path / name
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            marker = next(venv.glob("lib/python3.*/site-packages")) / f"{name.replace('-', '_')}.py"
            marker.write_text(f"NAME = {name!r}\n")  # two envs: two runtime images
            result, _ = build_runtime_image(name, venv, client=engine)
            runtimes.append(result.tags[0])
            made += result.tags
        assert cli("dataset", "build", tiny_dataset).code == 0
        made += [f"swds/tiny:{Store().resolve('dataset', 'tiny').version}", "swds/tiny:latest"]
        tags = []
        for runtime in runtimes:
            res = cli("model", "build", model_dir, "--skip-gen-env", "--runtime", runtime)
            assert res.code == 0, res.err
            tag = re.search(r"image (swmp/modthree:\S+)", res.out).group(1)
            tags.append(tag)
            made += [tag, "swmp/modthree:latest"]
        version = Store().resolve("model", "modthree").version
        assert tags[0] != tags[1] and all(t.startswith(f"swmp/modthree:{version}-") for t in tags)
        first, second = (engine.images.get(t) for t in tags)
        assert first.id != second.id and tags[0] in first.tags and tags[1] in second.tags  # the first is still tagged
        assert first.labels["io.swcli.runtime"] == runtimes[0] and second.labels["io.swcli.runtime"] == runtimes[1]
        assert f"swmp/modthree:{version}" not in {t for image in engine.images.list() for t in image.tags}
        # job run: the model ref runs the newest image, its tag runs the other one
        for model, runtime, out in (("modthree", runtimes[1], "newest"), (tags[0], runtimes[0], "first")):
            res = cli("job", "run", "--model", model, "--dataset", "tiny", "-o", tmp_path / out)
            assert res.code == 0, res.err
            assert json.loads((tmp_path / out / "run.json").read_text())["runtime"] == runtime
    finally:
        for tag in made:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                engine.images.remove(tag, force=True)
