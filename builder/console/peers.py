"""Who is on the other end of a loopback connection: the uid that owns the peer's socket, from ``/proc/net/tcp``.

Browsers send a host's cookies to every port of that host, so the console's session cookie also reaches any other
program listening on 127.0.0.1 (docs/console.md#security). Another user of the machine who gets the user's browser
to open such a listener has the token. What that user cannot do is connect as the user: the kernel records each
socket's owner, and the console refuses a loopback connection whose peer socket another uid owns.
"""

from __future__ import annotations

import ipaddress
import os
import socket

MAX_TABLE = 16 << 20  # bytes read of one /proc/net table (a machine with ~100k sockets)


def _address(text: str) -> tuple[str, int] | None:
    """``0100007F:1F90`` (IPv4) or the 32-digit IPv6 form, as the kernel prints it, -> (ip, port)."""
    host, _, port = text.partition(":")
    try:
        raw = bytes.fromhex(host)
        # the kernel prints each 32-bit word in host order (little-endian here)
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        ip = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        return ip, int(port, 16)
    except (ValueError, OSError):
        return None


def _ip(text: str):
    """The address, an IPv4-mapped IPv6 one as its IPv4 (a dual-stack socket names its IPv4 peers so); ValueError."""
    addr = ipaddress.ip_address(text)
    return getattr(addr, "ipv4_mapped", None) or addr


def _same(a: str, b: str) -> bool:
    try:
        return _ip(a) == _ip(b)
    except ValueError:
        return False


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the socket at ``client`` connected to ``server``; None when the tables do not say (no /proc,
    or the connection is already gone)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as fh:
                lines = fh.read(MAX_TABLE).decode("ascii", "replace").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 8:
                continue
            local, remote = _address(fields[1]), _address(fields[2])
            if local and remote and local[1] == client[1] and remote[1] == server[1] \
                    and _same(local[0], client[0]) and _same(remote[0], server[0]):
                try:
                    return int(fields[7])
                except ValueError:
                    return None
    return None


def foreign_peer(client: tuple | None, server: tuple | None) -> int | None:
    """The uid of a loopback peer that is not this process's user (root's connections are root's), else None."""
    if not client or not server:
        return None
    client, server = client[:2], server[:2]  # IPv6 addresses come with flow info and scope
    try:
        if not _ip(client[0]).is_loopback:
            return None
    except ValueError:
        return None
    uid = peer_uid((client[0], int(client[1])), (server[0], int(server[1])))
    return uid if uid is not None and uid != os.getuid() else None


REFUSAL = (b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
           b"content-length: %d\r\n\r\n%s")


def guarded_protocol():
    """uvicorn's h11 protocol, checking each new connection's peer before it reads a byte: a loopback connection
    from another user's socket is answered 403 and closed (one kernel query per connection, not per request)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class PeerCheckedH11(H11Protocol):
        def connection_made(self, transport) -> None:
            other = foreign_peer(transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
            if other is not None:
                text = f"the connection comes from a program of another user (uid {other}); the console is its user's\n"
                transport.write(REFUSAL % (len(text.encode()), text.encode()))
                transport.close()
                return
            super().connection_made(transport)

    return PeerCheckedH11
