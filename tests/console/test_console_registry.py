"""The console against a real registry (Debian's docker-registry on loopback): `swcli console --registry
REGISTRY/NAMESPACE` lists what was pushed and the evaluations attached to the model image, the overview names where
each entry was pushed, an attached evaluation is pulled into the history from the Evaluations page, a run is
attached from the console, the gate takes an image as its baseline, and a registry that is down or refuses its
catalog is a line on the page, never a 500."""

from __future__ import annotations

import html
import re

import pytest

from builder.store import Store
from tests.helpers.attach_world import attached_digest, evaluate
from tests.helpers.console_server import running_console
from tests.helpers.console_world import pushed_world
from tests.registry_servers import FaultProxy, Rule


@pytest.fixture()
def world(cli, no_engine, registry, tmp_path):
    """pushed_world, and its run attached to the model image ``team/modthree:v1`` (``evaluation``: its digest)."""
    got = pushed_world(cli, registry, tmp_path)
    got["evaluation"] = attached_digest(cli("eval", "attach", got["run"], got["refs"]["model"]))
    got["address"] = registry.address
    return got


def _one_line_400(console, path: str, body: object) -> str:
    status, answer = console.json("POST", path, body)
    assert status == 400, answer
    assert set(answer) == {"error"} and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    return answer["error"]


def test_the_registry_listing_the_overview_and_the_attached_evaluations(world):
    address, digests, refs = world["address"], world["digests"], world["refs"]
    with running_console("--registry", f"{address}/team") as console:
        status, answer = console.json("GET", "/api/registries")
        assert status == 200, answer
        [reg] = answer["registries"]
        assert reg["target"] == f"{address}/team" and reg["problems"] == []
        tags = {(r["repository"], t["tag"]): t for r in reg["repositories"] for t in r["tags"]}
        assert tags == {("team/modthree", "v1"): {"tag": "v1", "digest": digests["model"], "kind": "model"},
                        ("team/tiny", "v1"): {"tag": "v1", "digest": digests["dataset"], "kind": "dataset"}}
        [row] = reg["evaluations"]  # other/modthree is not under team/
        assert row["run"] == world["run"] and row["digest"] == world["evaluation"]
        assert row["image"] == f"{address}/team/modthree@{digests['model']}" and row["tags"] == ["v1"]
        assert row["dataset"] == "tiny" and row["metrics"]["accuracy"] == pytest.approx(1.0)

        status, _, page = console.request("GET", "/")
        assert status == 200
        text = html.unescape(page.decode())
        models = text[text.index('id="models"'):text.index('id="datasets"')]
        assert refs["model"] in models and refs["elsewhere"] in models  # pushes.json, newest first
        assert models.index(refs["elsewhere"]) < models.index(refs["model"])
        sizes = re.findall(r'<span title="(\d+) bytes">([^<]*)</span>', models)
        assert sizes and all(re.fullmatch(r"[\d.]+ (Bytes|KiB|MiB|GiB)", shown) for _, shown in sizes), sizes
        datasets = text[text.index('id="datasets"'):]
        assert refs["dataset"] in datasets[:datasets.index("</table>")]
        section = text[text.index(f"Registry <code>{address}/team</code>"):]
        assert "team/modthree" in section and digests["model"][:19] in section and "1 evaluation(s)" in section

        status, _, page = console.request("GET", "/runs")
        assert status == 200
        buttons = re.findall(r'<button[^>]*class="pull-attached"[^>]*data-ref="([^"]*)"', page.decode())
        assert buttons == [f"{address}/team/modthree@{world['evaluation']}"]
        assert f"<code title=\"{address}/team/modthree@{digests['model']}\">{address}/team/modthree:v1</code>" in page.decode()


def test_open_pulls_an_attached_evaluation_into_another_history(world, tmp_path):
    ref = f"{world['address']}/team/modthree@{world['evaluation']}"
    with running_console("--registry", f"{world['address']}/team",
                         env={"SWCLI_HOME": str(tmp_path / "other-home")}) as console:
        assert console.json("GET", "/api/runs")[1]["runs"] == []
        status, got = console.json("POST", "/api/attached/pull", {"ref": ref})
        assert status == 200, got
        assert got == {"run": world["run"], "new": True, "digest": world["evaluation"]}
        status, runs = console.json("GET", "/api/runs")
        assert [r["id"] for r in runs["runs"]] == [world["run"]]
        status, run = console.json("GET", f"/api/runs/{world['run']}")
        assert status == 200 and run["metrics"]["accuracy"] == pytest.approx(1.0)
        assert console.json("POST", "/api/attached/pull", {"ref": ref})[1]["new"] is False
        # a tag is not a digest, an option is not a ref
        assert "by digest" in _one_line_400(console, "/api/attached/pull", {"ref": world["refs"]["model"]})
        _one_line_400(console, "/api/attached/pull", {"ref": "--output=/tmp/x"})


def test_attach_a_run_from_the_console(cli, world):
    run = evaluate(cli, world["version"])  # a second run of the same model, not attached yet
    image = world["refs"]["model"]
    with running_console() as console:
        # the run's page offers the newest push of the very image the run evaluated, by tag and digest
        status, _, page = console.request("GET", f"/runs/{run}")
        assert status == 200
        offered = html.unescape(re.search(r'<input name="image"[^>]*value="([^"]*)"', page.decode()).group(1))
        assert offered == f"{world['refs']['elsewhere']}@{world['digests']['elsewhere']}"
        status, done = console.json("POST", f"/api/runs/{run}/attach", {"image": offered})
        assert status == 200, done
        assert done["repository"] == f"{world['address']}/other/modthree"
        status, done = console.json("POST", f"/api/runs/{run}/attach", {"image": image})
        assert status == 200, done
        assert done["subject"] == world["digests"]["model"] and done["repository"] == f"{world['address']}/team/modthree"
        for hostile in ("../x", "a b", "x" * 10_000, "", 7, None, ["a"]):
            _one_line_400(console, f"/api/runs/{run}/attach", {"image": hostile})
        _one_line_400(console, f"/api/runs/{run}/attach", ["not", "an", "object"])
        # a dataset image is not the run's model image: refused, one line naming it
        status, answer = console.json("POST", f"/api/runs/{run}/attach", {"image": world["refs"]["dataset"]})
        assert status == 400 and "\n" not in answer["error"] and "team/tiny" in answer["error"], answer
    res = cli("eval", "list", "--image", image)
    assert res.code == 0, res.err
    assert run in res.out and world["run"] in res.out


