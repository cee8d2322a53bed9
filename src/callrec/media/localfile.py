"""The phone-local (USB) recording format, ``Record_[SystemTime].wav``: read and write, no I/O.

A phone set to record locally writes its own layout under a ``.wav`` name (PROTOCOL.md section
3), which no ordinary player opens::

    offset 0   char     codec[64]   NUL-padded codec name, e.g. "PCMA"
    offset 64  int32    rtpLen      length of one RTP data unit
    offset 68  int32    increment   RTP timestamp increment per unit (160 = 20 ms at 8 kHz)
    offset 72  uint32   dataSize    total bytes of RTP data that follow
    offset 76  ...      rtp data    dataSize bytes, units of rtpLen bytes

Nothing here opens a file: :func:`scan` takes the file's bytes (``bytes``, an ``mmap``, any
buffer) and says what they hold; :func:`payloads` and :func:`decode` walk the units it found;
:class:`LocalFileWriter` makes the bytes of a file. Anything that is not a recording we can read
raises :class:`~callrec.exceptions.LocalFileError` with one message per failure mode; damage we
can read past (a file cut short, a header that disagrees with the file) is read as far as it
goes and reported in :attr:`LocalFileInfo.problems`.

Where the vendor is silent the rules are ours (PROTOCOL.md): little-endian, big-endian detected
by a sanity check on ``rtpLen`` and ``increment``; a unit is a bare payload, or a whole RTP
packet when the first units start with valid RTP v2 headers whose sequence numbers advance.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from callrec.codecs import CODECS, Codec, get_codec
from callrec.exceptions import LocalFileError, RtpError, UnsupportedCodecError
from callrec.rtp.packet import DYNAMIC_PT, RTP_VERSION, RtpPacket
from callrec.rtp.packet import HEADER_SIZE as RTP_HEADER_SIZE

ByteOrder = Literal["little", "big"]

#: Size of the fixed header: codec[64], rtpLen, increment, dataSize.
HEADER_SIZE: Final = 76
#: The NUL-padded codec name field.
CODEC_FIELD_SIZE: Final = 64
#: RFC 3551: the RTP clock of PCMA, PCMU and G.722 runs at 8 kHz (G.722 although it samples
#: at 16 kHz), so the vendor's duration formula divides by 8000 for every codec we read.
RTP_CLOCK_RATE: Final = 8000
#: Largest ``rtpLen`` and ``increment`` we believe. A unit is one RTP packet's worth (a UDP
#: datagram at most) and an increment is a packet's worth of 8 kHz ticks, so both are far
#: smaller in practice. Both limits are below 2**16, which makes the byte-order check
#: unambiguous: a value under 65536 read in the wrong order is at least 65536.
MAX_UNIT_SIZE: Final = 0xFFFF
MAX_INCREMENT: Final = 0xFFFF
#: Largest ``dataSize`` the 32-bit field can hold.
MAX_DATA_SIZE: Final = 0xFFFFFFFF
#: Leading units examined to decide whether units carry RTP headers.
PROBE_UNITS: Final = 8
#: "Sequence numbers that advance": RFC 3550 serial arithmetic, a step of 1 to 2**15 - 1.
#: A pause in the recording leaves the paused packets out, so steps above 1 are normal.
_MAX_SEQ_STEP: Final = 0x7FFF

_BYTE_ORDERS: Final[tuple[ByteOrder, ...]] = ("little", "big")
_STRUCTS: Final = {
    "little": struct.Struct(f"<{CODEC_FIELD_SIZE}siiI"),
    "big": struct.Struct(f">{CODEC_FIELD_SIZE}siiI"),
}
#: What a codec name looks like: printable ASCII, starting with a letter or digit.
_CODEC_NAME: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._/+ -]{0,62}")
_RIFF_MAGIC: Final = b"RIFF"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalFileHeader:
    """The 76-byte header of a phone-local file."""

    #: The codec name as the file spells it, e.g. ``PCMA`` (not necessarily one we decode).
    codec: str
    #: ``rtpLen``: bytes per unit, RTP header included when units carry one.
    unit_size: int
    #: ``increment``: RTP timestamp units (8 kHz ticks) per unit.
    increment: int
    #: ``dataSize``: bytes of units the header announces after itself.
    data_size: int
    #: Byte order of the three integers; the phones (ARM) write little-endian.
    byte_order: ByteOrder = "little"

    def __post_init__(self) -> None:
        if not _CODEC_NAME.fullmatch(self.codec.encode("ascii", "replace")):
            raise ValueError(f"codec name {self.codec!r} is not 1-63 printable ASCII characters")
        if not 0 < self.unit_size <= MAX_UNIT_SIZE:
            raise ValueError(f"unit size {self.unit_size} out of range 1-{MAX_UNIT_SIZE}")
        if not 0 < self.increment <= MAX_INCREMENT:
            raise ValueError(f"increment {self.increment} out of range 1-{MAX_INCREMENT}")
        if not 0 <= self.data_size <= MAX_DATA_SIZE:
            raise ValueError(f"data size {self.data_size} out of range")
        if self.byte_order not in _BYTE_ORDERS:
            raise ValueError(f"byte order must be 'little' or 'big', not {self.byte_order!r}")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> LocalFileHeader:
        """Parse the first 76 bytes of ``data``; raise :class:`LocalFileError` if they are not
        the header of a phone-local file."""
        head = bytes(memoryview(data).cast("B")[:HEADER_SIZE])
        if not head:
            raise LocalFileError("file is empty (0 bytes): not a phone recording")
        if head.startswith(_RIFF_MAGIC):
            raise LocalFileError(
                "a standard RIFF/WAVE file, not a phone recording: any player opens it as it is"
            )
        if len(head) < HEADER_SIZE:
            raise LocalFileError(
                f"file is {len(head)} bytes, shorter than the {HEADER_SIZE}-byte header of a "
                "phone recording (cut short, or another kind of file)"
            )
        codec = _codec_name(head[:CODEC_FIELD_SIZE])
        candidates = []
        for order in _BYTE_ORDERS:
            _, unit_size, increment, data_size = _STRUCTS[order].unpack(head)
            if 0 < unit_size <= MAX_UNIT_SIZE and 0 < increment <= MAX_INCREMENT:
                candidates.append(
                    cls(
                        codec=codec,
                        unit_size=unit_size,
                        increment=increment,
                        data_size=data_size,
                        byte_order=order,
                    )
                )
        if not candidates:
            _, unit_size, increment, _ = _STRUCTS["little"].unpack(head)
            raise LocalFileError(
                f"rtpLen {unit_size} and increment {increment} are not plausible "
                f"(1-{MAX_UNIT_SIZE}) in either byte order: not a phone recording"
            )
        # The limits make at most one byte order plausible (see MAX_UNIT_SIZE).
        return candidates[0]

    def serialize(self) -> bytes:
        return _STRUCTS[self.byte_order].pack(
            self.codec.encode("ascii"), self.unit_size, self.increment, self.data_size
        )

    @property
    def announced_units(self) -> float:
        """``dataSize / rtpLen``: units the header announces (fractional if it lies)."""
        return self.data_size / self.unit_size

    @property
    def announced_duration(self) -> float:
        """Seconds the header announces, by the vendor's formula; what the phone displays."""
        return self.announced_units * self.increment / RTP_CLOCK_RATE


