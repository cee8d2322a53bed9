"""One recording session: RTP in on its own UDP port, decoded audio out to a WAV file."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from callrec.codecs import Codec
from callrec.codecs.base import PCM_SAMPLE_WIDTH, Decoder
from callrec.control import ControlConnection
from callrec.media.wav import WavTooLargeError, WavWriter
from callrec.rtp.stream import MediaStream, Piece
from callrec.server.ports import drain_socket

logger = logging.getLogger(__name__)


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Puts the session's id in every line about it."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        assert self.extra is not None
        return f"[{self.extra['session']}] {msg}", kwargs


@dataclass(eq=False, slots=True, kw_only=True)
class RecordingSession:
    """Everything the server holds for one call being recorded."""

    key: tuple[str, str, str]  # (peer ip, device, phone's id)
    rec_id: int
    codec: Codec
    stream: MediaStream
    writer: WavWriter
    path: Path
    relpath: str
    port: int
    started_at: datetime
    started_mono: float
    fields: dict[str, str]
    log: SessionLog
    sock: socket.socket | None = None
    #: The control connection's core, told when we end the session ourselves.
    control: ControlConnection | None = None
    decoder: Decoder = field(init=False)
    finishing: bool = False

    def __post_init__(self) -> None:
        self.decoder = self.codec.decoder()

    @property
    def session_id(self) -> str:
        return self.key[2]

    def pump(self, now: float) -> None:
        """Decode what the stream released and hand it to the writer (memory only)."""
        self.stream.flush(now)
        self._write_out()

    def drain(self, now: float) -> None:
        """The end: what the kernel still queues for us (sent before the stop, not yet read
        when the loop is busy) and everything held is written, gaps and all."""
        if self.sock is not None:
            for data, source in drain_socket(self.sock):
                self.stream.receive(data, source, now)
        self.stream.flush(now, everything=True)
        self._write_out()

    def _write_out(self) -> None:
        pieces = self.stream.pop_pieces()
        if not pieces:
            return
        parts = render(pieces, self.codec, self.decoder)
        pcm = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self.writer.write(pcm)
        except WavTooLargeError:
            # At the size limit keep what fits, packet by packet, as one write per packet did.
            view = memoryview(pcm)
            pos = 0
            for size in _pcm_sizes(pieces, self.codec):
                self.writer.write(view[pos : pos + size])  # raises at the one that overflows
                pos += size
            raise


def render(pieces: list[Piece], codec: Codec, decoder: Decoder) -> list[bytes]:
    """PCM for what a stream released: each run of consecutive payloads joined and decoded
    in one call (one table lookup for G.711; G.722's decoder is stateful byte by byte, so the
    concatenation decodes as its parts would), and zeros for each silence."""
    parts: list[bytes] = []
    run: list[bytes] = []
    for piece in pieces:
        if isinstance(piece, bytes):
            run.append(piece)
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
