"""The client's catalog and tag lists (`swcli console --registry`): pages followed through the real registry's Link
headers, and a hostile registry's catalog bounded: too big, not JSON, of the wrong shape, paginated forever or
to another origin (which never sees a request, let alone the credentials)."""

from __future__ import annotations

import base64
import io
import json

import pytest

from builder.errors import RegistryError
from builder.registry import client as client_module
from builder.registry.client import RegistryClient
from builder.registry.credstore import Credentials
from tests.helpers.fake_listing import JSON, OCI_MANIFEST, digest_of, image, listing, routes
from tests.registry_servers import Answer, HostileServer, Registry, basic_challenge

MB = 1 << 20
CREDS = Credentials(Registry.USER, Registry.PASSWORD)


@pytest.fixture(autouse=True)
def _no_engine(no_engine):
    """No engine is needed: the client speaks HTTP only."""


def _put_image(client: RegistryClient, repository: str, tag: str) -> str:
    manifest, config = image("dataset", name=repository.replace("/", "-"))
    digest = digest_of(config)
    if client.blob_size(repository, digest) is None:
        client.upload_blob(repository, digest, len(config), lambda: io.BytesIO(config))
    return client.put_manifest(repository, tag, manifest, OCI_MANIFEST)


def test_catalog_and_tags_follow_the_registry_pages(registry, monkeypatch):
    """Pages of 2 (`n=2`): the real registry's Link headers are followed to the end, and a limit stops early."""
    client = RegistryClient(registry.address)
    for repository in ("team/a", "team/b", "other/c"):
        for tag in ("v1", "v2", "v3"):
            _put_image(client, repository, tag)
    monkeypatch.setattr(client_module, "LISTING_PAGE", 2)
    assert client.catalog() == (["other/c", "team/a", "team/b"], False)
    assert client.tags("team/a") == (["v1", "v2", "v3"], False)
    assert client.catalog(limit=2) == (["other/c", "team/a"], True)
    assert client.tags("team/b", limit=1) == (["v1"], True)
    pages = [line for line in registry.log.read_text().splitlines() if "/v2/team/a/tags/list" in line]
    assert len(pages) >= 2, pages
    with pytest.raises(RegistryError, match="has no tags of .*/team/nope"):
        client.tags("team/nope")


@pytest.mark.parametrize("body, said", [
    (b"<html>nope</html>", "not JSON"),
    (b'["team/a"]', "must be an object, not list"),
    (b'{"repositories": "team/a"}', "repositories must be an array, not str"),
])
def test_a_catalog_that_is_not_one_is_one_line(body, said):
    with HostileServer(routes(("GET", "^/v2/_catalog", Answer(200, JSON, body)))) as reg:
        with pytest.raises(RegistryError, match=said) as err:
            RegistryClient(reg.address).catalog()
    assert "\n" not in str(err.value)


def test_names_that_are_not_repositories_or_tags_are_passed_over():
    names = ["team/a", "../../etc", "Team/B", 7, None, "team/b\n", "team/c"]
    tags = ["v1", "-x", "a" * 129, "v/2", {"t": 1}, "latest"]
    table = routes(("GET", "^/v2/_catalog", listing("repositories", names)),
                   ("GET", "^/v2/team/a/tags/list", listing("tags", tags)))
    with HostileServer(table) as reg:
        client = RegistryClient(reg.address)
        assert client.catalog() == (["team/a", "team/c"], False)
        assert client.tags("team/a") == (["v1", "latest"], False)


def test_a_huge_catalog_page_is_cut_while_reading():
    huge = Answer(200, JSON, b" " * MB, repeat=256, chunked=True)
    with HostileServer(routes(("GET", "^/v2/_catalog", huge))) as reg:
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            RegistryClient(reg.address).catalog()
        assert reg.sent < 64 * MB  # the client hung up long before the 256 MiB


def test_endless_pages_stop_at_the_limit():
    """A registry whose every page says there is a next one: ``limit`` names, then it stops asking."""
    count = iter(range(10 ** 6))

    def page(seen):
        n = next(count)
        return listing("repositories", [f"team/r{n}-{i}" for i in range(100)], "/v2/_catalog?n=100&last=x")

    with HostileServer(routes(("GET", "^/v2/_catalog", page))) as reg:
        names, more = RegistryClient(reg.address).catalog(limit=250)
        asked = [s for s in reg.seen if s.path.startswith("/v2/_catalog")]
    assert (len(names), more) == (250, True)
    assert len(asked) == 3

    one_name = listing("repositories", ["team/same"], "/v2/_catalog?n=100&last=team/same")  # a loop, 1 a page
    with HostileServer(routes(("GET", "^/v2/_catalog", one_name))) as reg:
        names, more = RegistryClient(reg.address).catalog(limit=300)
        asked = [s for s in reg.seen if s.path.startswith("/v2/_catalog")]
    assert more is True and len(asked) == 300 // 100 + 2


def test_a_next_page_elsewhere_is_refused_and_gets_no_credentials():
    """Link to another host (127.0.0.2), another scheme or port, or another path of the same registry: refused
    before a request is made, so the credentials the first page was fetched with go nowhere else."""
    with HostileServer(lambda seen: Answer(200, JSON, b'{"repositories": ["team/stolen"]}'),
                       host="127.0.0.2") as elsewhere:
        for link in (f"{elsewhere.url}/v2/_catalog?n=100", f"//{elsewhere.address}/v2/_catalog",
                     "https://127.0.0.1:1/v2/_catalog", "/v2/team/a/blobs/sha256:" + "0" * 64,
                     "/v2/_catalog/../token?x=1"):
            def page(seen, link=link):
                return basic_challenge(seen) or listing("repositories", ["team/a"], link)

            with HostileServer(routes(("GET", "^/v2/_catalog", page), ("GET", "^/v2/$", basic_challenge))) as reg:
                with pytest.raises(RegistryError, match="leaves this registry's listing; refused") as err:
                    RegistryClient(reg.address, credentials=CREDS).catalog()
                authorized = [s for s in reg.seen if s.headers.get("authorization")]
            assert authorized, "the first page was fetched with the credentials"
            assert "\n" not in str(err.value)
        assert elsewhere.seen == []
    expected = "Basic " + base64.b64encode(f"{Registry.USER}:{Registry.PASSWORD}".encode()).decode()
    assert authorized[0].headers["authorization"] == expected


def test_a_repository_without_tags_lists_none():
    """distribution/registry says ``"tags": null`` for a repository whose tags were all deleted."""
    table = routes(("GET", "^/v2/team/a/tags/list", Answer(200, JSON, json.dumps({"name": "team/a",
                                                                                   "tags": None}).encode())))
    with HostileServer(table) as reg:
        assert RegistryClient(reg.address).tags("team/a") == ([], False)
