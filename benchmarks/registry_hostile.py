#!/usr/bin/env python3
"""swcli against hostile registries, measured: peak RSS, time to the error, and that normal transfers kept speed.

Every command runs as a child (``python -m builder ...`` under ``/usr/bin/time``, so the peak RSS is swcli's
own) against a :class:`tests.registry_servers.HostileServer` on 127.0.0.1 (127.0.0.2 for another host), with
``PYTHONPATH`` set to ``--tree`` (default: this checkout), so an older checkout can be measured the same way:

    git archive efaaa35 | tar -x -C /tmp/old
    python benchmarks/registry_hostile.py --tree /tmp/old          # before
    python benchmarks/registry_hostile.py                          # after
    python benchmarks/registry_hostile.py --parts speed --tree /tmp/old --tree .   # alternated, 3 rounds

``rss``: each hostile answer (1 GiB by default, ``--huge-mib``) to ``pull``, ``eval pull`` and ``eval list
--image``. ``drip``: a byte a second of a manifest's body, of its status line and headers, of a config blob and of
a token answer, with the default timeout (30 s); a command still waiting after ``--cap`` seconds is killed and
shown as ``>cap``. ``speed``: a 256 MiB random blob uploaded (chunked) and fetched back through
``RegistryClient`` against Debian's docker-registry, each tree in its own process, rounds alternated.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tests.registry_servers import Answer, HostileServer, Registry  # noqa: E402

MB = 1 << 20
OCI = "application/vnd.oci.image.manifest.v1+json"


def run(tree: Path, home: Path, args: list[str], env: dict | None = None, cap: float = 600) -> tuple[int, float,
                                                                                                      float, str]:
    """(exit code, peak RSS MB, seconds, last stderr line) of ``python -m builder ARGS`` from ``tree``."""
    peak = home / "rss"
    full = dict(os.environ, PYTHONPATH=str(tree), SWCLI_HOME=str(home / "store"), DOCKER_CONFIG=str(home / "docker"),
                DOCKER_HOST="unix:///nonexistent", **(env or {}))
    started = time.monotonic()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(peak), sys.executable, "-m", "builder", *args],
                            env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            cwd=home)  # not this checkout: `python -m` would import builder from the cwd first
    try:
        _, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return -9, 0.0, time.monotonic() - started, "(killed: still waiting)"
    seconds = time.monotonic() - started
    lines = [l for l in err.decode(errors="replace").splitlines() if l and not l.startswith("Command exited")]
    kb = peak.read_text().split()[-1] if peak.exists() else "0"
    line = lines[-1].removeprefix("swcli: error: ") if lines else ""
    return proc.returncode, int(kb) / 1024, seconds, line if len(line) < 120 else line[:30] + " ... " + line[-85:]


def routes(*table):
    def answer(seen):
        for method, pattern, ans in table:
            if seen.method == method and pattern in seen.path:
                return ans(seen) if callable(ans) else ans
        if seen.path == "/v2/":
            return Answer(200, {}, b"{}")
        return Answer(404, {}, b'{"errors": []}')
    return answer


def manifest_doc(config: bytes) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI, "layers": [], "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest()}}).encode()


def scenarios(huge: int):
    """(name, command kind, routes factory(realm), needs a token realm, stored login)"""
    bomb = gzip.compress(bytes(huge * MB), compresslevel=1)
    many = dict(body=b" " * MB, repeat=huge)
    head = Answer(200, {"Content-Type": OCI, "Content-Length": "300",
                        "Docker-Content-Digest": "sha256:" + "a" * 64})
    config = b"{}"
    return [
        ("baseline: no such image (404)", "pull", lambda realm: routes()),
        (f"manifest: gzip bomb ({len(bomb) >> 10} KiB -> {huge} MiB)", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI, "Content-Encoding": "gzip"},
                                                            bomb)))),
        (f"manifest: chunked {huge} MiB", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, chunked=True, **many)))),
        (f"manifest: Content-Length 300, {huge} MiB sent", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, length=300, **many)))),
        (f"manifest GET: 500 with a {huge} MiB body", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(500, {}, **many)))),
        (f"token answer: chunked {huge} MiB", "pull-login",
         lambda realm: routes(("GET", "/token", Answer(200, {}, chunked=True, **many)))),
        (f"config blob: gzip bomb ({huge} MiB)", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, manifest_doc(config))),
                              ("GET", "/blobs/", Answer(200, {"Content-Encoding": "gzip"}, bomb)))),
        (f"eval pull: gzip bomb ({huge} MiB)", "eval-pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI, "Content-Encoding": "gzip"},
                                                            bomb)))),
        (f"eval pull: chunked {huge} MiB", "eval-pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, chunked=True, **many)))),
        (f"eval list --image: referrers chunked {huge} MiB", "eval-list",
         lambda realm: routes(("HEAD", "/manifests/", head),
                              ("GET", "/referrers/", Answer(200, {}, chunked=True, **many)))),
        (f"eval list --image: referrers 500, {huge} MiB body", "eval-list",
         lambda realm: routes(("HEAD", "/manifests/", head), ("GET", "/referrers/", Answer(500, {}, **many)))),
        (f"manifest GET: 500, gzip bomb body ({huge} MiB)", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(500, {"Content-Encoding": "gzip"}, bomb)))),
        (f"token answer: gzip bomb ({huge} MiB)", "pull-login",
         lambda realm: routes(("GET", "/token", Answer(200, {"Content-Encoding": "gzip"}, bomb)))),
        (f"eval list --image: referrers gzip bomb ({huge} MiB)", "eval-list",
         lambda realm: routes(("HEAD", "/manifests/", head),
                              ("GET", "/referrers/", Answer(200, {"Content-Encoding": "gzip"}, bomb)))),
    ]


def drips():
    config = b"{" + b" " * 100_000 + b"}"
    return [
        ("manifest body, 1 byte/s", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, b" " * 100_000, drip=1.0)))),
        ("status line and headers, 1 byte/s", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, b"{}", drip=1.0,
                                                            drip_head=True)))),
        ("config blob (100 KB), 1 byte/s", "pull",
         lambda realm: routes(("GET", "/manifests/", Answer(200, {"Content-Type": OCI}, manifest_doc(config))),
                              ("GET", "/blobs/", Answer(200, {}, config, drip=1.0)))),
        ("token answer, 1 byte/s", "pull-login",
         lambda realm: routes(("GET", "/token", Answer(200, {}, b'{"token": "' + b"a" * 2000 + b'"}', drip=1.0)))),
    ]


def command(kind: str, address: str) -> list[str]:
    image = f"{address}/team/m:1"
    return {"pull": ["pull", image], "pull-login": ["pull", image],
            "eval-pull": ["eval", "pull", f"{address}/team/m@sha256:{'0' * 64}"],
            "eval-list": ["eval", "list", "--image", image]}[kind]


def one(tree: Path, kind: str, make, cap: float, env: dict | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "docker").mkdir()
        realm = HostileServer(make(None))
        if kind == "pull-login":
            challenge = Answer(401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token"'})
            server = HostileServer(lambda seen: challenge)
            (home / "docker" / "config.json").write_text(json.dumps({"auths": {server.address: {
                "auth": "YWxpY2U6cHc="}}}))
        else:
            server = realm
        try:
            return run(tree, home, command(kind, server.address), env, cap)
        finally:
            server.stop()
            if server is not realm:
                realm.stop()


def speed(trees: list[Path], rounds: int, size_mib: int) -> None:
    script = """
