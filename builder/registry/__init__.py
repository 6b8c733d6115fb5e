"""The registry client: OCI distribution-spec 1.1 over HTTP, with no Docker engine (issue 11).

The names below load on first use: a module that needs only :mod:`builder.registry.media` or
:mod:`builder.registry.reference` does not pay for importing ``requests`` (~80 ms), which every ``swcli model
eval`` would otherwise do before its first check. :data:`ClientFor` is the type of the ``client_for`` parameter
through which a command is given its clients (tests inject fakes there)."""

from __future__ import annotations

import importlib
from typing import Callable

ClientFor = Callable[[str], object]  # registry host -> RegistryClient: what every command that talks to one injects

_WHERE = {"Credentials": "credstore", "stored_credentials": "credstore", "Manifest": "client",
          "RegistryClient": "client", "Reference": "reference"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
