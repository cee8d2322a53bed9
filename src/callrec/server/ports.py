"""UDP ports for sessions: one per session, probed upward through a configured range."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from callrec.exceptions import ResourceError

#: Each call gets its own socket, so a scheduling hiccup is absorbed by the kernel: ask for
#: a receive buffer of about ten seconds of a G.722 call.
RCVBUF_BYTES = 256 * 1024


class PortRange:
    """Hands out UDP sockets bound to free ports of ``[low, high]`` (0..0: any port)."""

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
            return self._try(0) or self._exhausted()
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


async def open_endpoint(
    ports: PortRange,
    protocol_factory: Callable[[], asyncio.DatagramProtocol],
) -> tuple[asyncio.DatagramTransport, int]:
    sock = ports.bind()
    port = sock.getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(protocol_factory, sock=sock)
    except BaseException:
        sock.close()
        ports.release(port)
        raise
    return transport, port
