"""The template contexts of the golden Dockerfiles (tests/golden/), one per image kind."""

from __future__ import annotations

COMMON = {"swcli_version": "0.0.0-test", "base_image": "swcli/base:bookworm-py3.11", "name": "cifar10", "version": "abc123",
          "description": "CIFAR10 test set"}


CASES = {
    "dataset": dict(COMMON, extra_labels=[("io.swcli.records", "10000"), ("io.swcli.dataset.layers", "2")],
                    dataset_layers=["layers/00000", "layers/00001"]),
    "runtime": dict(COMMON, name="cifar-env", site_packages="/opt/swcli/env/lib/python3.11/site-packages",
                    env_prefix="/opt/swcli/env", conda=False,
                    env_layers=[{"dir": "layers/00-torch"}, {"dir": "layers/01-rest"}],
                    extra_labels=[("io.swcli.source-digest", "0f" * 8)]),
    "model": dict(COMMON, name="cifar_net", base_image="swrt/cifar-env:abc", weights=True,
                  extra_labels=[("io.swcli.handler", "code.ppl:CIFAR10Inference")]),
}
