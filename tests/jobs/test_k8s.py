"""Kubernetes manifests: valid against the official schemas (offline), Indexed, non-root, both dataset mounts."""

from __future__ import annotations

import kubernetes_validate as kv  # a dev dependency (pyproject.toml): missing, these tests fail
import pytest
import yaml

from builder.jobs.k8s import K8sOptions, manifests

INIT_VERSIONS = ["1.25", "1.29", "1.33", "1.37"]  # init-container mount: any supported cluster
IMAGE_VERSIONS = ["1.33", "1.35", "1.37"]  # image volumes: beta; on by default from 1.35


def options(**kw) -> K8sOptions:
    return K8sOptions(model_image="registry.example/swmp/cifar_net:abc", dataset_image="registry.example/swds/cifar10:def",
                      **kw)


@pytest.mark.parametrize("version", INIT_VERSIONS)
def test_init_mount_manifests_validate(version):
    for doc in manifests(options(shards=4, cpu="2", memory="4Gi", image_pull_secrets=["regcred"], namespace="ml")):
        kv.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", IMAGE_VERSIONS)
def test_image_volume_manifests_validate(version):
    for doc in manifests(options(shards=2, dataset_mount="image", create_pvc=False, output_pvc="mine")):
        kv.validate(doc, version, strict=True)


def test_indexed_job_shape():
    pvc, job, merge = manifests(options(shards=3))
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:3] == ["eval", "--shard", "$(JOB_COMPLETION_INDEX)/3"]
    assert {"name": "JOB_COMPLETION_COUNT", "value": "3"} in container["env"]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True
    init = pod["initContainers"][0]
    assert init["image"] == "registry.example/swds/cifar10:def" and init["command"][:2] == ["sh", "-c"]
    assert init["command"][-1] == "3" and init["env"][0]["name"] == "SWCLI_SLICE_COPY"
    merger = merge["spec"]["template"]["spec"]["containers"][0]
    assert merger["args"][0] == "merge" and merger["args"][-2:] == ["--wait", str(6 * 3600)]  # applied with the eval Job
    assert "initContainers" not in merge["spec"]["template"]["spec"]


