"""Fake credentials of every kind the snapshot's secret scanner knows, for the tests that must see them refused."""

from __future__ import annotations

import json

# fake secrets, assembled so this file itself does not hold one verbatim
PEM_RSA = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\n-----END RSA PRIVATE KEY-----\n"
OPENSSH = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
PKCS8 = "-----BEGIN " + "PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----\n"
AWS_ID = "AKIA" + "Q3EGRZWX5TBY7KMP"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "9sTq2LpZ0Q"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITLAB = "glpat-" + "xY3kP9qLm2Rt7Wv4Zb8N"
SLACK = "xoxb-" + "1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyD4x9Qm2Lk7Vb3Nc8Rt1Wz6Yh5Pj0Ge2Ua"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
SERVICE_ACCOUNT = json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "abc",
                              "private_key": PKCS8, "client_email": "x@p.iam.gserviceaccount.com"}, indent=2)
NETRC = "machine api.example.com\n  login alice\n  password s3cr3t-netrc-pw\n"
SECRET_TEXTS = [PEM_RSA, OPENSSH, PKCS8, AWS_ID, AWS_SECRET, GITHUB, GITLAB, SLACK, GOOGLE, HF, "s3cr3t-netrc-pw"]
