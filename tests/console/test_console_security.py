"""The console's guard, tried against a running `swcli console` as an attacker would: no token, a forged cookie, a
rebinding Host, a cross-site POST, a missing or wrong CSRF token, paths in requests, markup in run data."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.console_server import HOSTILE_LABEL, running_console
from tests.helpers.run_folders import write_run

RUN_ID = "20260101-000000-net-cifar-0001"


@pytest.fixture()
def console(swcli_home):
    names = {"0": HOSTILE_LABEL, "1": "dog", "2": "</script><script>alert(2)</script>"}
    write_run(swcli_home / "runs" / RUN_ID, names=names)
    with running_console() as c:
        yield c


def _name(console) -> str:
    """The session cookie's name: one per port (browsers share cookies across the ports of a host)."""
    return f"swcli_console_{console.host.rsplit(':', 1)[1]}"


def test_a_cookie_of_another_consoles_port_is_not_this_ones(console):
    port = int(console.host.rsplit(":", 1)[1])
    status, _, _ = console.request("GET", "/api/runs", headers={"Cookie": f"swcli_console_{port + 1}={console.token}"},
                                   bearer=False)
    assert status == 401


def test_the_url_line_and_the_loopback_bind(console):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{40,}", console.url)


def test_every_request_needs_the_token(console):
    for path in ("/", "/runs", f"/runs/{RUN_ID}", "/api/runs", f"/api/runs/{RUN_ID}/files/metrics.json",
                 "/api/openapi.json", "/static/console.js", "/api/jobs/x/events"):
        status, _, body = console.request("GET", path, bearer=False)
        assert status == 401, path
        assert RUN_ID.encode() not in body
    status, _, _ = console.request("GET", "/api/runs", headers={"Authorization": "Bearer wrong"}, bearer=False)
    assert status == 401
    status, _, _ = console.request("GET", "/api/runs", headers={"Cookie": f"{_name(console)}=wrong"}, bearer=False)
    assert status == 401
    status, _, _ = console.request("GET", "/api/runs?token=wrong", bearer=False)
    assert status == 401


def test_the_first_url_sets_a_strict_httponly_cookie_and_drops_the_token(console):
    status, headers, _ = console.request("GET", f"/runs?token={console.token}&x=1", bearer=False)
    assert status == 303
    assert headers["location"] == "/runs?x=1"  # the token does not stay in the address bar or the history
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"{_name(console)}={console.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, _, body = console.request("GET", "/api/runs", headers={"Cookie": f"{_name(console)}={console.token}"}, bearer=False)
    assert status == 200 and RUN_ID.encode() in body


def test_the_sign_in_redirect_stays_on_this_site(console):
    status, headers, _ = console.request("GET", f"//evil.example/x?token={console.token}", bearer=False)
    assert status == 303
    assert headers["location"].startswith("/") and not headers["location"].startswith("//")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1", "127.0.0.1:1", "localhost",
                                  "127.0.0.2:{port}", "", "127.0.0.1:{port}.evil.example"])
