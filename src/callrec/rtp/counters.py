"""What became of a recorded stream's packets: the one counters type of callrec.

The stream core increments these in its hot path (a mutable, slotted dataclass: an attribute
add per packet); the engine takes a :meth:`StreamCounters.copy` when it checkpoints or finishes
a recording, and the catalogue stores that copy, checking it with :meth:`StreamCounters.check`.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Final


@dataclass(slots=True)
class StreamCounters:
    """Packet counters of one recording. ``received`` counts every datagram on the port; the
    others say what became of some of them, or (``lost``) what never came."""

    #: Every datagram that arrived on the recording's port.
    received: int = 0
    #: Packets that never came (gaps in the sequence numbers).
    lost: int = 0
    #: Packets that came after their place in the file was written, dropped.
    late: int = 0
    #: Copies of packets already seen, dropped.
    duplicate: int = 0
    #: From another address, or a stray SSRC that never took over.
    foreign: int = 0
    #: Datagrams that are not usable RTP.
    malformed: int = 0
    #: RTCP, telephone-event, comfort noise, other payload types.
    other: int = 0
    #: How often the stream moved to a new SSRC (hold/resume, transfer).
    ssrc_changes: int = 0
    #: Datagrams the kernel dropped before we read them (the socket's queue was full).
    kernel_dropped: int = 0
    #: How often the RTP clock was found to differ from the codec's nominal one (a G.722
    #: device stamping 16 kHz ticks), and the stream re-timed by what it sends.
    clock_changes: int = 0
    #: How often the call's media latch moved to another source port of the phone's address
    #: (a NAT rebinding, a phone re-creating its RTP socket).
    latch_changes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def copy(self) -> StreamCounters:
        """A snapshot that later packets do not change."""
        return StreamCounters(*astuple(self))

    def __add__(self, other: StreamCounters) -> StreamCounters:
        """Both counted together (the two directions of a SIP call in one row)."""
        return StreamCounters(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def check(self) -> None:
        """Raise ValueError, naming the counter, unless every counter is an integer >= 0."""
        for name in COUNTER_NAMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"counter {name} must be an integer >= 0, got {value!r}")


#: The counters' names, in field order.
COUNTER_NAMES: Final = tuple(f.name for f in fields(StreamCounters))
