"""Local (USB) recording as the phone does it: ``Record_[SystemTime].wav`` files in a directory.

The vendor guide: the phone creates ``Record_[SystemTime]`` on the drive and stores the call's
RTP data in it (the layout of :mod:`callrec.media.localfile`); when the file-size limit is
reached a new file is created; pause/resume is supported while recording, and the paused time
is left out of the file. The phone simulator (``callrec phone --local-record DIR``) uses this to
write what it streams.

:class:`LocalRecorder` writes units to files the way a phone does; :func:`record_packets`
records a simulated call's packets with it, leaving paused spans out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from callrec import filemodes
from callrec.codecs import Codec
from callrec.exceptions import CallrecError
from callrec.media.localfile import HEADER_SIZE, ByteOrder, LocalFileWriter
from callrec.media.naming import unique_path
from callrec.rtp.packet import RtpPacket

#: The file-size limit of the simulator, header included, unless one is given. The vendor does
#: not say what the phone's is; 16 MiB holds about half an hour of G.711 or G.722.
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
#: ``SystemTime`` in the file name: the phone's local clock, to the second.
NAME_TIME_FORMAT: Final = "%Y%m%d%H%M%S"
NAME_PREFIX: Final = "Record_"
SUFFIX: Final = ".wav"


class LocalRecordError(CallrecError):
    """Settings a phone-local recording cannot be made with (pauses, size limit)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalRecordOptions:
    """How the simulated phone records to its USB drive."""

    #: The drive: the directory ``Record_*.wav`` files are created in.
    directory: Path
    #: Units are whole RTP packets (True) or bare payloads (False).
    rtp_headers: bool = True
    #: File-size limit in bytes, header included; a unit that would pass it starts a new file.
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Paused spans as (pause, resume) seconds from the start of the call; resume None: to the
    #: end. Units that start inside a span are not recorded.
    pauses: tuple[tuple[float, float | None], ...] = ()
    #: Byte order of the header's integers (the phones write little-endian).
    byte_order: ByteOrder = "little"
    #: The phone's clock when the call starts (local time, as the phone names files); None:
    #: now.
    start: datetime | None = None

    def __post_init__(self) -> None:
        if self.max_bytes <= HEADER_SIZE:
            raise LocalRecordError(
                f"file-size limit {self.max_bytes} leaves no room after the "
                f"{HEADER_SIZE}-byte header"
            )
        check_pauses(self.pauses)


def pause_spans(
    pause_at: Sequence[float], resume_at: Sequence[float]
) -> tuple[tuple[float, float | None], ...]:
    """Pair ``--pause-at`` and ``--resume-at`` values into spans, checking their order.

    The i-th resume ends the i-th pause; a last pause without a resume lasts to the end.
    """
    if len(resume_at) > len(pause_at):
        raise LocalRecordError(
            f"{len(resume_at)} resume times for {len(pause_at)} pauses: each resume needs "
            "a pause before it"
        )
    spans: list[tuple[float, float | None]] = []
    for i, start in enumerate(pause_at):
        spans.append((start, resume_at[i] if i < len(resume_at) else None))
    result = tuple(spans)
    check_pauses(result)
    return result


def check_pauses(spans: Sequence[tuple[float, float | None]]) -> None:
    """Spans must be ordered, non-negative, and each resume after its pause."""
    previous_end = 0.0
    for i, (start, end) in enumerate(spans):
        if start < previous_end:
            raise LocalRecordError(
                f"pause at {start:g} s comes before the previous resume or is negative"
            )
        if end is None:
            if i != len(spans) - 1:
                raise LocalRecordError(f"pause at {start:g} s has no resume but is not the last")
            return
        if end <= start:
            raise LocalRecordError(f"resume at {end:g} s is not after its pause at {start:g} s")
        previous_end = end


def is_paused(at: float, spans: Sequence[tuple[float, float | None]]) -> bool:
    """Whether ``at`` seconds into the call fall inside a paused span."""
    return any(start <= at and (end is None or at < end) for start, end in spans)


class LocalRecorder:
    """Writes units to ``Record_<SystemTime>.wav`` files in one directory, rolling over to a new
    file at the size limit. The header is written first announcing no data (as a phone that
    loses power leaves it) and rewritten when a file is finished."""

    def __init__(
        self,
        directory: Path,
        *,
        codec: Codec,
        unit_size: int,
        increment: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        start: datetime | None = None,
        byte_order: ByteOrder = "little",
    ) -> None:
        if max_bytes < HEADER_SIZE + unit_size:
            raise LocalRecordError(
                f"file-size limit {max_bytes} cannot hold the {HEADER_SIZE}-byte header and "
                f"one {unit_size}-byte unit"
            )
        self.directory = Path(directory)
        self.codec = codec
        self.unit_size = unit_size
        self.increment = increment
        self.max_bytes = max_bytes
        self.start = start if start is not None else datetime.now()
        self.byte_order: ByteOrder = byte_order
        #: Every file created so far, in order.
        self.paths: list[Path] = []
        self._fd = -1
        self._writer: LocalFileWriter | None = None

    def __enter__(self) -> LocalRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, unit: bytes, at: float) -> None:
        """Append one unit recorded ``at`` seconds into the call (names a new file's time)."""
        if self._writer is None or not self._writer.fits(self.max_bytes):
            self._open(at)
        assert self._writer is not None
        _write_all(self._fd, self._writer.unit(unit))

    def close(self) -> list[Path]:
        """Finish the current file; returns every file written."""
        self._finish()
        return list(self.paths)

    def _open(self, at: float) -> None:
        self._finish()
        filemodes.make_dirs(self.directory)
        stamp = (self.start + timedelta(seconds=at)).strftime(NAME_TIME_FORMAT)
        path = unique_path(self.directory / f"{NAME_PREFIX}{stamp}{SUFFIX}")
        self._fd = filemodes.create(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        self.paths.append(path)
        self._writer = LocalFileWriter(
            codec=self.codec.name,
            unit_size=self.unit_size,
            increment=self.increment,
            byte_order=self.byte_order,
        )
        _write_all(self._fd, self._writer.header())

    def _finish(self) -> None:
        if self._fd < 0 or self._writer is None:
            return
        fd, self._fd = self._fd, -1
        try:
            os.pwrite(fd, self._writer.header(), 0)
        finally:
            os.close(fd)
            self._writer = None


def record_packets(
    packets: Sequence[RtpPacket],
    codec: Codec,
    options: LocalRecordOptions,
    *,
    packet_ms: int = 20,
) -> list[Path]:
    """Record a call's packets as the phone does to USB; returns the files written in order.

    Units are the packets as sent (``rtp_headers``) or their payloads; every packet must have
    the same payload size, as the phone's fixed ``rtpLen`` requires.
    """
    if not packets:
        return []
    units = [p.serialize() if options.rtp_headers else p.payload for p in packets]
    unit_size = len(units[0])
    if any(len(u) != unit_size for u in units):
        raise LocalRecordError("packets of different sizes cannot make fixed-size units")
    recorder = LocalRecorder(
        options.directory,
        codec=codec,
        unit_size=unit_size,
        increment=codec.timestamp_units(len(packets[0].payload)),
        max_bytes=options.max_bytes,
        start=options.start,
        byte_order=options.byte_order,
    )
    with recorder:
        for index, unit in enumerate(units):
            at = index * packet_ms / 1000
            if not is_paused(at, options.pauses):
                recorder.write(unit, at)
    return recorder.paths


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
