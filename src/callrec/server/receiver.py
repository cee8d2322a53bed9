"""Reads every session's UDP socket in batches, a few times per packet interval.

An asyncio datagram transport wakes the event loop and calls back into Python once per
datagram; with one socket per call nearly every wake-up carries a single 20 ms packet, and at
thousands of calls that bookkeeping costs more than the recording itself. Instead the server
polls all its media sockets at once every ``interval`` seconds (one ``epoll`` call answers
which sockets hold data) and reads them in rounds: one datagram from each ready socket per
round, until none is ready. The kernel buffers what arrives in between (each socket has
seconds of buffer), so nothing is lost by waiting a few milliseconds, and a socket read
never fails for lack of data, so no exception is raised per socket.

Arrival times are the time of the batch: packets stay within ``interval`` of when they came,
which is far below what the stream core's reordering and gap timing look at.

A read is also bounded in time (``budget``): when the process is short of CPU the sockets hold
a backlog, and reading all of it in one go (up to ``MAX_ROUNDS`` datagrams per socket, a
second or more at thousands of calls) would keep every start and stop waiting behind it. What
is left waits in the kernel's buffers for one turn of the loop, in which the control
connections and the ticks are served, and the caller reads on (measured: docs/performance.md,
"Stops under load").
"""

from __future__ import annotations

import select
import selectors
import socket
import time
from collections.abc import Callable
from typing import Any

#: Larger than any RTP packet of a phone (60 ms of G.722 is 492 bytes); a longer datagram is
#: cut here and then counted as malformed or foreign by the stream core, never crashes it.
MAX_DATAGRAM = 4096
#: Rounds per read: a socket with a backlog (a stall) gives up to this many datagrams per
#: read, then the loop serves control connections before the next read takes more.
MAX_ROUNDS = 64
#: Datagrams handed on between two looks at the clock (a look costs about as much as one).
CLOCK_EVERY = 128

#: Takes (datagram, source address as recvfrom gives it, time of the batch).
Receive = Callable[[bytes, Any, float], None]


class MediaReceiver:
    """The media sockets of one server process, read together."""

    def __init__(self) -> None:
        self._sockets: dict[int, tuple[socket.socket, Receive]] = {}
        self._poller = _Poller()

    def __len__(self) -> int:
        return len(self._sockets)

    def add(self, sock: socket.socket, receive: Receive) -> None:
        """Read ``sock`` from now on; each datagram goes to ``receive(data, addr, now)``."""
        fd = sock.fileno()
        self._sockets[fd] = (sock, receive)
        self._poller.register(fd)

    def remove(self, sock: socket.socket) -> None:
        """Stop reading ``sock`` (before it is drained and closed by its session)."""
        fd = sock.fileno()
        if self._sockets.pop(fd, None) is not None:
            self._poller.unregister(fd)

    def read(
        self,
        now: float,
        max_rounds: int = MAX_ROUNDS,
        *,
        budget: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> tuple[int, bool]:
        """Read what the sockets hold (at most ``max_rounds`` datagrams each, and for at
        most about ``budget`` seconds of ``clock``); returns how many datagrams were handed
        on and whether the read stopped early, leaving some behind (budget or rounds)."""
        if not self._sockets:
            return 0, False
        poll = self._poller.ready
        sockets = self._sockets
        count = 0
        deadline = None if budget is None else clock() + budget
        next_look = CLOCK_EVERY
        for _ in range(max_rounds):
            ready = poll()
            if not ready:
                return count, False
            for fd, _events in ready:
                entry = sockets.get(fd)
                if entry is None:
                    continue
                try:
                    data, addr = entry[0].recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    # A pending ICMP error on the socket: reading it clears it.
                    continue
                entry[1](data, addr, now)
                count += 1
                if count >= next_look and deadline is not None:
                    # epoll lists ready sockets oldest first and puts a read one back at
                    # the end, so the next read starts where this one left off.
                    if clock() >= deadline:
                        return count, True
                    next_look = count + CLOCK_EVERY
        return count, True

    def close(self) -> None:
        self._sockets.clear()
        self._poller.close()


class _Poller:
    """Which registered descriptors can be read now, without waiting: ``epoll`` where
    there is one (its answer costs the ready descriptors, not all of them), else the best
    selector of the platform."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._selector: selectors.BaseSelector | None = None
        if hasattr(select, "epoll"):
            self._epoll = select.epoll()
        else:  # pragma: no cover - not Linux
            self._selector = selectors.DefaultSelector()

    def register(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:  # pragma: no cover - not Linux
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)

    def unregister(self, fd: int) -> None:
        try:
            if self._epoll is not None:
                self._epoll.unregister(fd)
            else:  # pragma: no cover - not Linux
                assert self._selector is not None
                self._selector.unregister(fd)
        except (OSError, KeyError, ValueError):
            pass  # already closed: the kernel forgot it

    def ready(self) -> list[tuple[int, int]]:
        """(descriptor, events) of each readable one."""
        if self._epoll is not None:
            return self._epoll.poll(0)
        assert self._selector is not None  # pragma: no cover - not Linux
        return [(key.fd, events) for key, events in self._selector.select(0)]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        if self._selector is not None:  # pragma: no cover - not Linux
            self._selector.close()
