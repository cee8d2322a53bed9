"""The media relay of SIP calls: an RTP/RTCP port pair facing each side, on the event loop.

Each call's SDP is rewritten to our ports (:mod:`callrec.sip.core`), so both RTP directions
pass through here: what the port facing the caller receives is sent on to the callee and the
other way round, latching onto the address packets really come from (NAT). While the call is
being recorded, each RTP packet also goes to the recording's source
(:class:`~callrec.sip.recording.SipSource`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from callrec.engine import PortRange
from callrec.exceptions import ResourceError
from callrec.net import plain_ip, sendable
from callrec.sip.events import MediaUpdate
from callrec.sip.recorder import CALLEE, CALLER

if TYPE_CHECKING:
    from callrec.sip.recording import SipSource

logger = logging.getLogger(__name__)

#: Socket kinds of a relay side: RTP on an even port, RTCP on the next one.
RTP: Final = 0
RTCP: Final = 1


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the call's reference in every line about it."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"[{self.extra['call']}] {msg}", kwargs


@dataclass(eq=False, slots=True, kw_only=True)
class CallMedia:
    """The relay of one call: an RTP/RTCP port pair facing each side, and the recording."""

    ref: str
    #: The RTP port facing each side (CALLER, CALLEE); RTCP is on the port after it.
    ports: tuple[int, int]
    #: [side][RTP or RTCP]
    sockets: tuple[tuple[socket.socket, socket.socket], tuple[socket.socket, socket.socket]]
    log: logging.LoggerAdapter[logging.Logger]
    transports: list[list[asyncio.DatagramTransport | None]] = field(
        default_factory=lambda: [[None, None], [None, None]]
    )
    #: [side][kind]: where that side receives: from its SDP, or latched from its packets.
    targets: list[list[tuple[str, int] | None]] = field(
        default_factory=lambda: [[None, None], [None, None]]
    )
    sdp_ips: list[str | None] = field(default_factory=lambda: [None, None])
    signalling_ips: list[str] = field(default_factory=lambda: ["", ""])
    codec: str | None = None
    payload_type: int | None = None
    #: The recording's source while the call is being recorded; it gets every RTP packet.
    recording: SipSource | None = None
    relayed: list[int] = field(default_factory=lambda: [0, 0])
    foreign: list[int] = field(default_factory=lambda: [0, 0])
    closed: bool = False

    def update(self, event: MediaUpdate) -> None:
        for side, announced, sig in (
            (CALLER, event.caller, event.caller_signalling_ip),
            (CALLEE, event.callee, event.callee_signalling_ip),
        ):
            self.signalling_ips[side] = sig
            self.sdp_ips[side] = announced[0] if announced else None
            self.targets[side][RTP] = announced
            # RTCP goes to the port after RTP (RFC 3550 11; a=rtcp is not passed on).
            self.targets[side][RTCP] = (announced[0], announced[1] + 1) if announced else None
        if event.codec is not None:
            self.codec = event.codec
            self.payload_type = event.payload_type

    def received(
        self, side: int, kind: int, data: bytes, addr: tuple[str, int], now: float
    ) -> None:
        """A datagram on the ``kind`` port facing ``side``, from ``addr``."""
        ip = addr[0]
        if ip != self.sdp_ips[side] and ip != self.signalling_ips[side]:
            self.foreign[side] += 1
            return
        if ip != self.sdp_ips[side] or self.targets[side][kind] is None:
            # Behind NAT the SDP names a private address: answer where the packets come from.
            self.targets[side][kind] = addr
        other = 1 - side
        transport, target = self.transports[other][kind], self.targets[other][kind]
        if transport is not None and target is not None:
            transport.sendto(data, sendable(self.sockets[other][kind].family, target))
            if kind == RTP:
                self.relayed[side] += 1
        recording = self.recording
        if kind == RTP and recording is not None:
            recording.receive(side, data, now)


class _RelayProtocol(asyncio.DatagramProtocol):
    def __init__(
        self, media: CallMedia, side: int, kind: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._media = media
        self._side = side
        self._kind = kind
        self._time = loop.time

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        # Dual stack ("::"): an IPv4 phone's ::ffff:a.b.c.d is the a.b.c.d of its SDP.
        self._media.received(
            self._side, self._kind, data, (plain_ip(str(addr[0])), int(addr[1])), self._time()
        )

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that is not listening yet: nothing to do.
        logger.debug("UDP error on relay port: %s", exc)


class Relays:
    """The relays of the SIP calls of one server, on ports of the shared range."""

    def __init__(self, ports: PortRange) -> None:
        self.ports = ports
        self.calls: dict[str, CallMedia] = {}

    def allocate(self, call: str) -> CallMedia:
        """An RTP/RTCP port pair facing each side of a new call; ResourceError('busy')."""
        caller = self.ports.bind_pair()
        try:
            callee = self.ports.bind_pair()
        except ResourceError:
            for sock in caller:
                self.ports.release(int(sock.getsockname()[1]))
                sock.close()
            raise
        media = CallMedia(
            ref=call,
            ports=(int(caller[0].getsockname()[1]), int(callee[0].getsockname()[1])),
            sockets=(caller, callee),
            log=CallLog(logger, {"call": call}),
        )
        self.calls[call] = media
        return media

    async def open(self, media: CallMedia) -> None:
        """Start relaying (the sockets become datagram transports)."""
        loop = asyncio.get_running_loop()
        for side in (CALLER, CALLEE):
            for kind in (RTP, RTCP):
                if media.closed:
                    return
                transport, _ = await loop.create_datagram_endpoint(
                    lambda side=side, kind=kind: _RelayProtocol(media, side, kind, loop),  # type: ignore[misc]
                    sock=media.sockets[side][kind],
                )
                if media.closed:
                    transport.close()
                    return
                media.transports[side][kind] = transport

    def close(self, media: CallMedia) -> None:
        """Stop relaying and give the ports back."""
        if media.closed:
            return
        media.closed = True
        for side in (CALLER, CALLEE):
            for kind in (RTP, RTCP):
                transport = media.transports[side][kind]
                if transport is not None:
                    transport.close()
                else:
                    media.sockets[side][kind].close()
                self.ports.release(media.ports[side] + kind)
        self.calls.pop(media.ref, None)
        media.log.info(
            "relay closed: %d packets caller->callee, %d callee->caller, %d foreign",
            media.relayed[CALLER],
            media.relayed[CALLEE],
            sum(media.foreign),
        )
