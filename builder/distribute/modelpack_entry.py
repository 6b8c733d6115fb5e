"""The store entry of an unpacked ModelPack artifact: model.yaml checked, manifest written as a build writes it,
version computed as a build computes it (:func:`builder.build.model.model_version`), then published."""

from __future__ import annotations

from pathlib import Path

from builder import __version__
from builder.errors import RegistryError, SwcliError
from builder.files import write_json_atomic
from builder.images.layer_tar import shown

MAX_MODEL_YAML = 1 << 20  # model.yaml is parsed whole; a few KB in practice


def _spec(src: Path, listing: list[dict], what: str):
    """model.yaml of the unpacked folder, checked like a build checks it (the handler's file found and parsed,
    never imported)."""
    from builder.build.model import check_handler_source
    from builder.spec import load_model_spec

    item = next((f for f in listing if f["path"] == "model.yaml"), None)
    if item is None:
        raise RegistryError(f"{what}: it holds no model.yaml at its top (a ModelPack artifact swcli evaluates "
                            "carries model.yaml and its handler in a code layer)")
    if item["size"] > MAX_MODEL_YAML:
        raise RegistryError(f"{what}: model.yaml is {item['size']} bytes, more than {MAX_MODEL_YAML >> 20} MiB")
    try:
        spec = load_model_spec(src / "model.yaml")
        check_handler_source(spec)
    except SwcliError as err:
        raise RegistryError(f"{what}: {shown(str(err).replace(str(src) + '/', ''), 300)}") from None
    return spec


def publish_model(store, staged: Path, listing: list[dict], lock_kind: str | None, lock_text: str | None,
                  source: str, what: str):
    """Write ``staged/manifest.json`` for the files of ``listing`` (already in ``staged/src``, verified) and publish
    the entry; an entry of that name and version already in the store is kept (a version names its content)."""
    from builder.build.model import model_version
    from builder.store import utc_now

    spec = _spec(staged / "src", listing, what)
    version = model_version(spec.raw, listing, lock_kind, lock_text)
    totals = {r: sum(f["size"] for f in listing if f["role"] == r) for r in ("code", "weights", "config")}
    write_json_atomic(staged / "manifest.json", {
        "kind": "model", "name": spec.name, "version": version, "created": utc_now(),
        "model_version": spec.version, "handler": spec.ppl, "runtime": spec.runtime, "desc": spec.desc,
        "tag": spec.tag, "spec": spec.raw, "files": listing,
        "totals": {"files": len(listing), "bytes": sum(totals.values()), **{f"{k}_bytes": v for k, v in totals.items()}},
        "env_lock": lock_kind, "notes": spec.notes, "source": f"ModelPack {source}", "swcli_version": __version__})
    return store.publish("model", spec.name, version, staged)
