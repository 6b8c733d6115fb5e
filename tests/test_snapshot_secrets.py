"""Credentials never enter a snapshot: default path rules, the content scanner, and `!PATH` consent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.snapshot import IgnoreRules, SecretScanner, SecretsFoundError, scan_file, scan_sources, walk_source_report
from tests.helpers.fake_secrets import (AWS_ID, AWS_SECRET, GITHUB, GITLAB, GOOGLE, HF, NETRC, OPENSSH, PEM_RSA, PKCS8,
                                        SECRET_TEXTS, SERVICE_ACCOUNT, SLACK)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (PEM_RSA, "private key"),
        (OPENSSH, "private key"),
        ("-----BEGIN EC " + "PRIVATE KEY-----\nMHcCAQEE\n", "private key"),
        ("-----BEGIN PGP PRIVATE " + "KEY BLOCK-----\n\nlQOYBF\n", "private key"),
        (f"[default]\naws_access_key_id = {AWS_ID}\n", "AWS access key id"),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "AWS secret access key"),
        (f"aws_secret_access_key = {AWS_SECRET}\n", "AWS secret access key"),
        (f'TOKEN = "{GITHUB}"\n', "GitHub token"),
        ("token: github_pat_" + "11ABCDEFG0" * 4 + "\n", "GitHub token"),
        (f"token={GITLAB}\n", "GitLab token"),
        (f"SLACK={SLACK}\n", "Slack token"),
        ("url = 'https://hooks.slack.com/services/" + "T0123ABCD/B0456EFGH/abcdefghijkl" + "'\n", "Slack webhook"),
        (f"key = '{GOOGLE}'\n", "Google API key"),
        (f"HF_TOKEN={HF}\n", "Hugging Face token"),
        ("password = pypi-AgE" + "Ix" * 40 + "\n", "PyPI token"),
        ("//registry.npmjs.org/:_authToken=npm_" + "aB3" * 12 + "\n", "npm token"),
        (SERVICE_ACCOUNT, "service-account key"),
        (NETRC, "netrc password"),
        ('{"auths": {"registry.example": {"auth": "' + "YWxpY2U6czNjcjN0LXB3ZA==" + '"}}}', "registry auth"),
    ],
)
def test_scanner_finds_each_kind_and_never_keeps_the_text(tmp_path, text, kind):
    path = tmp_path / "innocent_name.txt"
    path.write_text("# some config\n" + text)
    kinds = scan_file(path)
    assert kind in kinds
    assert not any(secret in " ".join(kinds) for secret in SECRET_TEXTS)


@pytest.mark.parametrize(
    "text",
    [
        "import os\nkey = os.environ['AWS_SECRET_ACCESS_KEY']\n",  # a name, not a value
        "# example from the AWS docs: AKIAIOSFODNN7EXAMPLE\n",
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----\n",
        "machine learning models need a password manager\n",
        "self.hf_model_name_or_path_for_the_tokenizer = None\n",
        "x = 'ghp_short'\n",
    ],
)
def test_scanner_lets_lookalikes_through(tmp_path, text):
    path = tmp_path / "f.py"
    path.write_text(text)
    assert scan_file(path) == []


def test_repository_source_scans_clean():
    root = Path(__file__).resolve().parent.parent
    walk = walk_source_report(root, always_include=())
    dirty = {f.rel: scan_file(f.path) for f in walk.files if f.link is None and not f.rel.startswith("tests/")}
    assert {rel: kinds for rel, kinds in dirty.items() if kinds} == {}


@pytest.mark.parametrize("at", [0, 4096 - 20, 4096 - 1, 4096, 3 * 4096 - 7])
def test_a_secret_across_a_block_boundary_is_found(tmp_path, at):
    blob = bytearray(os.urandom(4 * 4096))
    blob = blob.replace(b"-", b"+")  # no stray header fragments in the noise
    blob[at : at + len(OPENSSH)] = OPENSSH.encode()
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(blob[: 4 * 4096]))
    assert scan_file(path, chunk=4096) == ["private key"]
    scanner = SecretScanner()
    for n in range(0, len(blob), 1000):  # blocks smaller than the overlap too
        scanner.feed(bytes(blob[n : n + 1000]))
    assert scanner.kinds == ["private key"]


def test_service_account_markers_in_different_blocks_still_count(tmp_path):
    path = tmp_path / "sa.json"
    path.write_text('{"type": "service_account",' + " " * 20000 + '"private_key": "redacted"}')
    assert "service-account key" in scan_file(path, chunk=4096)


def test_a_big_binary_file_with_a_key_at_its_end(tmp_path):
    path = tmp_path / "model.pth"
    with open(path, "wb") as fh:
        fh.write(os.urandom(9 << 20).replace(b"-", b"+"))
        fh.write(PEM_RSA.encode())
    assert scan_file(path) == ["private key"]


CREDENTIAL_PATHS = [
    ".aws/credentials", ".aws/config", ".netrc", "_netrc", ".npmrc", ".pypirc", ".docker/config.json", ".kube/config",
    ".env", ".env.local", ".env.production", "prod.env", ".envrc", ".ssh/id_rsa", ".ssh/config", ".gnupg/secring.gpg",
    ".git-credentials", ".pgpass", ".config/gcloud/application_default_credentials.json", "certs/server.pem",
    "tls.key", "keys/id_ed25519", "keys/id_ecdsa.pub", "store.p12", "sub/dir/.netrc", "sub/.aws/credentials",
]


def test_default_rules_exclude_every_credential_path_and_report_it(tmp_path):
    for rel in CREDENTIAL_PATHS + ["code/ppl.py", "docker/Dockerfile", "environment.yaml"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    walk = walk_source_report(tmp_path)
    assert [f.rel for f in walk.files] == ["code/ppl.py", "docker/Dockerfile", "environment.yaml"]
    excluded = walk.excluded_credentials
    for rel in CREDENTIAL_PATHS:  # the file itself, or the folder it sits in
        assert any(rel == e or rel.startswith(e) and e.endswith("/") for e in excluded), rel
    assert excluded == sorted(excluded) and ".aws/" in excluded and ".kube/" in excluded


def test_swignore_re_includes_a_credential_path(tmp_path):
    for rel in (".env.example", ".aws/credentials"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / ".swignore").write_text("!.env.example\n")
    walk = walk_source_report(tmp_path)
    assert [f.rel for f in walk.files] == [".env.example", ".swignore"]
    assert walk.excluded_credentials == [".aws/credentials"]  # walked into (a '!' rule exists): reported per file


def test_consent_is_an_exact_path_not_a_glob(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "sa.json").write_text(SERVICE_ACCOUNT)
    (tmp_path / "conf" / "app.yaml").write_text("x: 1\n")
    for swignore in ("", "!conf/*\n", "!conf\n", "!**/sa.json\n", "!conf/sa.json\nconf/sa.json\n"):
        (tmp_path / ".swignore").write_text(swignore)
        walk = walk_source_report(tmp_path)
        if "conf/sa.json" not in [f.rel for f in walk.files]:
            continue  # ignored again by a later line: nothing to scan
        with pytest.raises(SecretsFoundError) as info:
            scan_sources(walk)
        assert info.value.findings == {"conf/sa.json": ["private key", "service-account key"]}
        assert PKCS8.splitlines()[1] not in str(info.value)
    (tmp_path / ".swignore").write_text("!conf/sa.json\n")
    assert scan_sources(walk_source_report(tmp_path)) == {"conf/sa.json": ["private key", "service-account key"]}


def test_only_the_users_negations_count_as_consent():
    rules = IgnoreRules(["!a/b.txt", "!a/*.txt"])
    assert rules.reincludes_exactly("a/b.txt") and not rules.reincludes_exactly("a/c.txt")