def _codec_name(field: bytes) -> str:
    name, nul, _ = field.partition(b"\0")
    if not nul:
        raise LocalFileError(
            f"the {CODEC_FIELD_SIZE}-byte codec field has no NUL terminator "
            f"({field[:16]!r}...): not a phone recording"
        )
    if not name:
        raise LocalFileError("the codec field is empty: not a phone recording")
    if not _CODEC_NAME.fullmatch(name):
        raise LocalFileError(f"the codec field {name[:16]!r} is not a name: not a phone recording")
    # Bytes after the NUL are ignored: a C string copied into an uninitialised buffer.
    return name.decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalFileInfo:
    """What :func:`scan` found in a phone-local file."""

    header: LocalFileHeader
    #: Bytes in the file, header included.
    file_size: int
    #: Whole units read; the audio of the file.
    units: int
    #: Units are whole RTP packets (their headers are stripped), not bare payloads.
    rtp_headers: bool
    #: The codec that decodes the file, None when callrec does not implement the named one.
    codec: Codec | None
    #: Things wrong with the file that did not stop it being read, one sentence each.
    problems: tuple[str, ...] = ()
    #: The file was cut short or its header disagrees with its size: what was there was read.
    damaged: bool = False

    @property
    def payload_size(self) -> int:
        """Audio bytes in a unit (its RTP header, when present, is 12 bytes plus any CSRCs)."""
        return self.header.unit_size - (RTP_HEADER_SIZE if self.rtp_headers else 0)

    @property
    def data_end(self) -> int:
        """Offset just past the last unit read."""
        return HEADER_SIZE + self.units * self.header.unit_size

    @property
    def duration(self) -> float:
        """Seconds of audio read: units x increment / 8000 (the vendor's formula)."""
        return self.units * self.header.increment / RTP_CLOCK_RATE

    @property
    def sample_rate(self) -> int | None:
        """Rate of the decoded audio (16 kHz for G.722), None for a codec we lack."""
        return None if self.codec is None else self.codec.sample_rate

    def require_codec(self) -> Codec:
        """The codec, or :class:`LocalFileError` saying the audio cannot be decoded."""
        if self.codec is None:
            raise LocalFileError(_unsupported_codec(self.header.codec))
        return self.codec


