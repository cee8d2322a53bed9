"""Ports on loopback: free ones for a server to take, and who listens on one now."""

from __future__ import annotations

import socket

import pytest


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p with p and p+1 free for UDP and TCP (baresip puts SIP/TLS on p+1)."""
    for _ in range(50):
        port = free_udp_port()
        if port >= 65535:
            continue
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair on loopback")


def _sockets(table: str, port: int, state: str | None) -> set[int]:
    """Inodes of the IPv4 sockets in ``/proc/net/<table>`` bound to ``port`` (in ``state``)."""
    inodes = set()
    with open(f"/proc/net/{table}") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and state in (None, parts[3]):
                inodes.add(int(parts[9]))
    return inodes


def tcp_listeners(port: int) -> set[int]:
    """Inodes of the sockets listening on TCP ``port`` (one per process with SO_REUSEPORT)."""
    return _sockets("tcp", port, "0A")


def udp_bound(port: int) -> bool:
    """Some process has a UDP socket bound to ``port`` (looked up, never probed by binding)."""
    return bool(_sockets("udp", port, None))


def ipv6_loopback() -> bool:
    """Whether this machine has ``::1`` (containers often do not)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


#: For tests of IPv6 peers: skipped, saying why, on a machine without ``::1``.
needs_ipv6 = pytest.mark.skipif(
    not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)"
)


def free_udp_block(size: int) -> int:
    """The first (even) port of ``size`` consecutive UDP ports on loopback, all free a moment
    ago, below the kernel's ephemeral range (32768-) where other tests' sockets land."""
    step = size + size % 2
    for low in range(30000, 32768 - size, step):
        socks: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return low
    raise AssertionError(f"no free block of {size} UDP ports")


def udp_receivers(count: int, *, buffer: int = 1 << 20) -> list[socket.socket]:
    """``count`` non-blocking UDP sockets on 127.0.0.1 with ``buffer`` bytes of receive
    buffer, for a test to send to and read back (the caller closes them)."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    return socks
