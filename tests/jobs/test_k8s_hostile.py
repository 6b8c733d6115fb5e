"""`job k8s` refuses what Kubernetes would refuse, one line naming the flag, before writing anything."""

from __future__ import annotations

import pytest

from builder.jobs.k8s import MAX_INDEXED_COMPLETIONS, K8sOptionError, K8sOptions, manifests, quantity_problem

MODEL, DATASET = "registry.example/swmp/cifar_net:abc", "registry.example/swds/cifar10:def"


def options(**kw) -> K8sOptions:
    return K8sOptions(model_image=MODEL, dataset_image=DATASET, **kw)


@pytest.mark.parametrize("value", ["2", "500m", "1.5", "4Gi", "512Mi", "1e3", "1E3", "2k", "1M", "0.5", ".5", "1.",
                                   "+1", "0", "-0", "3Ei", "1e-3", "100Ki"])
def test_kubernetes_quantities_pass(value):
    assert quantity_problem(value) is None
    opts = options(cpu=value, memory=value)
    assert manifests(opts)[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == value


@pytest.mark.parametrize("value", ["two", "4 GB", "4GB", "4gi", "4G i", "", " 2", "2 ", "1.5.2", "1e", "e3", "-1",
                                   "-500m", "2\n", "0x10", "1KiB", "$(id)", "4Gi\nkind: Pod"])
@pytest.mark.parametrize("flag", ["cpu", "memory"])
def test_bad_quantities_are_refused_naming_the_flag(value, flag):
    with pytest.raises(K8sOptionError) as info:
        options(**{flag: value})
    assert info.value.flag == f"--{flag}" and str(info.value).startswith(f"--{flag}: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("shards", [1, 2, MAX_INDEXED_COMPLETIONS])
def test_shards_within_the_indexed_job_limit(shards):
    assert manifests(options(shards=shards))[1]["spec"]["completions"] == shards


@pytest.mark.parametrize("shards", [0, -1, MAX_INDEXED_COMPLETIONS + 1, 1_000_000_000])
def test_shards_outside_the_limit(shards):
    with pytest.raises(K8sOptionError, match="^--shards: "):
        options(shards=shards)


@pytest.mark.parametrize("namespace", ["ml", "a", "team-1", "a" * 63])
def test_namespace_dns_labels_pass(namespace):
    assert manifests(options(namespace=namespace))[1]["metadata"]["namespace"] == namespace


@pytest.mark.parametrize("namespace", ["", "ML", "team_1", "-ml", "ml-", "a.b", "a" * 64, "ml\n", "ml\nkind: Pod"])
def test_namespace_not_a_dns_label(namespace):
    with pytest.raises(K8sOptionError, match="^--namespace: .*DNS-1123 label"):
        options(namespace=namespace)


@pytest.mark.parametrize("name", ["out", "my.pvc", "a-b.c-d", ".".join(["a" * 63] * 3) + "." + "a" * 61])
def test_pvc_and_secret_subdomains_pass(name):
    assert len(name) <= 253
    docs = manifests(options(output_pvc=name, create_pvc=False, image_pull_secrets=[name]))
    assert docs[0]["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": name}]


@pytest.mark.parametrize("name", ["", "Out", "out_", "a..b", ".a", "a.", "a" * 254, "out\n", "out -n kube-system"])
@pytest.mark.parametrize(("field", "flag"), [("output_pvc", "--output-pvc"), ("image_pull_secrets", "--image-pull-secret")])
def test_pvc_and_secret_not_subdomains(name, field, flag):
    value = [name] if field == "image_pull_secrets" else name
    with pytest.raises(K8sOptionError) as info:
        options(**{field: value})
    assert info.value.flag == flag and "DNS-1123 subdomain" in str(info.value)


@pytest.mark.parametrize("wait", [0, -5])
def test_merge_wait_must_be_positive(wait):
    with pytest.raises(K8sOptionError, match="^--merge-wait: "):
        options(merge_wait=wait)


@pytest.mark.parametrize(("field", "flag"), [("model_image", "--model"), ("dataset_image", "--dataset")])
def test_images_must_be_references(field, flag):
    with pytest.raises(K8sOptionError, match=f"^{flag}: "):
        K8sOptions(**{"model_image": MODEL, "dataset_image": DATASET, field: "r.example/swmp/m:1\nkind: Pod"})


def test_changed_options_are_checked_again_at_render():
    opts = options()
    opts.shards = 10 ** 9
    with pytest.raises(K8sOptionError, match="--shards"):
        manifests(opts)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--shards", "1000000000"], "--shards"),
        (["--namespace", "Team_A"], "--namespace"),
        (["--output-pvc", "My PVC"], "--output-pvc"),
        (["--output-pvc", ""], "--output-pvc"),
        (["--image-pull-secret", "regcred", "--image-pull-secret", "Bad_Secret"], "--image-pull-secret"),
        (["--cpu", "two"], "--cpu"),
        (["--memory", "4 GB"], "--memory"),
        (["--merge-wait", "0"], "--merge-wait"),
    ],
)
def test_cli_one_line_and_no_file(cli, tmp_path, args, flag):
    out = tmp_path / "job.yaml"
    res = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", *args, "-o", out)
    assert res.code == 2 and res.err.startswith(f"swcli: error: {flag}: ") and res.err.count("\n") == 1, res.err
    assert not out.exists()


def test_cli_output_replaces_the_file_whole(cli, tmp_path):
    out = tmp_path / "job.yaml"
    out.write_text("old")
    res = cli("job", "k8s", "--model", "r.example/swmp/m:1", "--dataset", "r.example/swds/d:1", "--cpu", "500m", "-o", out)
    assert res.code == 0, res.err
    assert "cpu: 500m" in out.read_text() and [p.name for p in tmp_path.iterdir()] == ["job.yaml"]
