"""A real `swcli console` process for the console's tests, and a store with something to show.

``running_console`` starts ``python -m builder console --port 0`` with the test's environment (its store), reads the
one URL line, and stops the process when the block ends. ``Console.request`` speaks HTTP with ``http.client`` so a
test sets every header itself (Host, Origin, Cookie), as an attacker's page or a rebinding DNS name would.

``console_world`` builds what the tutorial's last step needs, quickly: a dataset of CIFAR-shaped records (3x32x32
pixels, label names one of which is hostile markup) and two versions of the tiny numpy model whose predictions
differ, so two runs have flipped records.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from tests.helpers.datasets import SLICER, write_tiny_dataset
from tests.helpers.models import HANDLER, write_model

# the tiny model, sleeping $PPL_SLEEP seconds per record (a job that runs long enough to watch and to cancel)
SLOWABLE = HANDLER.replace("    def ppl(self, data, **kw):\n",
                           "    def ppl(self, data, **kw):\n        import os, time\n"
                           "        time.sleep(float(os.environ.get('PPL_SLEEP', '0')))\n")
assert SLOWABLE != HANDLER
HOSTILE_LABEL = '<img src=x onerror=alert(1)>"&'
LABEL_NAMES = ["cat", "dog", HOSTILE_LABEL]


@dataclass
class Console:
    url: str  # the printed URL, token included
    process: subprocess.Popen

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def request(self, method: str, path: str, *, headers: dict | None = None, body: object = None,
                bearer: bool = True, timeout: float = 30) -> tuple[int, dict, bytes]:
        """(status, headers lower-cased, body); the token as a Bearer header unless ``bearer`` is False."""
        hostname, port = self.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout)
        sent = {"Host": self.host, **({"Authorization": f"Bearer {self.token}"} if bearer else {}), **(headers or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
            sent["Content-Length"] = str(len(data))
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in sent.items():
            if value is not None:
                conn.putheader(key, value)
        conn.endheaders(data)
        res = conn.getresponse()
        out = (res.status, {k.lower(): v for k, v in res.getheaders()}, res.read())
        conn.close()
        return out

    def json(self, method: str, path: str, body: object = None, **kw) -> tuple[int, object]:
        status, _, raw = self.request(method, path, body=body, **kw)
        return status, json.loads(raw) if raw else None

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, job = self.json("GET", f"/api/jobs/{job_id}")
            assert status == 200, job
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job['log'][-5:]}")


@contextlib.contextmanager
def running_console(*args: str, env: dict | None = None, timeout: float = 30) -> Iterator[Console]:
    """``swcli console --port 0 ARGS`` as a child process; yields once its URL line is printed."""
    process = subprocess.Popen([sys.executable, "-m", "builder", "console", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                               start_new_session=True)
    try:
        line = _first_line(process, timeout)
        assert line.startswith("console: http://"), line
        yield Console(line.split(" ", 1)[1], process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        process.stdout.close()
        process.stderr.close()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    deadline, buf = time.monotonic() + timeout, b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            err = process.stderr.read1(65536) if process.poll() is not None else b""
            raise AssertionError(f"swcli console printed no URL line: {buf!r} {err.decode(errors='replace')}")
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                continue
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


def cifar_like(i: int, label: int) -> bytes:
    """3x32x32 planar pixels: a colour per label with a bright square whose place moves with ``i``. The first byte
    (what the tiny model reads) is ``label + 1`` for every 5th record, ``label + 2`` for every 7th of the others and
    ``label`` for the rest: the model with offset 0 is right on the last, the one with offset 2 on the first."""
    import numpy as np

    colours = [(200, 60, 60), (60, 160, 60), (60, 80, 200)]
    img = np.zeros((3, 32, 32), dtype=np.uint8)
    for c in range(3):
        img[c] = colours[label][c]
    y, x = (i * 7) % 24, (i * 5) % 24
    img[:, y:y + 8, x:x + 8] = 250
    data = bytearray(img.tobytes())
    data[0] = (label + (1 if i % 5 == 0 else 2 if i % 7 == 0 else 0)) % 3
    return bytes(data)


def console_world(cli, tmp_path: Path, records: int = 300, label_names: list[str] = LABEL_NAMES) -> dict:
    """The dataset ``tiny`` and two versions of ``modthree`` (offsets 0 and 2) in the store; returns their refs
    (``model0``: right on ~69% of the records, ``model2``: on the 20% the other gets wrong by one)."""
    names = ",".join(json.dumps(n) for n in label_names)
    slicer = SLICER + f"\n    def label_names(self):\n        return [{names}]\n"
    ds = write_tiny_dataset(tmp_path / "ds", [(cifar_like(i, i % 3), i % 3) for i in range(records)], files=2,
                            volume="256k", slicer=slicer)
    res = cli("dataset", "build", "--no-image", ds)
    assert res.code == 0, res.err
    refs = {"dataset": "tiny"}
    for offset in (0, 2):
        root = write_model(tmp_path / f"model-{offset}", SLOWABLE)
        (root / "models" / "weights.json").write_text(json.dumps({"offset": offset}))
        res = cli("model", "build", "--no-image", "--skip-gen-env", root)
        assert res.code == 0, res.err
        refs[f"model{offset}"] = _built_ref(res.out)
    return refs


def _built_ref(out: str) -> str:
    """``modthree:<version>`` from `model build`'s output (the line naming the stored entry)."""
    import re

    found = re.search(r"modthree:([0-9a-z]{6,})", out)
    assert found, out
    return f"modthree:{found.group(1)}"
