"""UDP ports for sessions: one per session, chosen at random in a configured range, never
one that carried a call lately.

A phone streams to the port its start answer named, and some phones stream on after the call
(or the server) that answered is gone. A port handed straight back to a new call would then
record that old conversation as the new one. So the choice is random (a guessed port is as
good as any) and skips ports resting after their last call (:mod:`callrec.engine.portmemory`,
which remembers them across restarts and crashes); only when every free port rests is the one
that rested longest handed out, and that is logged.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
from collections.abc import Callable

from callrec.engine.portmemory import PortMemory
from callrec.exceptions import ResourceError
from callrec.net import new_socket, plain_ip, size_receive_buffer

logger = logging.getLogger(__name__)

#: Each call gets its own socket, so a scheduling hiccup is absorbed by the kernel: a
#: receive buffer that holds a burst (a phone flushing its jitter buffer, ``callrec phone
#: --fast``: 1,000 packets of G.711 filled 256 KiB after 630, and were all kept with 1 MiB).
#: The ``media_rcvbuf`` setting; ``net.core.rmem_max`` caps it unless the server is root.
RCVBUF_BYTES = 1024 * 1024
#: Random picks tried before the range is scanned in full (it is then nearly all taken).
RANDOM_TRIES = 32


class PortRange:
    """Hands out UDP sockets bound to free ports of ``[low, high]`` (0..0: any port); every
    port handed out counts in :attr:`in_use` until :meth:`release`, then rests as ``memory``
    says (without one, it may be handed out again at once)."""

    def __init__(
        self,
        host: str,
        low: int,
        high: int,
        *,
        memory: PortMemory | None = None,
        rng: random.Random | None = None,
        rcvbuf: int = RCVBUF_BYTES,
    ) -> None:
        self.host = host
        self.low = low
        self.high = high
        self.memory = memory if memory is not None else PortMemory(None, 0)
        self._rng = rng if rng is not None else random.SystemRandom()
        #: Receive buffer asked for on each socket, in bytes.
        self.rcvbuf = rcvbuf
        self._warned_short = False
        self._in_use: set[int] = set()
        self._warned_resting = False

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def bind(self, host: str | None = None) -> socket.socket:
        """A bound non-blocking UDP socket (on ``host`` if given, else the range's host);
        ResourceError('busy') when none is free."""
        host = self.host if host is None else host
        if self.low == 0:
            # Any port the kernel picks; counted all the same, so `in_use` stays true.
            any_port = self._try(0, host) or self._exhausted()
            self._take(any_port.getsockname()[1])
            return any_port
        return self._choose(range(self.low, self.high + 1), lambda p: (p,), host)[0]

    def _take(self, *ports: int) -> None:
        for port in ports:
            self._in_use.add(port)
            self.memory.hold(port)

    def _choose(
        self, firsts: range, group: Callable[[int], tuple[int, ...]], host: str
    ) -> tuple[socket.socket, ...]:
        """Sockets on the ports ``group(first)`` for a ``first`` none of whose ports is in
        use or resting: random picks first, then a scan; failing that, the group that rested
        longest."""
        memory = self.memory
        in_use = self._in_use

        def free(ports: tuple[int, ...]) -> bool:
            return all(self.low <= p <= self.high and p not in in_use for p in ports)

        for _ in range(min(RANDOM_TRIES, len(firsts))):
            ports = group(self._rng.choice(firsts))
            if free(ports) and not any(memory.resting(p) for p in ports):
                socks = self._try_all(ports, host)
                if socks is not None:
                    return socks
        start = self._rng.randrange(len(firsts))
        resting: list[tuple[int, ...]] = []
        for i in range(len(firsts)):
            ports = group(firsts[(start + i) % len(firsts)])
            if not free(ports):
                continue
            if any(memory.resting(p) for p in ports):
                resting.append(ports)
                continue
            socks = self._try_all(ports, host)
            if socks is not None:
                return socks
        resting.sort(key=lambda ports: max(memory.released_at(p) for p in ports))
        for ports in resting:
            socks = self._try_all(ports, host)
            if socks is not None:
                if not self._warned_resting:
                    self._warned_resting = True
                    logger.warning(
                        "every free media port in %d-%d rested less than %.0f s since its "
                        "last call; handing out the one that rested longest (a larger "
                        "media port range avoids this)",
                        self.low,
                        self.high,
                        memory.quarantine,
                    )
                return socks
        what = "UDP port" if len(group(firsts[0])) == 1 else "UDP port pair"
        raise ResourceError(
            f"no free {what} in {self.low}-{self.high} ({self.in_use} in use)", reason="busy"
        )

    def _try_all(self, ports: tuple[int, ...], host: str) -> tuple[socket.socket, ...] | None:
        socks: list[socket.socket] = []
        for port in ports:
            sock = self._try(port, host)
            if sock is None:
                for taken in socks:
                    taken.close()
                return None
            socks.append(sock)
        self._take(*ports)
        return tuple(socks)

    def release(self, port: int) -> None:
        if port in self._in_use:
            self._in_use.discard(port)
            self.memory.release(port)

    def bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """An RTP socket on an even port and its RTCP twin on the next one (RFC 3550 11),
        for relays whose peers send RTCP to port + 1; ResourceError('busy') when none."""
        if self.low == 0:
            for _ in range(100):
                rtp = self._try(0, self.host)
                if rtp is None:
                    break
                port = rtp.getsockname()[1]
                rtcp = self._try(port + 1, self.host) if port % 2 == 0 and port < 65535 else None
                if rtcp is not None:
                    self._take(port, port + 1)
                    return rtp, rtcp
                rtp.close()
            raise ResourceError("no free even/odd UDP port pair", reason="busy")
        evens = range(self.low + self.low % 2, self.high, 2)
        if not evens:
            raise ResourceError(f"no UDP port pair in {self.low}-{self.high}", reason="busy")
        rtp, rtcp = self._choose(evens, lambda p: (p, p + 1), self.host)
        return rtp, rtcp

    def _try(self, port: int, host: str) -> socket.socket | None:
        # Dual stack for "::": an IPv4 phone's RTP reaches a socket bound there.
        sock = new_socket(host, socket.SOCK_DGRAM)
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
            sock.bind((host, port))
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
