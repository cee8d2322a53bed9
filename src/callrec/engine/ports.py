"""UDP ports for sessions: one per session, probed upward through a configured range."""

from __future__ import annotations

import errno
import logging
import socket

from callrec.exceptions import ResourceError
from callrec.net import new_socket, plain_ip, size_receive_buffer

logger = logging.getLogger(__name__)

#: Each call gets its own socket, so a scheduling hiccup is absorbed by the kernel: a
#: receive buffer that holds a burst (a phone flushing its jitter buffer, ``callrec phone
#: --fast``: 1,000 packets of G.711 filled 256 KiB after 630, and were all kept with 1 MiB).
#: The ``media_rcvbuf`` setting; ``net.core.rmem_max`` caps it unless the server is root.
RCVBUF_BYTES = 1024 * 1024


class PortRange:
    """Hands out UDP sockets bound to free ports of ``[low, high]`` (0..0: any port); every
    port handed out counts in :attr:`in_use` until :meth:`release`."""

    def __init__(self, host: str, low: int, high: int, *, rcvbuf: int = RCVBUF_BYTES) -> None:
        self.host = host
        self.low = low
        self.high = high
        #: Receive buffer asked for on each socket, in bytes.
        self.rcvbuf = rcvbuf
        self._warned_short = False
        self._cursor = low
        self._in_use: set[int] = set()

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def bind(self) -> socket.socket:
        """A bound non-blocking UDP socket; ResourceError('busy') when none is free."""
        if self.low == 0:
            # Any port the kernel picks; counted all the same, so `in_use` stays true.
            any_port = self._try(0) or self._exhausted()
            self._in_use.add(any_port.getsockname()[1])
            return any_port
        for _ in range(self.size):
            port = self._cursor
            self._cursor = self.low if port >= self.high else port + 1
            if port in self._in_use:
                continue
            sock = self._try(port)
            if sock is not None:
                self._in_use.add(port)
                return sock
        return self._exhausted()

    def release(self, port: int) -> None:
        self._in_use.discard(port)

    def bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """An RTP socket on an even port and its RTCP twin on the next one (RFC 3550 11),
        for relays whose peers send RTCP to port + 1; ResourceError('busy') when none."""
        if self.low == 0:
            for _ in range(100):
                rtp = self._try(0)
                if rtp is None:
                    break
                port = rtp.getsockname()[1]
                rtcp = self._try(port + 1) if port % 2 == 0 and port < 65535 else None
                if rtcp is not None:
                    self._in_use.update((port, port + 1))
                    return rtp, rtcp
                rtp.close()
            raise ResourceError("no free even/odd UDP port pair", reason="busy")
        start = self.low + self.low % 2
        for _ in range(self.size // 2 + 1):
            port = self._cursor + self._cursor % 2
            if port + 1 > self.high:
                port = start
            self._cursor = port + 2
            if port in self._in_use or port + 1 in self._in_use or port + 1 > self.high:
                continue
            rtp = self._try(port)
            if rtp is None:
                continue
            rtcp = self._try(port + 1)
            if rtcp is None:
                rtp.close()
                continue
            self._in_use.update((port, port + 1))
            return rtp, rtcp
        raise ResourceError(
            f"no free UDP port pair in {self.low}-{self.high} ({self.in_use} in use)", reason="busy"
        )

    def _try(self, port: int) -> socket.socket | None:
        # Dual stack for "::": an IPv4 phone's RTP reaches a socket bound there.
        sock = new_socket(self.host, socket.SOCK_DGRAM)
        try:
            granted = size_receive_buffer(sock, self.rcvbuf)
            if granted.short and not self._warned_short:
                self._warned_short = True
                logger.warning(
                    "media sockets get a %d-byte receive buffer, not the %d of media_rcvbuf: "
                    "raise net.core.rmem_max (packaging/systemd/sysctl.conf) or bursts are dropped",
                    granted.granted,
                    self.rcvbuf,
                )
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            raise
        sock.setblocking(False)
        return sock

    def _exhausted(self) -> socket.socket:
        raise ResourceError(
            f"no free UDP port in {self.low}-{self.high} ({self.in_use} in use)", reason="busy"
        )


def drain_socket(sock: socket.socket, limit: int = 100_000) -> list[tuple[bytes, str]]:
    """Datagrams already queued in the kernel for ``sock`` (non-blocking), oldest first."""
    out: list[tuple[bytes, str]] = []
    for _ in range(limit):
        try:
            data, addr = sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        out.append((data, plain_ip(str(addr[0]))))
    return out
