"""Publishing a store entry by hand (a payload file and a manifest), without building anything."""

from __future__ import annotations

import hashlib

from builder.files import write_json_atomic
from builder.store import make_version


def publish(store, name, content, created):
    version = make_version(hashlib.sha256(content.encode()).digest())
    with store.stage("dataset") as staged:
        (staged / "payload").write_text(content)
        write_json_atomic(staged / "manifest.json", {"kind": "dataset", "name": name, "version": version, "created": created})
        return store.publish("dataset", name, version, staged)