def test_waiting_merge_pod_does_not_hold_the_eval_pods_cpu():
    _, job, merge = manifests(options(shards=2, cpu="4", memory="8Gi", merge_wait=600))
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "4", "memory": "8Gi"}
    merger = merge["spec"]["template"]["spec"]["containers"][0]
    assert merger["resources"] == {"requests": {"cpu": "100m", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert merger["args"][-1] == "600"


def test_image_mount_uses_an_image_volume():
    _, job, _ = manifests(options(shards=2, dataset_mount="image"))
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {"name": "dataset", "image": {"reference": "registry.example/swds/cifar10:def", "pullPolicy": "IfNotPresent"}} in pod["volumes"]


def test_cli_writes_a_yaml_stream(cli, tmp_path):
    out = tmp_path / "job.yaml"
    res = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", "--shards", "2", "-o", out)
    assert res.code == 0, res.err
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Job", "Job"]
    bad = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", "--shards", "0")
    assert bad.code == 2 and "--shards: must be >= 1" in bad.err
    bad = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", "--dataset-mount", "nfs")
    assert bad.code == 2 and "init, image or registry" in bad.err


# ----------------------------------------------------------------------------------- registry mount and parts

GOLDEN = __import__("pathlib").Path(__file__).resolve().parents[1] / "golden"
REG = dict(dataset_mount="registry", parts="registry", registry_secret="regcred")


def registry_options(**kw) -> K8sOptions:
    return K8sOptions(**{"model_image": "r.example:5000/team/m:1", "dataset_image": "r.example:5000/team/d:1",
                         "shards": 3, **REG, **kw})


@pytest.mark.parametrize("version", INIT_VERSIONS)
def test_registry_mount_and_parts_validate(version):
    for kw in (REG, dict(dataset_mount="registry"), dict(parts="registry", dataset_mount="init")):
        for doc in manifests(registry_options(**{"registry_secret": None, **kw})):
            kv.validate(doc, version, strict=True)


def test_registry_manifests_golden():
    import os

    from builder.jobs.k8s import render

    text = render(registry_options())
    golden = GOLDEN / "k8s-registry.yaml"
    if os.environ.get("SWCLI_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_registry_mode_has_no_init_copy_no_image_volume_and_no_shared_volume():
    docs = manifests(registry_options())
    assert [d["kind"] for d in docs] == ["Job", "Job"]  # no ReadWriteMany PVC
    job, merge = docs
    for pod in (job["spec"]["template"]["spec"], merge["spec"]["template"]["spec"]):
        assert "initContainers" not in pod
        assert {v["name"] for v in pod["volumes"]} == {"tmp", "registry-auth"}
        assert {"name": "registry-auth", "secret": {"secretName": "regcred", "items": [
            {"key": ".dockerconfigjson", "path": "config.json"}]}} in pod["volumes"]
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert env["DOCKER_CONFIG"] == "/etc/swcli/registry" and env["SWCLI_HOME"].startswith("/tmp/")
        assert {"name": "registry-auth", "mountPath": "/etc/swcli/registry", "readOnly": True} in \
            pod["containers"][0]["volumeMounts"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    # the part is on the pod's emptyDir, which a replaced pod does not get back: nothing to resume from
    assert args[:3] == ["eval", "--shard", "$(JOB_COMPLETION_INDEX)/3"] and "--resume" not in args
    assert args[args.index("--dataset") + 1] == "r.example:5000/team/d:1"
    assert args[args.index("--push-part") + 1] == "r.example:5000/team/m:1"
    assert args[args.index("--job") + 1] == job["metadata"]["name"]
    merger = merge["spec"]["template"]["spec"]["containers"][0]["args"]
    assert merger[:2] == ["merge-registry", "r.example:5000/team/m:1"] and merger[merger.index("--job") + 1] == \
        job["metadata"]["name"]


def test_registry_dataset_mount_keeps_the_volume_parts():
    pvc, job, _ = manifests(registry_options(parts="volume", registry_secret=None))
    pod = job["spec"]["template"]["spec"]
    assert pvc["kind"] == "PersistentVolumeClaim" and "initContainers" not in pod
    assert {v["name"] for v in pod["volumes"]} == {"output", "tmp"}
    assert "--push-part" not in pod["containers"][0]["args"] and "--resume" in pod["containers"][0]["args"]


@pytest.mark.parametrize(("kw", "words"), [
    (dict(dataset_image="swds/d:1"), ["--dataset", "--dataset-mount registry", "names no registry"]),
    (dict(model_image="swmp/m:1"), ["--model", "--parts registry", "names no registry"]),
    # the merge resolves the dataset to the version its parts are filed under, whatever the mount
    (dict(dataset_image="swds/d:1", dataset_mount="image"), ["--dataset", "--parts registry", "names no registry"]),
    (dict(parts="nfs"), ["--parts", "volume or registry"]),
    (dict(registry_secret="Bad_Name"), ["--registry-secret", "DNS-1123"]),
    (dict(dataset_mount="init", parts="volume"), ["--registry-secret", "drop --registry-secret"]),
    (dict(output_pvc="mine", create_pvc=False), ["--output-pvc", "uses no volume"]),
])
def test_registry_mode_refuses_what_it_cannot_reach(kw, words):
    from builder.jobs.k8s import K8sOptionError

    with pytest.raises(K8sOptionError) as err:
        registry_options(**kw)
    assert all(w in str(err.value) for w in words) and len(str(err.value).splitlines()) == 1, str(err.value)


def test_cli_registry_mode(cli, tmp_path):
    out = tmp_path / "job.yaml"
    res = cli("job", "k8s", "--model", "r.example:5000/team/m:1", "--dataset", "r.example:5000/team/d:1", "--shards", "2",
              "--dataset-mount", "registry", "--parts", "registry", "--registry-secret", "regcred", "-o", out)
    assert res.code == 0, res.err
    assert [d["kind"] for d in yaml.safe_load_all(out.read_text())] == ["Job", "Job"]


# ----------------------------------------------------------------------------------- what people read and edit


def test_yaml_has_no_anchors_for_repeated_objects():
    from builder.jobs.k8s import render

    opts = K8sOptions(model_image="r.example/swmp/m:1", dataset_image="r.example/swds/d:1", shards=2)
    docs = manifests(opts)
    pod = docs[1]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["securityContext"] is pod["containers"][0]["securityContext"]  # one object, twice
    text = render(opts)
    assert "&id" not in text and "*id" not in text
    assert list(yaml.safe_load_all(text)) == docs


@pytest.mark.parametrize(("model", "dataset", "warned"), [
    ("r.example/swmp/m:1", "r.example:5000/swds/d:1", []),
    ("swmp/m:1-abc", "docker.io/team/d:1", ["--model image swmp/m:1-abc names no registry"]),
    ("127.0.0.1:5000/swmp/m:1", "localhost:5000/swds/d:1",
     ["--model image 127.0.0.1:5000/swmp/m:1 is on the loopback registry 127.0.0.1:5000",
      "--dataset image localhost:5000/swds/d:1 is on the loopback registry localhost:5000"]),
    ("localhost/m:1", "[::1]:5000/d:1", ["loopback registry localhost,", "loopback registry [::1]:5000"]),
])
def test_image_warnings_name_images_a_cluster_cannot_pull(model, dataset, warned):
    from builder.jobs.k8s import image_warnings

    lines = image_warnings(K8sOptions(model_image=model, dataset_image=dataset))
    assert len(lines) == len(warned)
    for line, words in zip(lines, warned):
        assert words in line and "push it to a registry the cluster can pull from" in line and "\n" not in line


def test_cli_warns_about_a_store_ref_and_a_loopback_registry(cli, tmp_path):
    res = cli("job", "k8s", "--model", "swmp/m:1", "--dataset", "127.0.0.1:5000/swds/d:1", "-o", tmp_path / "job.yaml")
    assert res.code == 0, res.err
    warnings = [line for line in res.err.splitlines() if line.strip()]
    assert len(warnings) == 2 and all(line.startswith("swcli: warning: ") for line in warnings), res.err
    assert "swmp/m:1 names no registry" in warnings[0] and "127.0.0.1:5000" in warnings[1]
    quiet = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", "-o", tmp_path / "b.yaml")
    assert quiet.code == 0 and quiet.err.strip() == "", quiet.err
