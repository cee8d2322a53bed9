"""Sockets for callrec's listeners: dual stack for ``::``, a receive buffer sized for a burst,
and the count of datagrams the kernel dropped because that buffer was full.

A UDP socket whose queue is full drops what arrives, silently: the stream sees no gap when
the drops are at the end of a call (``callrec phone --fast`` sent 1,000 packets into a
256 KiB buffer and 630 were recorded, none counted lost). The kernel counts those drops per
socket; :func:`kernel_drops` reads the count with ``SO_MEMINFO`` (Linux), which needs no
ancillary data on every ``recvfrom`` as ``SO_RXQ_OVFL`` would.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from callrec.net.addresses import is_ipv6

#: ``SO_MEMINFO`` (Linux >= 3.10; the socket module has no name for it): the socket's memory
#: counters as a u32 array, ``SK_MEMINFO_DROPS`` (index 8) the datagrams dropped on it.
SO_MEMINFO: Final = 55
SK_MEMINFO_DROPS: Final = 8
_MEMINFO = struct.Struct(f"={SK_MEMINFO_DROPS + 1}I")
#: ``SO_RCVBUFFORCE`` (Linux): like SO_RCVBUF, past ``net.core.rmem_max``, for root
#: (CAP_NET_ADMIN).
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)
_LINUX = sys.platform.startswith("linux")


def new_socket(host: str, kind: socket.SocketKind = socket.SOCK_DGRAM) -> socket.socket:
    """A socket of the family ``host`` needs: IPv6 for an IPv6 address, dual stack
    (``IPV6_V6ONLY`` off, whatever ``net.ipv6.bindv6only`` says) for ``::`` so that IPv4
    peers reach it too; IPv4 otherwise. Not bound."""
    if not is_ipv6(host):
        return socket.socket(socket.AF_INET, kind)
    sock = socket.socket(socket.AF_INET6, kind)
    if host == "::":
        # A platform without dual stack keeps an IPv6-only socket.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped on ``sock`` since it was made (its queue was full);
    0 where the platform does not say, and for a closed socket."""
    if not _LINUX or sock.fileno() < 0:
        return 0
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    except OSError:
        return 0
    if len(raw) < _MEMINFO.size:
        return 0
    return int(_MEMINFO.unpack_from(raw)[SK_MEMINFO_DROPS])


@dataclass(frozen=True, slots=True)
class ReceiveBuffer:
    """What a receive buffer request came to."""

    #: Bytes asked for.
    requested: int
    #: Bytes the kernel reports (Linux doubles the request for its bookkeeping, and caps a
    #: plain SO_RCVBUF at ``net.core.rmem_max``).
    granted: int
    #: True when SO_RCVBUFFORCE (root) set it past ``net.core.rmem_max``.
    forced: bool

    @property
    def short(self) -> bool:
        """True when the kernel gave less than asked (``net.core.rmem_max`` is lower)."""
        return self.granted < self.requested


def size_receive_buffer(sock: socket.socket, size: int) -> ReceiveBuffer:
    """Ask for a receive buffer of ``size`` bytes: SO_RCVBUFFORCE where allowed (root), else
    SO_RCVBUF, which the kernel caps at ``net.core.rmem_max``."""
    forced = False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        forced = True
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return ReceiveBuffer(requested=size, granted=granted, forced=forced)


class DropCounter:
    """Datagrams the kernel dropped on some sockets since this counter was made: a
    recording that uses sockets older than itself (a SIP call's relay, recorded segment by
    segment). A socket closed meanwhile keeps the count last read from it."""

    __slots__ = ("_base", "_last", "_sockets")

    def __init__(self, sockets: Sequence[socket.socket]) -> None:
        self._sockets = tuple(sockets)
        self._last = [kernel_drops(s) for s in self._sockets]
        self._base = sum(self._last)

    def count(self) -> int:
        for i, sock in enumerate(self._sockets):
            if sock.fileno() >= 0:
                self._last[i] = kernel_drops(sock)
        return sum(self._last) - self._base