@pytest.mark.parametrize("down", ["nothing listening", "catalog refused", "catalog garbage"])
def test_a_registry_that_is_down_or_refuses_is_named_on_the_pages(world, down):
    if down == "nothing listening":
        import socket

        with socket.socket() as sock:  # a port nobody listens on
            sock.bind(("127.0.0.1", 0))
            address, proxy = f"127.0.0.1:{sock.getsockname()[1]}", None
    else:
        rule = (Rule("GET", r"^/v2/_catalog", "status", status=401, body=b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                     content_type="application/json") if down == "catalog refused"
                else Rule("GET", r"^/v2/_catalog", "garbage"))
        proxy = FaultProxy(world["address"], [rule])
        address = proxy.address
    try:
        with running_console("--registry", f"{address}/team") as console:
            status, answer = console.json("GET", "/api/registries", timeout=60)
            assert status == 200, answer
            [reg] = answer["registries"]
            assert reg["repositories"] == [] and reg["evaluations"] == []
            assert reg["problems"] and all(address in p for p in reg["problems"]), reg["problems"]
            for path in ("/", "/runs"):
                status, _, page = console.request("GET", path, timeout=60)
                assert status == 200, page[:300]
                assert address in html.unescape(page.decode())
            status, _, page = console.request("GET", "/", timeout=60)
            text = html.unescape(page.decode())
            assert reg["problems"][0] in text and "nothing read: see above" in text
    finally:
        if proxy is not None:
            proxy.stop()


def test_the_gate_takes_a_model_image_as_its_baseline(cli, world):
    candidate = evaluate(cli, world["version"])
    with running_console() as console:
        status, result = console.json("POST", "/api/gate", {"candidate": candidate, "baseline": world["refs"]["model"],
                                                            "min": {"accuracy": 0.99}, "max_drop": {"accuracy": 0}})
        assert status == 200, result
        assert result["passed"] is True and result["baseline"] == world["run"] and result["candidate"] == candidate
        status, result = console.json("POST", "/api/gate", {"candidate": candidate, "baseline": world["refs"]["model"],
                                                            "min": {"accuracy": 1.01}})
        assert status == 200 and result["passed"] is False and "accuracy" in result["failure"]
        # an image with nothing attached on this dataset: one line naming it
        status, answer = console.json("POST", "/api/gate", {"candidate": candidate,
                                                            "baseline": world["refs"]["elsewhere"]})
        assert status in (400, 404) and "no evaluation attached" in answer["error"], answer
        _one_line_400(console, "/api/gate", {"candidate": candidate, "baseline": "../../etc/passwd/x"})
        # rules are named by the request's fields, never echoed unbounded, finite
        for rules, start in (({"min": {"nosuch": 0.5}}, "min: unknown metric 'nosuch'"),
                             ({"max_drop": {"accuracy": -1}}, "max_drop takes the drop allowed"),
                             ({"min": {"accuracy": float("nan")}}, "min.accuracy: a finite number, got NaN"),
                             ({"max_drop": {"accuracy=1,x": 0}}, 'max_drop: "accuracy=1,x" is not a metric name'),
                             ({"min": {"x" * 5000: 1}}, "min: ")):
            error = _one_line_400(console, "/api/gate", {"candidate": candidate, "baseline": world["run"], **rules})
            assert error.startswith(start) and len(error) < 300, error
    assert world["run"] in {p.name for p in Store().runs_dir.iterdir()}


def test_a_registry_that_hangs_costs_one_deadline_not_one_per_page(swcli_home):
    import socket
    import time

    with socket.socket() as sock:  # accepts (the kernel's backlog) and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        with running_console("--registry", f"{address}/team", env={"SWCLI_REGISTRY_TIMEOUT": "2"}) as console:
            took = []
            for path in ("/api/registries", "/", "/runs", "/api/registries"):
                start = time.monotonic()
                status, _, body = console.request("GET", path, timeout=60)
                took.append(time.monotonic() - start)
                assert status == 200, body[:300]
                assert "did not answer within 2 s" in html.unescape(body.decode())
    assert 2 <= took[0] < 3.5, took  # the catalog read once per listing, not once for tags and again for evaluations
    assert max(took[1:]) < 1.5, took  # the failure remembered (FAIL_TTL), not waited for on every page


def test_a_listing_is_cached_until_forgotten(cli, world):
    from builder.console.registry_view import RegistryView
    from builder.runs.attach import default_client

    view = RegistryView(f"{world['address']}/team", default_client())
    assert [r["run"] for r in view.listing()["evaluations"]] == [world["run"]]
    run = evaluate(cli, world["version"])
    assert attached_digest(cli("eval", "attach", run, world["refs"]["model"]))
    assert [r["run"] for r in view.listing()["evaluations"]] == [world["run"]]  # the referrers, read < tag_ttl ago
    view.forget()
    assert sorted(r["run"] for r in view.listing()["evaluations"]) == sorted([world["run"], run])
