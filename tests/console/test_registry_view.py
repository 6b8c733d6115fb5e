"""The console's registry source (`builder.console.registry_view`): the repositories of a namespace, their tags,
digests and kinds, the evaluations attached to model images, read through the client and cached by digest; a
hostile registry's answers are problem lines, never an exception that hides the other repositories."""

from __future__ import annotations

import json
import re

import pytest

from builder.console.registry_view import RegistryView
from builder.console.sources import attach_target
from builder.distribute.blobs import registry_clients
from builder.errors import UsageError
from builder.registry.client import RegistryClient
from builder.runs.attach import ARTIFACT_TYPE
from builder.runs.history import resolve_run
from builder.store import Store
from tests.helpers.console_world import pushed_world
from tests.helpers.fake_listing import JSON, OCI_MANIFEST, digest_of, image, listing, routes, served_image
from tests.registry_servers import Answer, HostileServer

MB = 1 << 20


def _view(reg, namespace: str = "team", **options) -> RegistryView:
    return RegistryView(f"{reg.address}/{namespace}", lambda host: RegistryClient(host), **options)


@pytest.mark.parametrize("target", ["127.0.0.1:5000", "team/models", "127.0.0.1:5000/team:v1",
                                    "127.0.0.1:5000/team@sha256:" + "0" * 64, "127.0.0.1:5000/Team",
                                    "127.0.0.1:5000/team\n", "", "http://127.0.0.1:5000/team"])
def test_a_target_that_is_not_registry_slash_namespace_is_a_usage_error(target):
    with pytest.raises(UsageError, match=r"^--registry .*expected REGISTRY/NAMESPACE") as err:
        RegistryView(target, lambda host: pytest.fail("no client for a bad target"))
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_kinds_digests_and_the_namespace_from_a_fake_registry():
    model, model_config = image("model", "modthree")
    dataset, dataset_config = image("dataset", "tiny")
    plain, plain_config = image(None)
    evaluation = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                             "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"),
                                        "size": 2}, "layers": []}).encode()
    table = routes(
        ("GET", "^/v2/_catalog", listing("repositories", ["other/m", "team", "team/a", "team/b", "teamster/x"])),
        ("GET", "^/v2/team/a/tags/list", listing("tags", ["m1", "d1", "plain", "eval", "sha256-" + "a" * 64])),
        ("GET", "^/v2/team/b/tags/list", listing("tags", [])),
        ("GET", "^/v2/team/tags/list", listing("tags", [])),
        *served_image("team/a", "m1", model, model_config), *served_image("team/a", "d1", dataset, dataset_config),
        *served_image("team/a", "plain", plain, plain_config), *served_image("team/a", "eval", evaluation, b"{}"))
    with HostileServer(table) as reg:
        view = _view(reg)
        found = view.repositories()
    assert view.problems == []
    assert [r["repository"] for r in found] == ["team", "team/a", "team/b"]  # not other/, not teamster/
    assert found[1]["tags"] == [{"tag": "d1", "digest": digest_of(dataset), "kind": "dataset"},
                                {"tag": "eval", "digest": digest_of(evaluation), "kind": "evaluation"},
                                {"tag": "m1", "digest": digest_of(model), "kind": "model"},
                                {"tag": "plain", "digest": digest_of(plain), "kind": "other"}]


def test_what_was_read_is_cached_lists_for_a_while_manifests_for_good():
    model, config = image("model", "modthree")
    table = routes(("GET", "^/v2/_catalog", listing("repositories", ["team/a"])),
                   ("GET", "^/v2/team/a/tags/list", listing("tags", ["v1"])),
                   *served_image("team/a", "v1", model, config))

    def count(reg, method, pattern):
        return sum(1 for s in reg.seen if s.method == method and re.search(pattern, s.path))

    with HostileServer(table) as reg:
        view = _view(reg, tag_ttl=60)
        first = view.repositories()
        assert view.repositories() == first
        assert (count(reg, "GET", "_catalog"), count(reg, "GET", "tags/list"),
                count(reg, "HEAD", "manifests")) == (1, 1, 1)
        fresh = _view(reg, tag_ttl=0)  # everything that can change is read again; a manifest by digest is not
        fresh.repositories()
        fresh.repositories()
        assert (count(reg, "GET", "_catalog"), count(reg, "HEAD", "manifests/v1")) == (3, 3)
        assert count(reg, "GET", "manifests/sha256") == 2  # once per view, never again
        assert count(reg, "GET", "/blobs/") == 2


