"""builder.evaluate.runner.gcpolicy: the collector is off while a model loads, back on after (errors included), and what loaded is
frozen only in a process that ends with its command."""

from __future__ import annotations

import gc

import pytest

from builder.evaluate.runner import gcpolicy


def test_loading_turns_the_collector_off_and_back_on_without_freezing_in_process(monkeypatch):
    monkeypatch.setattr(gcpolicy, "_freeze", False)
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    with gcpolicy.loading():
        assert not gc.isenabled()
        kept = [object() for _ in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() == frozen and kept


def test_a_failed_load_turns_the_collector_back_on(monkeypatch):
    monkeypatch.setattr(gcpolicy, "_freeze", False)
    with pytest.raises(ImportError):
        with gcpolicy.loading():
            raise ImportError("no torch")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(monkeypatch):
    monkeypatch.setattr(gcpolicy, "_freeze", False)
    gc.disable()
    try:
        with gcpolicy.loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exiting_process_freezes_what_loaded(monkeypatch):
    monkeypatch.setattr(gcpolicy, "_freeze", False)
    gcpolicy.freeze_after_load()
    assert gcpolicy._freeze
    before = gc.get_freeze_count()
    try:
        with gcpolicy.loading():
            loaded = [[] for _ in range(1000)]  # containers: tracked by the collector
        assert gc.get_freeze_count() >= before + len(loaded)
        assert gc.isenabled()
    finally:
        gc.unfreeze()  # the rest of this session's objects go back to the collector