def _unsupported_codec(name: str) -> str:
    return (
        f"codec {name!r} is not supported (callrec decodes {', '.join(CODECS)}): "
        "the audio cannot be decoded"
    )


def scan(data: bytes | bytearray | memoryview) -> LocalFileInfo:
    """Read the header and find the units of a phone-local file held in ``data``.

    Raises :class:`LocalFileError` for anything that is not such a file. A file cut short is
    read to its last whole unit; a header whose ``dataSize`` disagrees with the file is reported
    and the file believed (more whole units than announced are kept, because a phone that loses
    power before it rewrites the header leaves them so; when units carry RTP headers, only those
    that still look like the stream's packets are kept).
    """
    view = memoryview(data).cast("B")
    header = LocalFileHeader.parse(view)
    unit = header.unit_size
    problems: list[str] = []
    damaged = False
    held = len(view) - HEADER_SIZE
    held_units = held // unit
    announced_units = min(header.data_size, held) // unit

    rtp_headers = _has_rtp_headers(view, header, held_units)
    units = held_units
    if header.data_size % unit:
        problems.append(
            f"header dataSize {header.data_size} is not a whole number of {unit}-byte units"
        )
    if header.data_size > held:
        damaged = True
        problems.append(
            f"file cut short: header announces {header.data_size} data bytes, the file holds "
            f"{held}; read to the last whole unit"
        )
    elif header.data_size < held:
        damaged = True
        if rtp_headers:
            units = announced_units + _continuing_units(view, header, announced_units, held_units)
        problems.append(
            f"header announces {header.data_size} data bytes but the file holds {held}; "
            f"read {units * unit} (header not updated, e.g. power lost while recording)"
        )
        ignored = held_units - units
        if ignored:
            problems.append(
                f"{ignored * unit} bytes after the announced data are not RTP units "
                "of this stream; ignored"
            )
    partial = held - held_units * unit
    if partial:
        damaged = True
        problems.append(f"{partial} bytes at the end are a partial unit; ignored")

    codec: Codec | None
    try:
        codec = get_codec(header.codec)
    except UnsupportedCodecError:
        codec = None
        problems.append(_unsupported_codec(header.codec))
    if codec is not None and units:
        payload = unit - (RTP_HEADER_SIZE if rtp_headers else 0)
        ticks = codec.timestamp_units(payload)
        if ticks != header.increment:
            problems.append(
                f"increment {header.increment} disagrees with the unit: {payload} bytes of "
                f"{codec.name} are {ticks} RTP clock units; the duration follows the header"
            )
        if rtp_headers:
            problems.extend(_payload_type_problem(view, header, codec))
    if not units:
        problems.append("no audio: the file holds no whole unit")
    return LocalFileInfo(
        header=header,
        file_size=len(view),
        units=units,
        rtp_headers=rtp_headers,
        codec=codec,
        problems=tuple(problems),
        damaged=damaged,
    )