def test_a_registry_that_refuses_the_catalog_is_a_problem_line():
    refused = Answer(403, JSON, b'{"errors":[{"code":"DENIED","message":"catalog \\u001b[31mclosed"}]}')
    with HostileServer(routes(("GET", "^/v2/_catalog", refused))) as reg:
        view = _view(reg)
        assert view.repositories() == [] and view.evaluations() == []
    [line] = view.problems
    assert "the catalog" in line and "HTTP 403" in line and "\x1b" not in line


def test_a_hostile_catalog_is_bounded_and_named():
    """Huge, not JSON, endless pages, a Link to another host: each one problem line, quickly."""
    endless = listing("repositories", [f"team/r{i}" for i in range(100)], "/v2/_catalog?n=100&last=team/r99")
    cases = [(Answer(200, JSON, b" " * MB, repeat=256, chunked=True), "larger than 4 MiB"),
             (Answer(200, JSON, b"<html>"), "not JSON"),
             (listing("repositories", ["team/a"], "http://127.0.0.2:9/v2/_catalog"), "leaves this registry"),
             (endless, "more than 250 repositories")]
    for answer, said in cases:
        table = routes(("GET", "^/v2/_catalog", answer), ("GET", "/tags/list", listing("tags", [])))
        with HostileServer(table) as reg:
            view = _view(reg, max_repositories=250)
            found = view.repositories()
            asked = sum(1 for s in reg.seen if "_catalog" in s.path)
        assert len(view.problems) == 1 and said in view.problems[0], view.problems
        assert asked <= 250 // 100 + 2 and len(found) <= 250


def test_one_bad_tag_or_repository_never_hides_the_others():
    """A tag whose manifest is too large (no digest on HEAD, then 5 MiB), a tag list that is not JSON: problem
    lines; the good tag of the good repository is still listed."""
    model, config = image("model", "modthree")
    huge = Answer(200, {"Content-Type": OCI_MANIFEST}, b" " * MB, repeat=5)
    table = routes(("GET", "^/v2/_catalog", listing("repositories", ["team/a", "team/broken"])),
                   ("GET", "^/v2/team/a/tags/list", listing("tags", ["big", "v1"])),
                   ("GET", "^/v2/team/broken/tags/list", Answer(200, JSON, b"nope")),
                   ("HEAD", "^/v2/team/a/manifests/big$", Answer(200, {"Content-Type": OCI_MANIFEST})),
                   ("GET", "^/v2/team/a/manifests/big$", huge), *served_image("team/a", "v1", model, config))
    with HostileServer(table) as reg:
        view = _view(reg)
        found = view.repositories()
    assert found == [{"repository": "team/a", "tags": [{"tag": "v1", "digest": digest_of(model), "kind": "model"}]},
                     {"repository": "team/broken", "tags": []}]
    assert len(view.problems) == 2, view.problems
    assert "team/a:big" in view.problems[0] and "larger than 4 MiB" in view.problems[0]
    assert "team/broken" in view.problems[1] and "not JSON" in view.problems[1]


def test_the_real_registry_its_kinds_and_the_evaluations_attached(cli, registry, tmp_path, no_engine):
    """Pushed with `swcli push` and `swcli eval attach` to Debian's docker-registry: the namespace's repositories
    with their kinds, the evaluation on the model image, and the attach button's target."""
    world = pushed_world(cli, registry, tmp_path)
    res = cli("eval", "attach", world["run"], world["refs"]["model"])
    assert res.code == 0, res.err
    view = RegistryView(f"{registry.address}/team", registry_clients())
    found = view.repositories()
    assert view.problems == []
    assert found == [{"repository": "team/modthree",
                      "tags": [{"tag": "v1", "digest": world["digests"]["model"], "kind": "model"}]},
                     {"repository": "team/tiny",
                      "tags": [{"tag": "v1", "digest": world["digests"]["dataset"], "kind": "dataset"}]}]
    [row] = view.evaluations()
    assert view.problems == []
    assert row["run"] == world["run"] and row["dataset"] == "tiny" and row["model"] == "modthree"
    assert row["image"] == f"{registry.address}/team/modthree@{world['digests']['model']}"
    assert (row["tag"], row["tags"]) == ("v1", ["v1"])
    assert row["image_id"] == Store().layout.read_json(Store().layout.resolve(world["image"]))["config"]["digest"]
    assert row["metrics"]["accuracy"] == 1.0
    run = resolve_run(world["run"], Store())
    assert attach_target(run, view) == f"{world['refs']['model']}@{world['digests']['model']}"
    assert RegistryView(f"{registry.address}/nobody", registry_clients()).evaluations() == []
