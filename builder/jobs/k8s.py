"""Kubernetes manifests for a sharded evaluation: an Indexed Job over the shards, then a merge Job.

The eval Job runs the model image's `eval --shard $(JOB_COMPLETION_INDEX)/N` in N pods and writes each part to
the output volume; the merge Job runs the model image's `merge --wait` over the parts. Kubernetes has no Job-to-Job
dependency, so the merge waits (up to ``merge_wait`` seconds) until every index has a finished part, and all of it
is applied at once. While waiting it holds only a small CPU request, so on a full cluster it cannot keep eval
pods from being scheduled. The dataset reaches the pods either by an init container that copies the volumes of the
pod's own shard out of the dataset image into an emptyDir (works on every cluster; :mod:`builder.jobs.k8s_init`),
as an image volume
(`volumes[].image`, on by default from Kubernetes 1.35), or, with ``dataset_mount="registry"``, not at all: each
pod's `eval --dataset REGISTRY/REPO:TAG` fetches only the layers of its own shard
(:mod:`builder.evaluate.remote_dataset`) into a cache on its /tmp emptyDir, so the N pods together move about the
dataset once. Pods run as uid 1000, non-root, with a read-only root filesystem and every capability dropped.

With ``parts="registry"`` there is no volume shared between pods (no ReadWriteMany PVC): each eval pod pushes its
part as an artifact attached to the model image and the merge pod's `merge-registry` pulls them, merges and
attaches the merged evaluation (:mod:`builder.jobs.parts`). Registry credentials come from the
``kubernetes.io/dockerconfigjson`` Secret ``registry_secret``, mounted where ``DOCKER_CONFIG`` points.

A pod that is replaced (evicted, its node lost, a retry after a failure) continues its shard where the last one
stopped: the eval args carry ``--resume`` (``resume=False`` drops it) and each part lives on the output volume, so
the new pod runs ``ppl`` only on the records its part does not hold yet, a part already finished is left as it
is, and an empty folder simply starts fresh (with ``parts="registry"`` the part lives on the pod's emptyDir, so a
replaced pod starts its shard over without ``--resume``, unless its part was already pushed: then it stops at
once). A part in that folder from another model or dataset version makes
the pod fail naming both (give the Job another ``name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import SwcliError, UsageError
from builder.jobs.k8s_init import init_command, init_env
from builder.refs import image_ref_problem

POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}}


# Kubernetes' own rules (k8s.io/apimachinery validation and resource.Quantity; batch/v1 Indexed Job limits)
MAX_INDEXED_COMPLETIONS = 100_000
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(_DNS_LABEL)
_DNS_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
# <signedNumber><suffix>: digits with an optional fraction, then a binary SI, a decimal exponent or a decimal SI
_QUANTITY_RE = re.compile(r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                          r"(?:[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE])?")
DEFAULT_PVC = "swcli-eval-output"
DATASET_MOUNTS = ("init", "image", "registry")
DOCKER_CONFIG = "/etc/swcli/registry"  # where the registry Secret's config.json is mounted
SWCLI_HOME = "/tmp/swcli"  # the pods' store and registry cache: on the tmp emptyDir (the root filesystem is read-only)
SCRATCH = "/tmp/swcli-out"  # outputs of a pod whose part goes to the registry


class K8sOptionError(UsageError):
    """A `swcli job k8s` option that Kubernetes would refuse; ``flag`` names it. Exit 2, like any bad flag value."""

    exit_code = 2

    def __init__(self, flag: str, message: str):
        self.flag = flag
        super().__init__(f"{flag}: {message}")


def dns_label_problem(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL_RE.fullmatch(value):
        return (f"{value!r} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and "
                "ending with a letter or digit)")
    return None


def dns_subdomain_problem(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(value):
        return (f"{value!r} is not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' and '.', each "
                "part starting and ending with a letter or digit)")
    return None


def quantity_problem(value: object) -> str | None:
    """A Kubernetes resource quantity (``2``, ``500m``, ``4Gi``, ``1e3``, ``1.5``), not negative."""
    match = _QUANTITY_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return f"{value!r} is not a Kubernetes quantity (e.g. 2, 500m, 1.5, 4Gi, 512Mi, 1e3)"
    if match["sign"] == "-" and float(match["number"]) != 0:
        return f"{value!r} is negative"
    return None


@dataclass
class K8sOptions:
    model_image: str
    dataset_image: str
    shards: int = 1
    namespace: str | None = None
    output_pvc: str = DEFAULT_PVC
    create_pvc: bool = True
    pvc_size: str = "1Gi"
    dataset_mount: str = "init"  # init | image | registry
    parts: str = "volume"  # volume (a ReadWriteMany PVC) | registry (artifacts attached to the model image)
    registry_secret: str | None = None  # a kubernetes.io/dockerconfigjson Secret the pods read the registry with
    cpu: str | None = None
    memory: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    backoff_limit: int = 2
    merge_wait: int = 6 * 3600
    name: str | None = None
    resume: bool = True  # eval pods continue the part already on the volume (see the module docstring)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse what Kubernetes would refuse at apply time, naming the flag; one line each."""
        def fail(flag: str, problem: str | None) -> None:
            if problem:
                raise K8sOptionError(flag, problem)

        fail("--model", image_ref_problem(self.model_image))
        fail("--dataset", image_ref_problem(self.dataset_image))
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
            raise K8sOptionError("--shards", f"must be >= 1, got {self.shards}")
        if self.shards > MAX_INDEXED_COMPLETIONS:
            raise K8sOptionError("--shards", f"an Indexed Job runs at most {MAX_INDEXED_COMPLETIONS} completions, "
                                             f"got {self.shards}")
        if self.namespace is not None:
            fail("--namespace", dns_label_problem(self.namespace))
        fail("--output-pvc", dns_subdomain_problem(self.output_pvc))
        fail("pvc_size", quantity_problem(self.pvc_size))
        if self.dataset_mount not in DATASET_MOUNTS:
            raise K8sOptionError("--dataset-mount", f"must be init, image or registry, got {self.dataset_mount!r}")
        if self.parts not in ("volume", "registry"):
            raise K8sOptionError("--parts", f"must be volume or registry, got {self.parts!r}")
        if self.dataset_mount == "registry":
            fail("--dataset", registry_ref_problem(self.dataset_image, "--dataset-mount registry"))
        if self.parts == "registry":
            fail("--model", registry_ref_problem(self.model_image, "--parts registry"))
            # the merge resolves the dataset image to the NAME:VERSION its parts are filed under
            fail("--dataset", registry_ref_problem(self.dataset_image, "--parts registry"))
            if self.output_pvc != DEFAULT_PVC or not self.create_pvc:
                raise K8sOptionError("--output-pvc", "--parts registry uses no volume; drop --output-pvc")
        if self.registry_secret is not None:
            fail("--registry-secret", dns_subdomain_problem(self.registry_secret))
            if not _uses_registry(self):  # it would be mounted nowhere: a typo'd mode, not a wish
                raise K8sOptionError("--registry-secret", "only --dataset-mount registry and --parts registry read "
                                     "the registry from the pods; add one of them, or drop --registry-secret")
        for flag, value in (("--cpu", self.cpu), ("--memory", self.memory)):
            if value is not None:
                fail(flag, quantity_problem(value))
        for secret in self.image_pull_secrets:
            fail("--image-pull-secret", dns_subdomain_problem(secret))
        if isinstance(self.backoff_limit, bool) or not isinstance(self.backoff_limit, int) or self.backoff_limit < 0:
            raise K8sOptionError("backoff_limit", f"must be >= 0, got {self.backoff_limit}")
        if isinstance(self.merge_wait, bool) or not isinstance(self.merge_wait, int) or self.merge_wait < 1:
            raise K8sOptionError("--merge-wait", f"must be a positive number of seconds, got {self.merge_wait}")


