"""Real registries for tests and benchmarks: Debian's docker-registry on a loopback port (plain, or htpasswd over
TLS with a self-signed CA), and what a test reads from the registry's own side (its access log, its storage)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest


class Registry:
    """Debian's docker-registry on a loopback port: plain, or htpasswd auth over TLS with a self-signed CA.

    Its blobs live in ``root/blobs`` and its access log in ``root/registry.log``, so a test can stop it and start
    it again on the same port and storage, as a registry that died and came back.
    """

    USER, PASSWORD = "alice", "s3cret-Passw0rd"

    def __init__(self, root, *, secure: bool = False):
        self.binary = shutil.which("docker-registry")
        if self.binary is None:
            pytest.skip("docker-registry is not installed")
        self.root, self.secure, self.proc = root, secure, None
        root.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.log = root / "registry.log"
        extra = ""
        if secure:
            if shutil.which("htpasswd") is None:
                pytest.skip("htpasswd (apache2-utils) is not installed")
            self.certs = root / "certs"
            self._make_certs(self.certs)
            subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), self.USER, self.PASSWORD], check=True,
                           capture_output=True)
            extra = (f"  tls:\n    certificate: {self.certs / 'server.crt'}\n    key: {self.certs / 'server.key'}\n"
                     f"auth:\n  htpasswd:\n    realm: swcli-test\n    path: {root / 'htpasswd'}\n")
        self.config = root / "registry.yml"
        self.config.write_text(f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n"
                               f"  filesystem:\n    rootdirectory: {root / 'blobs'}\n  delete:\n    enabled: true\n"
                               f"http:\n  addr: {self.address}\n{extra}")
        self.start()

    @staticmethod
    def _make_certs(certs) -> None:
        """A CA and a server certificate for IP 127.0.0.1 signed by it; skopeo trusts the CA via --cert-dir."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        certs.mkdir()
        run = lambda *a: subprocess.run(["openssl", *a], cwd=certs, check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=swcli test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
        (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
        (certs / "trust").mkdir()  # what Docker's certs.d/<host:port>/ holds: the CA alone (a *.key means client auth)
        shutil.copy(certs / "ca.crt", certs / "trust" / "ca.crt")

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "serve", str(self.config)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start; see {self.log}")

    def kill(self) -> None:
        """Die the hard way, mid-request: no graceful shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def skopeo(self, *args: str, creds: bool = True) -> subprocess.CompletedProcess:
        """Run skopeo against this registry, verifying TLS with our CA when secure."""
        if shutil.which("skopeo") is None:
            pytest.skip("skopeo is not installed")
        command = ["skopeo", *args]
        if self.secure:
            command[2:2] = ["--cert-dir", str(self.certs / "trust"), "--tls-verify=true"]
            command[2:2] = ["--creds", f"{self.USER}:{self.PASSWORD}"] if creds else ["--no-creds"]
        else:
            command[2:2] = ["--tls-verify=false"]
        return subprocess.run(command, capture_output=True, text=True)


def uploaded_blobs(log) -> int:
    """Blob uploads the registry completed (PUT .../blobs/uploads/<id>?digest=...), from its own access log."""
    return len(re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ]+digest=sha256', log.read_text()))