import hashlib, io, os, resource, sys, time
from builder.registry.client import RegistryClient
data = open(sys.argv[2], 'rb').read()
digest = 'sha256:' + hashlib.sha256(data).hexdigest()
client = RegistryClient(sys.argv[1])
cpu = lambda: (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))
start, c0 = time.monotonic(), cpu()
client.upload_blob('bench/r' + sys.argv[3], digest, len(data), lambda: io.BytesIO(data))
up, upcpu = time.monotonic() - start, cpu() - c0
start, c0 = time.monotonic(), cpu()
out = io.BytesIO()
client.fetch_blob('bench/r' + sys.argv[3], digest, out, size=len(data))
print(f'{up:.2f} {upcpu:.2f} {time.monotonic() - start:.2f} {cpu() - c0:.2f}')
"""
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "blob"
        blob.write_bytes(os.urandom(size_mib * MB))
        for r in range(rounds):
            for i, tree in enumerate(trees):
                reg = Registry(Path(tmp) / f"reg-{r}-{i}")
                try:
                    done = subprocess.run([sys.executable, "-c", script, reg.address, str(blob), str(r)],
                                          env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True, text=True,
                                          check=True, cwd=tmp)
                    up, upcpu, down, downcpu = done.stdout.split()
                    print(f"round {r + 1} {tree}: upload {up} s (CPU {upcpu} s), fetch {down} s (CPU {downcpu} s) "
                          f"({size_mib} MiB)", flush=True)
                finally:
                    reg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, action="append", help="checkout to run (repeat for --parts speed)")
    parser.add_argument("--parts", default="rss,drip", help="rss, drip, speed (comma separated)")
    parser.add_argument("--huge-mib", type=int, default=1024)
    parser.add_argument("--cap", type=float, default=150.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--speed-mib", type=int, default=256)
    parser.add_argument("--only", default="", help="run only the answers whose name contains this")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [HERE])]
    parts = args.parts.split(",")
    if "rss" in parts:
        print(f"{'answer':50} {'command':10} exit  peak RSS MB  seconds  message")
        for name, kind, make in (s for s in scenarios(args.huge_mib) if args.only in s[0]):
            code, rss, seconds, line = one(trees[0], kind, make, args.cap)
            print(f"{name:50} {kind:10} {code:>4}  {rss:>11.0f}  {seconds:>7.1f}  {line}", flush=True)
    if "drip" in parts:
        print(f"{'drip (SWCLI_REGISTRY_TIMEOUT unset: 30 s)':50} exit  seconds  message")
        for name, kind, make in (s for s in drips() if args.only in s[0]):
            code, rss, seconds, line = one(trees[0], kind, make, args.cap)
            print(f"{name:50} {code:>4}  {seconds:>7.1f}  {line}", flush=True)
    if "speed" in parts:
        speed(trees, args.rounds, args.speed_mib)


if __name__ == "__main__":
    main()