def registry_ref_problem(image: str, mode: str) -> str | None:
    """The pods read ``image`` with swcli's registry client, so it must name its registry (REGISTRY/REPO:TAG)."""
    from builder.errors import RegistryError
    from builder.registry.reference import Reference

    try:
        Reference.parse(image)
    except RegistryError as err:
        return f"{mode} needs an image in a registry: {err}"
    return None


_LOOPBACK_HOST = re.compile(r"(?:localhost|127(?:\.[0-9]{1,3}){3}|\[::1\]|::1)(?::[0-9]+)?", re.IGNORECASE)


def registry_host(image: str) -> str | None:
    """The registry host ``image`` names (Docker's rule: a first component with a '.' or ':', or ``localhost``);
    None when it names none, so a cluster's engine would look it up on Docker Hub."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first.lower() == "localhost"):
        return first
    return None


def image_warnings(opts: K8sOptions) -> list[str]:
    """One line per image a cluster will likely fail to pull: no registry host (a store ref resolves to a local
    name like ``swmp/NAME:TAG``: Docker Hub would be asked) or a loopback registry (the node's own loopback)."""
    lines = []
    for flag, kind, image in (("--model", "model", opts.model_image), ("--dataset", "dataset", opts.dataset_image)):
        host = registry_host(image)
        if host is None:
            why = "names no registry, so a cluster would look it up on Docker Hub"
        elif _LOOPBACK_HOST.fullmatch(host):
            why = f"is on the loopback registry {host}, which a cluster's nodes cannot reach"
        else:
            continue
        lines.append(f"{flag} image {image} {why}; push it to a registry the cluster can pull from "
                     f"(swcli {kind} push REF REGISTRY/REPO:TAG) and pass that ref")
    return lines


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
    volumes, mounts = [], []
    if opts.parts == "volume":
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": opts.output_pvc}})
        mounts.append({"name": "output", "mountPath": "/output"})
    volumes.append({"name": "tmp", "emptyDir": {}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if _uses_registry(opts):
        env = [*env, {"name": "SWCLI_HOME", "value": SWCLI_HOME}]
        if opts.registry_secret:
            volumes.append({"name": "registry-auth", "secret": {"secretName": opts.registry_secret, "items": [
                {"key": ".dockerconfigjson", "path": "config.json"}]}})
            mounts.append({"name": "registry-auth", "mountPath": DOCKER_CONFIG, "readOnly": True})
            env.append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG})
    init = []
    if with_dataset and opts.dataset_mount != "registry":
        mounts.append({"name": "dataset", "mountPath": "/dataset", "readOnly": True})
        if opts.dataset_mount == "image":
            volumes.append({"name": "dataset", "image": {"reference": opts.dataset_image, "pullPolicy": "IfNotPresent"}})
        else:
            volumes.append({"name": "dataset", "emptyDir": {}})
            init.append({"name": "dataset", "image": opts.dataset_image, "command": init_command(opts.shards),
                         "env": init_env(), "volumeMounts": [{"name": "dataset", "mountPath": "/copy"}],
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


def _uses_registry(opts: K8sOptions) -> bool:
    return opts.dataset_mount == "registry" or opts.parts == "registry"


def manifests(opts: K8sOptions) -> list[dict]:
    """PVC (optional), the Indexed eval Job, the merge Job: plain dicts, ready for yaml.safe_dump_all."""
    opts.check()  # a dataclass can be changed after __init__
    base = _dns_name(opts.name or f"swcli-eval-{_image_name(opts.model_image)}-{_image_name(opts.dataset_image)}")
    labels = {"app.kubernetes.io/managed-by": "swcli", "app.kubernetes.io/name": base}
    meta = lambda name: {"name": name, "labels": dict(labels), **({"namespace": opts.namespace} if opts.namespace else {})}  # noqa: E731
    docs = []
    if opts.create_pvc and opts.parts == "volume":
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(opts.output_pvc),
                     "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": opts.pvc_size}}}})
    out = f"/output/{base}/parts/$(JOB_COMPLETION_INDEX)" if opts.parts == "volume" else f"{SCRATCH}/part"
    # a registry part lives on the pod's emptyDir, which a replaced pod does not get back: nothing to resume
    resume = opts.resume and opts.parts == "volume"
    eval_args = ["eval", "--shard", f"$(JOB_COMPLETION_INDEX)/{opts.shards}", "--output", out,
                 *(["--resume"] if resume else [])]
    if opts.dataset_mount == "registry":
        eval_args += ["--dataset", opts.dataset_image]
    if opts.parts == "registry":
        eval_args += ["--push-part", opts.model_image, "--job", base]
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta(base),
        "spec": {"completionMode": "Indexed", "completions": opts.shards, "parallelism": opts.shards,
                 "backoffLimit": opts.backoff_limit,
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": _pod(opts, eval_args, with_dataset=True, resources=_resources(opts),
                                           env=[{"name": "JOB_COMPLETION_COUNT", "value": str(opts.shards)}])}},
    })
    if opts.parts == "volume":
        merge_args = ["merge", f"/output/{base}/parts", "--output", f"/output/{base}/merged", "--wait", str(opts.merge_wait)]
    else:
        merge_args = ["merge-registry", opts.model_image, "--job", base, "--dataset", opts.dataset_image,
                      "--shards", str(opts.shards), "--output", SCRATCH, "--wait", str(opts.merge_wait)]
    docs.append({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta(f"{base}-merge"),
        "spec": {"backoffLimit": opts.backoff_limit,
                 "template": {"metadata": {"labels": dict(labels)}, "spec": _pod(opts, merge_args, with_dataset=False, env=[],
                                                                               resources=_merge_resources(opts))}},
    })
    return docs


def render(opts: K8sOptions) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Multi-line strings (the init container's program) as readable ``|`` blocks; an object used twice (the
        containers' security context) written out twice, not as ``&id001``/``*id001``: people edit this YAML."""

        def ignore_aliases(self, data) -> bool:
            return True

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump_all(manifests(opts), Dumper=Dumper, sort_keys=False)


def write_manifests(opts: K8sOptions, path: Path) -> Path:
    """Render to a temp file beside ``path`` and rename it over: a failed run leaves the old file or none."""
    from builder.files import write_bytes_atomic

    write_bytes_atomic(path, render(opts).encode("utf-8"))
    return path
