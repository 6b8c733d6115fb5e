"""Kubernetes manifests for a sharded evaluation: an Indexed Job over the shards, then a merge Job.

The eval Job runs the model image's `eval --shard $(JOB_COMPLETION_INDEX)/N` in N pods and writes each part to
the output volume; the merge Job runs the model image's `merge --wait` over the parts. Kubernetes has no Job-to-Job
dependency, so the merge waits (up to ``merge_wait`` seconds) until every index has a finished part, and all of it
is applied at once. While waiting it holds only a small CPU request, so on a full cluster it cannot keep eval
pods from being scheduled. The dataset reaches the pods either by an init container that copies `/dataset` out of the dataset
image into an emptyDir (works on every cluster; the dataset image has `cp`), or as an image volume
(`volumes[].image`, on by default from Kubernetes 1.35). Pods run as uid 1000, non-root, with a read-only root
filesystem and every capability dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from builder.errors import SwcliError

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


@dataclass
class K8sOptions:
    model_image: str
    dataset_image: str
    shards: int = 1
    namespace: str | None = None
    output_pvc: str = "swcli-eval-output"
    create_pvc: bool = True
    pvc_size: str = "1Gi"
    dataset_mount: str = "init"  # init | image
    cpu: str | None = None
    memory: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    backoff_limit: int = 2
    merge_wait: int = 6 * 3600
    name: str | None = None


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:52].rstrip("-") or "swcli-eval"


def _image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]


def _resources(opts: K8sOptions) -> dict:
    spec = {k: v for k, v in (("cpu", opts.cpu), ("memory", opts.memory)) if v}
    return {"requests": dict(spec), "limits": dict(spec)} if spec else {}


MERGE_CPU = "100m"  # the merge mostly waits, then runs one cmp: it must not hold a CPU the eval pods need


def _merge_resources(opts: K8sOptions) -> dict:
    memory = {"memory": opts.memory} if opts.memory else {}
    return {"requests": {"cpu": MERGE_CPU, **memory}, **({"limits": dict(memory)} if memory else {})}


def _pod(opts: K8sOptions, args: list[str], *, with_dataset: bool, env: list[dict], resources: dict) -> dict:
    volumes = [{"name": "output", "persistentVolumeClaim": {"claimName": opts.output_pvc}},
               {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "output", "mountPath": "/output"}, {"name": "tmp", "mountPath": "/tmp"}]
    init = []
    if with_dataset:
        mounts.append({"name": "dataset", "mountPath": "/dataset", "readOnly": True})
        if opts.dataset_mount == "image":
            volumes.append({"name": "dataset", "image": {"reference": opts.dataset_image, "pullPolicy": "IfNotPresent"}})
        else:
            volumes.append({"name": "dataset", "emptyDir": {}})
            init.append({"name": "dataset", "image": opts.dataset_image, "command": ["cp", "-a", "/dataset/.", "/copy/"],
                         "volumeMounts": [{"name": "dataset", "mountPath": "/copy"}],
                         "securityContext": CONTAINER_SECURITY})
    container = {"name": "eval", "image": opts.model_image, "args": args, "env": env, "volumeMounts": mounts,
                 "securityContext": CONTAINER_SECURITY}
    if resources:
        container["resources"] = resources
    pod = {"restartPolicy": "Never", "securityContext": POD_SECURITY, "containers": [container], "volumes": volumes}
    if init:
        pod["initContainers"] = init
    if opts.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in opts.image_pull_secrets]
    return pod


def manifests(opts: K8sOptions) -> list[dict]:
    """PVC (optional), the Indexed eval Job, the merge Job: plain dicts, ready for yaml.safe_dump_all."""
    if opts.shards < 1:
        raise SwcliError(f"--shards must be >= 1, got {opts.shards}")
    if opts.merge_wait < 0:
        raise SwcliError(f"--merge-wait must be >= 0 seconds, got {opts.merge_wait}")
    if opts.dataset_mount not in ("init", "image"):
        raise SwcliError(f"--dataset-mount must be init or image, got {opts.dataset_mount!r}")
    base = _dns_name(opts.name or f"swcli-eval-{_image_name(opts.model_image)}-{_image_name(opts.dataset_image)}")
    labels = {"app.kubernetes.io/managed-by": "swcli", "app.kubernetes.io/name": base}
    meta = lambda name: {"name": name, "labels": dict(labels), **({"namespace": opts.namespace} if opts.namespace else {})}  # noqa: E731
    docs = []
    if opts.create_pvc:
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(opts.output_pvc),
                     "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": opts.pvc_size}}}})
    eval_args = ["eval", "--shard", f"$(JOB_COMPLETION_INDEX)/{opts.shards}", "--output", f"/output/{base}/parts/$(JOB_COMPLETION_INDEX)"]
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta(base),
        "spec": {"completionMode": "Indexed", "completions": opts.shards, "parallelism": opts.shards,
                 "backoffLimit": opts.backoff_limit,
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": _pod(opts, eval_args, with_dataset=True, resources=_resources(opts),
                                           env=[{"name": "JOB_COMPLETION_COUNT", "value": str(opts.shards)}])}},
    })
    merge_args = ["merge", f"/output/{base}/parts", "--output", f"/output/{base}/merged", "--wait", str(opts.merge_wait)]
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{base}-merge"),
        "spec": {"backoffLimit": opts.backoff_limit,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": _pod(opts, merge_args, with_dataset=False, env=[],
                                                                               resources=_merge_resources(opts))}},
    })
    return docs


def render(opts: K8sOptions) -> str:
    import yaml

    return yaml.safe_dump_all(manifests(opts), sort_keys=False)
