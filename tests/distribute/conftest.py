"""Fixtures of the distribute tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def plain_registry(registry):
    """The test's docker-registry, plain HTTP (beside the secure ones of the tests that need them)."""
    return registry