def _unit(view: memoryview, header: LocalFileHeader, index: int) -> memoryview:
    start = HEADER_SIZE + index * header.unit_size
    return view[start : start + header.unit_size]


def _rtp(unit: memoryview) -> RtpPacket | None:
    if len(unit) <= RTP_HEADER_SIZE or unit[0] >> 6 != RTP_VERSION:
        return None
    try:
        packet = RtpPacket.parse(bytes(unit))
    except RtpError:
        return None
    return packet if packet.payload else None


def _advances(previous: RtpPacket, packet: RtpPacket) -> bool:
    step = (packet.sequence_number - previous.sequence_number) % 0x10000
    return packet.payload_type == previous.payload_type and 0 < step <= _MAX_SEQ_STEP


def _has_rtp_headers(view: memoryview, header: LocalFileHeader, units: int) -> bool:
    """Whether units are RTP packets: the first ones parse as RTP v2 and their sequence
    numbers advance. A lone unit has no sequence to check; its payload type must then be the
    named codec's and its payload exactly one increment long."""
    probe = min(units, PROBE_UNITS)
    packets = [_rtp(_unit(view, header, i)) for i in range(probe)]
    if not packets or any(p is None for p in packets):
        return False
    checked = [p for p in packets if p is not None]
    if len(checked) == 1:
        try:
            codec = get_codec(header.codec)
        except UnsupportedCodecError:
            return False
        only = checked[0]
        return (
            _payload_type_fits(only.payload_type, codec)
            and codec.timestamp_units(len(only.payload)) == header.increment
        )
    return all(_advances(a, b) for a, b in itertools.pairwise(checked))


def _continuing_units(view: memoryview, header: LocalFileHeader, start: int, end: int) -> int:
    """How many units from ``start`` on still continue the RTP stream of the units before."""
    previous = _rtp(_unit(view, header, start - 1)) if start else None
    count = 0
    for index in range(start, end):
        packet = _rtp(_unit(view, header, index))
        if packet is None or (previous is not None and not _advances(previous, packet)):
            break
        previous = packet
        count += 1
    return count


def _payload_type_fits(payload_type: int, codec: Codec) -> bool:
    # G.726 has no static type: a phone picks one, usually 2 (RFC 1890's) or a dynamic one.
    if codec.dynamic_payload_type:
        return payload_type == codec.payload_type or payload_type in DYNAMIC_PT
    return payload_type == codec.payload_type


def _payload_type_problem(view: memoryview, header: LocalFileHeader, codec: Codec) -> Iterator[str]:
    first = _rtp(_unit(view, header, 0))
    if first is not None and not _payload_type_fits(first.payload_type, codec):
        yield (
            f"units carry RTP payload type {first.payload_type} but the header names "
            f"{header.codec} (payload type {codec.payload_type}); decoded as {codec.name}"
        )


