"""UDP ports for sessions: one per session, probed upward through a configured range."""

from __future__ import annotations

import errno
import socket

from callrec.exceptions import ResourceError

#: Each call gets its own socket, so a scheduling hiccup is absorbed by the kernel: ask for
#: a receive buffer of about ten seconds of a G.722 call.
RCVBUF_BYTES = 256 * 1024


class PortRange:
    """Hands out UDP sockets bound to free ports of ``[low, high]`` (0..0: any port); every
    port handed out counts in :attr:`in_use` until :meth:`release`."""

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.low = low
        self.high = high
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
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
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
        out.append((data, str(addr[0])))
    return out
