"""Which senders a call's media socket takes, without I/O: the rule of media latching.

A call's UDP socket is filtered by the kernel, not in Python: a datagram the kernel drops
never takes room in the socket's queue, so a flood from elsewhere cannot push the phone's
packets out of it. The rule:

* From the start answer, the socket takes only the phone's address (any port): the phone's
  RTP source port is not known yet, but no other host can reach the call.
* The first datagram the stream takes as the call's audio latches the socket to that
  address *and port*.
* When the latched port has sent nothing the stream took for ``relatch_after`` seconds (the
  phone re-created its RTP socket, a NAT rebound it), the socket takes any port of the
  phone's address again, and the next datagram the stream takes latches it anew. A change
  of SSRC from the latched port needs nothing: the stream's own probation decides it.

The driver (:class:`callrec.server.source.PhoneSource`) ``connect()``s the socket to what
:meth:`MediaLatch.target` says whenever a method returns True.
"""

from __future__ import annotations


class MediaLatch:
    """The latching state of one call; see the module docstring."""

    __slots__ = ("_last_port", "changes", "phone_ip", "port", "relatch_after")

    def __init__(self, phone_ip: str, *, relatch_after: float) -> None:
        self.phone_ip = phone_ip
        self.relatch_after = relatch_after
        #: The source port the socket takes; None: any port of the phone's address.
        self.port: int | None = None
        #: How often the call moved to another source port of the phone's address.
        self.changes = 0
        self._last_port: int | None = None

    @property
    def target(self) -> tuple[str, int]:
        """Where the socket is to be connected: port 0 takes every port of the address."""
        return (self.phone_ip, self.port or 0)

    def taken(self, port: int) -> bool:
        """The stream took a datagram from ``port`` as the call's audio; True: latch to it."""
        if self.port is not None or port == 0:
            return False  # latched: the kernel lets nothing else through
        self.port = port
        if self._last_port is not None and self._last_port != port:
            self.changes += 1
        self._last_port = port
        return True

    def check(self, last_taken_at: float | None, now: float) -> bool:
        """Time passes; True: the latched port fell silent, take every port again."""
        if self.port is None or last_taken_at is None:
            return False
        if now - last_taken_at < self.relatch_after:
            return False
        self.port = None
        return True
