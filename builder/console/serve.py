"""`swcli console`: bind, print the one URL line, serve until Ctrl-C.

The socket is bound before the line is printed, so the URL works the moment it is shown (``--port 0``, the default,
takes a free port). Binding anything but a loopback address warns: every user who can reach that address can then
try the token.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable

from builder.errors import UsageError
from builder.store import Store


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 0
    registries: list[str] = field(default_factory=list)
    ca_cert: str | None = None
    open_browser: bool = False


def _bind(host: str, port: int) -> socket.socket:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"--host must be an IP address (127.0.0.1, ::1, 0.0.0.0), got '{host[:80]}'") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {port}")
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then, and without it every answer after
    # the first on a kept-alive connection waited ~44 ms for the client's delayed ACK (200 thumbnails: 1.5 s, not 0.2)
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there: {err.strerror or err}") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def url_host(host: str) -> str:
    ip = ipaddress.ip_address(host)
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{ip.compressed}]" if ip.version == 6 else str(ip)


def serve(options: ServeOptions, *, say: Callable[[str], None], warn: Callable[[str], None],
          store: Store | None = None) -> None:
    """Serve the console until interrupted; ``say`` gets the URL line, ``warn`` a non-loopback bind."""
    import uvicorn

    from builder.console.app import build_app
    from builder.console.registry_view import RegistryView
    from builder.console.security import Secrets
    from builder.console.state import Console
    from builder.runs.attach import default_client

    store = store or Store()
    client_for = default_client(options.ca_cert)
    views = [RegistryView(target, client_for) for target in options.registries]
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    if not ipaddress.ip_address(options.host).is_loopback:
        warn(f"--host {options.host}: the console is reachable from other machines; anyone who gets the URL's token "
             "can start jobs as you")
    console = Console(store, Secrets(), client_for=client_for, registries=views)
    url = f"http://{url_host(options.host)}:{port}/?token={console.secrets.token}"
    from builder.console.peers import guarded_protocol

    config = uvicorn.Config(build_app(console, port), http=guarded_protocol(), log_level="warning", access_log=False,
                            lifespan="off", server_header=False, date_header=False, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    import threading

    from builder.console.pages import warm

    threading.Thread(target=warm, args=(console,), name="console-warm", daemon=True).start()
    say(f"console: {url}")
    if options.open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.run(sockets=[sock])
    finally:
        console.jobs.close()
        sock.close()