def test_a_foreign_host_header_is_refused(console, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    port = console.host.rsplit(":", 1)[1]
    status, _, body = console.request("GET", "/api/runs", headers={"Host": host.format(port=port)})
    assert status == 421
    assert RUN_ID.encode() not in body


def test_localhost_names_the_same_console(console):
    port = console.host.rsplit(":", 1)[1]
    status, _, _ = console.request("GET", "/api/runs", headers={"Host": f"localhost:{port}"})
    assert status == 200


def _cookie(console) -> dict:
    return {"Cookie": f"{_name(console)}={console.token}", "Origin": console.base}


def _csrf(console) -> str:
    status, _, page = console.request("GET", "/jobs/new")
    assert status == 200
    found = re.search(rb'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, page[:400]
    return found.group(1).decode()


def test_state_changes_need_origin_and_the_csrf_token(console):
    body = {"model": "nothing", "dataset": "nothing"}
    csrf = _csrf(console)
    cases = [
        ({**_cookie(console)}, 403),  # no CSRF token
        ({**_cookie(console), "X-CSRF-Token": "wrong"}, 403),
        ({**_cookie(console), "X-CSRF-Token": csrf, "Origin": "http://evil.example"}, 403),
        ({**_cookie(console), "X-CSRF-Token": csrf, "Origin": None}, 403),  # a cookie POST without an Origin
        ({**_cookie(console), "X-CSRF-Token": csrf, "Origin": "null"}, 403),
    ]
    for headers, expected in cases:
        status, _, answer = console.request("POST", "/api/jobs", headers=headers, body=body, bearer=False)
        assert status == expected, (headers, answer)
    status, _, answer = console.request("POST", "/api/jobs", headers={**_cookie(console), "X-CSRF-Token": csrf},
                                        body=body, bearer=False)
    assert status == 200, answer  # a job is created (it fails later: no such model)
    status, _, _ = console.request("POST", "/api/jobs", headers={"Origin": "http://evil.example"}, body=body)
    assert status == 403  # a Bearer script still may not claim another origin


def test_no_request_names_a_file(console, swcli_home, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for path in (f"/api/runs/{RUN_ID}/files/..%2f..%2fsecret.txt", f"/api/runs/{RUN_ID}/files/%2e%2e",
                 "/api/runs/..%2f..%2f/files/metrics.json", f"/api/runs/{secret}/files/metrics.json",
                 "/static/..%2f..%2fsecurity.py", "/api/runs/latest", f"/api/runs/{RUN_ID[:12]}"):
        status, _, body = console.request("GET", path)
        assert status in (400, 404), (path, status)
        assert b"top secret" not in body and b"import" not in body
    for model in (str(tmp_path), "../x", "-x", "./m", "~/m", "a/../../b"):
        status, answer = console.json("POST", "/api/jobs", {"model": model, "dataset": "tiny"})
        assert status == 400 and "ref" in answer["error"], (model, answer)


def test_run_text_is_escaped_in_pages_and_charts(console):
    status, _, page = console.request("GET", f"/runs/{RUN_ID}")
    assert status == 200
    assert b"<img src=x" not in page and b"<script>alert" not in page
    assert b"&lt;img src=x onerror=alert(1)&gt;" in page
    status, _, page = console.request("GET", "/runs")
    assert status == 200 and b"<script>alert" not in page


def test_answers_carry_a_strict_policy(console):
    _, headers, _ = console.request("GET", "/runs")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"


def test_a_body_too_large_or_not_json_is_one_line(console):
    status, answer = console.json("POST", "/api/jobs", b"{" * 70000)
    assert status == 400 and "larger" in answer["error"]
    status, answer = console.json("POST", "/api/jobs", b"[1, 2")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = console.json("POST", "/api/jobs", {"model": "a", "dataset": "b", "command": "rm -rf /"})
    assert status == 400 and "unknown field" in answer["error"]


def test_another_host_binding_warns(swcli_home):
    with running_console("--host", "0.0.0.0") as c:
        assert c.url.startswith("http://127.0.0.1:")
        c.process.send_signal(2)
        _, err = c.process.communicate(timeout=15)
    assert b"warning: --host 0.0.0.0" in err


def test_the_console_is_not_imported_by_other_commands():
    code = ("import sys; from builder.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'anyio') or m.startswith('builder.console')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out


def test_the_api_is_documented(console):
    status, schema = console.json("GET", "/api/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.")
    for path in ("/api/runs", "/api/runs/{id}", "/api/runs/{id}/records", "/api/jobs", "/api/jobs/{id}"):
        assert path in schema["paths"], path
    assert "post" in schema["paths"]["/api/jobs"] and "get" in schema["paths"]["/api/jobs"]
    status, _, page = console.request("GET", "/api")
    assert status == 200 and b"/api/runs/{id}/records" in page


def test_a_kept_alive_connection_answers_without_a_delayed_ack(console):
    """TCP_NODELAY on the console's connections: without it each answer after the first on one connection waited
    ~44 ms for the client's delayed ACK (a page of 200 thumbnails took 1.5 s)."""
    import http.client
    import time

    hostname, port = console.host.rsplit(":", 1)
    conn = http.client.HTTPConnection(hostname, int(port), timeout=30)
    times = []
    for _ in range(12):
        start = time.perf_counter()
        conn.request("GET", "/api/jobs", headers={"Authorization": f"Bearer {console.token}"})
        res = conn.getresponse()
        res.read()
        times.append(time.perf_counter() - start)
    conn.close()
    assert sorted(times[1:])[5] < 0.03, times


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_another_users_connection_is_refused_even_with_the_token(console):
    """Browsers send the cookie to every port of 127.0.0.1, so another user's listener there can get the token; the
    console refuses that user's connections (the kernel says who owns the peer socket)."""
    hostname, port = console.host.rsplit(":", 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the other user: nobody, with the token
        try:
            os.setgid(65534)
            os.setuid(65534)
            status, _, body = console.request("GET", "/api/runs")
            os.write(write, f"{status} {body[:200]!r}".encode())
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            os.write(write, f"error {err!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    answer = os.read(read, 4096).decode()
    os.close(read)
    assert answer.startswith("403 ") and "another user (uid 65534)" in answer, answer
    assert RUN_ID not in answer
    status, _, body = console.request("GET", "/api/runs")  # the user's own connections still work
    assert status == 200 and RUN_ID.encode() in body


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
def test_a_browser_request_from_another_site_or_port_is_refused(console, site):
    """A page on another port of 127.0.0.1 is the same site to a browser, which sends the cookie with its requests
    (an <img>, a no-cors fetch): Sec-Fetch-Site tells, and only same-origin or typed addresses are answered."""
    headers = {"Cookie": f"{_name(console)}={console.token}", "Sec-Fetch-Site": site}
    status, _, body = console.request("GET", "/api/runs", headers=headers, bearer=False)
    assert status == 403 and RUN_ID.encode() not in body
    for allowed in ("same-origin", "none"):
        status, _, _ = console.request("GET", "/api/runs", headers={**headers, "Sec-Fetch-Site": allowed}, bearer=False)
        assert status == 200