def payloads(info: LocalFileInfo, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """The audio payload of each unit :func:`scan` found in ``data``, in file order.

    RTP headers are stripped (with their CSRCs, extension and padding); a unit whose header
    does not parse loses its first 12 bytes, as a valid one would. Pauses in the recording are
    not filled: the phone left the paused time out of the file, and so do we.
    """
    view = memoryview(data).cast("B")
    for index in range(info.units):
        unit = _unit(view, info.header, index)
        if not info.rtp_headers:
            yield bytes(unit)
            continue
        packet = _rtp(unit)
        yield packet.payload if packet is not None else bytes(unit[RTP_HEADER_SIZE:])


def decode(
    info: LocalFileInfo, data: bytes | bytearray | memoryview, *, chunk_units: int = 500
) -> Iterator[bytes]:
    """Decode the file to int16 little-endian mono PCM at ``info.sample_rate``, in chunks of
    ``chunk_units`` units (10 s at 20 ms a unit). One decoder for the whole file: G.722 keeps
    its state from unit to unit. Raises :class:`LocalFileError` for a codec we lack."""
    if chunk_units < 1:
        raise ValueError(f"chunk_units must be at least 1, not {chunk_units}")
    decoder = info.require_codec().decoder()
    chunk: list[bytes] = []
    for payload in payloads(info, data):
        chunk.append(decoder.decode(payload))
        if len(chunk) >= chunk_units:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


class LocalFileWriter:
    """The bytes of one phone-local file, unit by unit; no I/O.

    Write :meth:`header` first (it announces no data yet, as a file just opened), then each
    :meth:`unit`'s bytes; when done, write :meth:`header` again over the first 76 bytes so that
    it announces what follows. :meth:`fits` tells whether one more unit keeps the file within a
    size limit (the phone then starts a new file).
    """

    __slots__ = ("_data_size", "_header")

    def __init__(
        self, *, codec: str, unit_size: int, increment: int, byte_order: ByteOrder = "little"
    ) -> None:
        self._header = LocalFileHeader(
            codec=codec,
            unit_size=unit_size,
            increment=increment,
            data_size=0,
            byte_order=byte_order,
        )
        self._data_size = 0

    @property
    def data_size(self) -> int:
        """Bytes of units handed out so far."""
        return self._data_size

    @property
    def file_size(self) -> int:
        """Size of the file once the header and every unit so far are written."""
        return HEADER_SIZE + self._data_size

    @property
    def unit_size(self) -> int:
        return self._header.unit_size

    def header(self) -> bytes:
        """The header announcing the units handed out so far."""
        return LocalFileHeader(
            codec=self._header.codec,
            unit_size=self._header.unit_size,
            increment=self._header.increment,
            data_size=self._data_size,
            byte_order=self._header.byte_order,
        ).serialize()

    def fits(self, max_file_size: int) -> bool:
        """Whether one more unit keeps the file at most ``max_file_size`` bytes."""
        return self.file_size + self._header.unit_size <= max_file_size

    def unit(self, data: bytes) -> bytes:
        """Account for one unit (a payload, or a whole RTP packet) and return its bytes."""
        if len(data) != self._header.unit_size:
            raise ValueError(f"a unit is {self._header.unit_size} bytes, not {len(data)}")
        if self._data_size + len(data) > MAX_DATA_SIZE:
            raise ValueError("a phone-local file holds at most 4 GiB of units")
        self._data_size += len(data)
        return bytes(data)


def build_file(
    *,
    codec: str,
    units: list[bytes],
    increment: int,
    unit_size: int | None = None,
    byte_order: ByteOrder = "little",
) -> bytes:
    """A whole phone-local file holding ``units`` (tests, tools, the simulator)."""
    size = unit_size if unit_size is not None else (len(units[0]) if units else 1)
    writer = LocalFileWriter(
        codec=codec, unit_size=size, increment=increment, byte_order=byte_order
    )
    body = b"".join(writer.unit(u) for u in units)
    return writer.header() + body
