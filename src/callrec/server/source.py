"""A phone session as a media source: RTP in on its own UDP port, decoded PCM out.

The socket is read in batches with every other session's by
:class:`~callrec.server.receiver.MediaReceiver`, which hands each datagram to the session's
:class:`~callrec.rtp.stream.MediaStream`; the engine pumps the source every tick and drains it
at the end, and this module turns what the stream released into PCM. It also applies the
media latch (:mod:`callrec.rtp.latch`): the socket is ``connect()``ed to the phone so the
kernel drops every other sender before it takes room in the socket's queue.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from callrec.codecs import Codec
from callrec.codecs.base import PCM_SAMPLE_WIDTH, Decoder
from callrec.engine.ports import PortRange, drain_socket
from callrec.net import kernel_drops, plain_ip, sendable
from callrec.rtp.counters import StreamCounters
from callrec.rtp.latch import MediaLatch
from callrec.rtp.stream import MediaStream, Piece
from callrec.server.receiver import MediaReceiver

logger = logging.getLogger(__name__)


class PhoneSource:
    """One phone session's audio; see the module docstring."""

    # Thousands are alive at once: no per-instance dict.
    __slots__ = (
        "_latch",
        "_pieces",
        "_port",
        "_ports",
        "_reading",
        "_receiver",
        "_sock",
        "codec",
        "decoder",
        "on_close",
        "reading_since",
        "stream",
    )

    def __init__(
        self,
        *,
        codec: Codec,
        stream: MediaStream,
        sock: socket.socket,
        ports: PortRange,
        receiver: MediaReceiver,
        latch: MediaLatch | None = None,
    ) -> None:
        self.codec = codec
        self.stream = stream
        self.decoder: Decoder = codec.decoder()
        self._sock: socket.socket | None = sock
        self._port: int = sock.getsockname()[1]
        self._ports = ports
        self._receiver = receiver
        #: Called when the source is closed: its front end forgets the session.
        self.on_close: Callable[[], None] = _nothing
        self._pieces: list[Piece] = []
        self._reading = False
        #: When the session was answered (the loop's clock): the RTP timeout's start.
        self.reading_since: float | None = None
        self._latch = latch
        if latch is not None:
            self._connect(latch.target)  # the phone's address only, from before the answer

    @property
    def latch(self) -> MediaLatch | None:
        return self._latch

    @property
    def media_port(self) -> int:
        return self._port

    def start_reading(self) -> None:
        """From now on the receiver hands this session's datagrams to its stream."""
        if self._sock is not None and not self._reading:
            self._receiver.add(self._sock, self._receive)
            self._reading = True

    def _receive(self, data: bytes, addr: Any, now: float) -> None:
        latch = self._latch
        stream = self.stream
        # On a dual-stack socket an IPv4 phone's datagrams come from ::ffff:a.b.c.d.
        ip = plain_ip(addr[0])
        if latch is None or latch.port is not None:
            # Latched (or not filtering): whatever the kernel let through is the phone's.
            stream.receive(data, ip, now)
            return
        before = stream.accepted
        stream.receive(data, ip, now)
        if stream.accepted != before and latch.taken(addr[1]):
            self._connect(latch.target)
            if latch.changes != stream.counters.latch_changes:
                stream.counters.latch_changes = latch.changes
                logger.warning(
                    "media of port %d now comes from %s:%d (the phone's source port changed)",
                    self._port,
                    *latch.target,
                )

    def check_latch(self, now: float) -> None:
        """Time passes: a latched port silent for long enough opens the phone's address."""
        latch = self._latch
        if latch is not None and latch.check(self.stream.last_audio_at, now):
            self._connect(latch.target)

    def _connect(self, target: tuple[str, int]) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.connect(sendable(sock.family, target))
        except OSError as exc:
            # Filtering is a protection, not a condition of recording: go on unfiltered.
            logger.warning("media latch on port %d failed (%s); not filtering", self._port, exc)
            self._latch = None

    def idle_since(self) -> float | None:
        """Since when no audio came (the last packet, or the start); None: not reading."""
        last = self.stream.last_audio_at
        return last if last is not None else self.reading_since

    def stop_reading(self) -> None:
        """Datagrams stay queued in the kernel until :meth:`drain` reads them (the way a loop
        too busy to read leaves them)."""
        if self._sock is not None and self._reading:
            self._receiver.remove(self._sock)
            self._reading = False

    # -- MediaSource ---------------------------------------------------------------------

    def pump(self, now: float) -> Sequence[bytes]:
        """Decode what the stream released (memory only)."""
        self.stream.flush(now)
        return self._render()

    def drain(self, now: float) -> Sequence[bytes]:
        """The end: what the kernel still queues for us (sent before the stop, not yet read
        when the loop is busy) and everything held, gaps and all."""
        sock = self._sock
        if sock is not None:
            self.stop_reading()
            for data, source in drain_socket(sock):
                self.stream.receive(data, source, now)
            self._count_kernel_drops(sock)
        self.stream.flush(now, everything=True)
        return self._render()

    def cut_points(self) -> Sequence[int]:
        """Packet boundaries in the last PCM, so a file at its largest keeps whole packets."""
        return list(accumulate(_pcm_sizes(self._pieces, self.codec)))

    def counters(self) -> StreamCounters:
        if self._sock is not None:
            self._count_kernel_drops(self._sock)
        return self.stream.counters

    def close(self) -> None:
        self.stop_reading()
        sock, self._sock = self._sock, None
        if sock is not None:
            self._count_kernel_drops(sock)
            sock.close()
            self._ports.release(self._port)
        self.on_close()

    def _count_kernel_drops(self, sock: socket.socket) -> None:
        # The socket is the session's own from its first datagram, so the kernel's count on it
        # is this recording's: datagrams that came when its queue was full, never read.
        self.stream.counters.kernel_dropped = kernel_drops(sock)

    def _render(self) -> Sequence[bytes]:
        pieces = self._pieces = self.stream.pop_pieces()
        if not pieces:
            return ()
        parts = render(pieces, self.codec, self.decoder)
        return (parts[0] if len(parts) == 1 else b"".join(parts),)


def _nothing() -> None:
    pass


def render(pieces: list[Piece], codec: Codec, decoder: Decoder) -> list[bytes]:
    """PCM for what a stream released: each run of consecutive payloads joined and decoded
    in one call when the codec allows it (one table lookup for G.711; G.722's and G.726's
    decoders are stateful bit by bit, so the concatenation decodes as its parts would), one
    call per payload for frame codecs (G.729, G.723.1), and zeros for each silence."""
    parts: list[bytes] = []
    run: list[bytes] = []
    join = codec.concatenable
    for piece in pieces:
        if isinstance(piece, bytes):
            if join:
                run.append(piece)
            else:
                parts.append(decoder.decode(piece))
            continue
        if run:
            parts.append(decoder.decode(run[0] if len(run) == 1 else b"".join(run)))
            run = []
        parts.append(codec.silence(codec.samples_for_timestamp(piece.units)))
    if run:
        parts.append(decoder.decode(run[0] if len(run) == 1 else b"".join(run)))
    return parts


def _pcm_sizes(pieces: list[Piece], codec: Codec) -> list[int]:
    """The PCM bytes of each piece, as :func:`render` makes them."""
    return [
        PCM_SAMPLE_WIDTH
        * codec.samples_for_timestamp(
            codec.timestamp_units(len(p)) if isinstance(p, bytes) else p.units
        )
        for p in pieces
    ]
