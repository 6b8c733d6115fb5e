"""Helpers the test modules share: constants, project writers, model sources, engine calls, capability probes.

Nothing here is a test module (no ``test_`` prefix) or holds fixtures: fixtures live in the nearest
``conftest.py``. A test module imports from here, never from another test module (tests/test_test_layout.py).
"""
