"""The SDP (RFC 4566) that media anchoring needs: parse, rewrite the audio stream, serialise.

A B2BUA that records must see the RTP, so every offer and answer it relays is rewritten to
point at its own relay port (:func:`anchor`): the connection address becomes ours, the first
audio stream gets our port and loses the formats we cannot decode (so whatever the two
phones agree on, we can record it), other streams are declined (port 0), and attributes that
only make sense end to end (ICE candidates, ``a=rtcp``) are dropped. What is left is passed on
line for line, so hold (``a=sendonly``) and telephone-event negotiation go through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from callrec.codecs import CODECS
from callrec.sip.errors import SipProtocolError

#: SDP encoding names (``a=rtpmap:96 G726-32/8000``) of the codecs a SIP call can be recorded
#: in: every codec we decode, under its canonical name, which is its RFC 3551 / RFC 4856 name.
SIP_CODECS: Final = tuple(CODECS)
#: Static payload types of the codecs we record (RFC 3551); G.726's are dynamic, so named only
#: by an ``a=rtpmap``.
STATIC_CODECS: Final = {
    c.payload_type: c.name for c in CODECS.values() if not c.dynamic_payload_type
}
#: RTP profiles whose payload we can read. SRTP (``RTP/SAVP``) is encrypted end to end.
PLAIN_PROFILES: Final = frozenset({"RTP/AVP", "RTP/AVPF"})
TELEPHONE_EVENT: Final = "telephone-event"
#: Attributes that describe the far end's transport, meaningless once we relay the media.
_DROPPED_ATTRIBUTES: Final = (
    "rtcp:",
    "candidate:",
    "remote-candidates:",
    "end-of-candidates",
    "ice-",
)
_DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(SipProtocolError):
    """An SDP body we cannot use; answered with 488 Not Acceptable Here."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=488)


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    #: The lines after the ``m=`` line (``c=``, ``b=``, ``a=`` ...), as written.
    lines: tuple[str, ...] = ()
    #: Anything after the port (``/2`` for a port count), kept as written.
    port_suffix: str = ""

    def m_line(self) -> str:
        return f"m={self.media} {self.port}{self.port_suffix} {self.proto} {' '.join(self.formats)}"

    def attributes(self, name: str) -> list[str]:
        prefix = f"a={name}:"
        return [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate), static types included."""
        out: dict[int, tuple[str, int]] = {pt: (name, 8000) for pt, name in STATIC_CODECS.items()}
        for value in self.attributes("rtpmap"):
            pt_text, _, spec = value.partition(" ")
            if not pt_text.isdigit():
                continue
            encoding, _, rest = spec.strip().partition("/")
            clock = rest.partition("/")[0]
            if clock.isdigit():
                out[int(pt_text)] = (encoding, int(clock))
        return out

    @property
    def direction(self) -> str:
        for line in self.lines:
            if line[2:] in _DIRECTIONS:
                return line[2:]
        return ""

    @property
    def connection(self) -> str | None:
        for line in self.lines:
            if line.startswith("c="):
                return _connection_address(line)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription:
    #: Lines before the first ``m=`` line (``v=``, ``o=``, ``s=``, ``c=``, ``t=`` ...).
    session: tuple[str, ...]
    media: tuple[MediaDescription, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("SDP is not UTF-8") from exc
        lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
        if not lines or lines[0] != "v=0":
            raise SdpError("SDP does not start with v=0")
        session: list[str] = []
        media: list[MediaDescription] = []
        for line in lines:
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise SdpError(f"invalid SDP line {line[:30]!r}")
            if line.startswith("m="):
                media.append(_parse_m_line(line))
            elif media:
                media[-1] = replace(media[-1], lines=(*media[-1].lines, line))
            else:
                session.append(line)
        return cls(session=tuple(session), media=tuple(media))

    def serialize(self) -> bytes:
        lines = list(self.session)
        for m in self.media:
            lines.append(m.m_line())
            lines.extend(m.lines)
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    @property
    def connection(self) -> str | None:
        for line in self.session:
            if line.startswith("c="):
                return _connection_address(line)
        return None

    def audio(self) -> tuple[int, MediaDescription] | None:
        """The first audio stream that is not declined, with its index."""
        for i, m in enumerate(self.media):
            if m.media == "audio" and m.port != 0:
                return i, m
        return None


def _parse_m_line(line: str) -> MediaDescription:
    parts = line[2:].split()
    if len(parts) < 4:
        raise SdpError(f"invalid m= line {line[:40]!r}")
    port_text, slash, count = parts[1].partition("/")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"invalid port in {line[:40]!r}")
    return MediaDescription(
        media=parts[0],
        port=int(port_text),
        port_suffix=slash + count,
        proto=parts[2],
        formats=tuple(parts[3:]),
    )


def _connection_address(line: str) -> str:
    parts = line[2:].split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"invalid c= line {line[:40]!r}")
    return parts[2].split("/", 1)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioStream:
    """What the relay and the recorder need to know of one side's audio."""

    #: Where that side wants to receive RTP; None when on hold the RFC 2543 way (0.0.0.0).
    address: str | None
    port: int
    #: Payload types we can record, in the side's order of preference -> codec name.
    codecs: dict[int, str] = field(default_factory=dict)
    #: The payload type of telephone-event (RFC 4733), if negotiated.
    event_payload_type: int | None = None
    direction: str = "sendrecv"

    @property
    def first_codec(self) -> tuple[int, str] | None:
        for pt, name in self.codecs.items():
            return pt, name
        return None


def audio_stream(sdp: SessionDescription) -> AudioStream:
    """The first active audio stream of ``sdp``; SdpError when there is none we can use."""
    found = sdp.audio()
    if found is None:
        raise SdpError("SDP has no active audio stream")
    _, m = found
    if m.proto not in PLAIN_PROFILES:
        raise SdpError(f"audio profile {m.proto} is not plain RTP (cannot record it)")
    address = m.connection or sdp.connection
    if address is None:
        raise SdpError("SDP has no connection address for its audio")
    rtpmap = m.rtpmap()
    codecs: dict[int, str] = {}
    event: int | None = None
    for fmt in m.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        encoding, clock = rtpmap.get(pt, ("", 0))
        name = encoding.upper()
        if name in SIP_CODECS and clock == 8000:
            codecs[pt] = name
        elif encoding.lower() == TELEPHONE_EVENT and event is None:
            event = pt
    direction = m.direction or _session_direction(sdp) or "sendrecv"
    return AudioStream(
        address=None if address in ("0.0.0.0", "::") else address,
        port=m.port,
        codecs=codecs,
        event_payload_type=event,
        direction=direction,
    )


def _session_direction(sdp: SessionDescription) -> str:
    for line in sdp.session:
        if line[2:] in _DIRECTIONS:
            return line[2:]
    return ""


def anchor(sdp: SessionDescription, *, address: str, port: int) -> SessionDescription:
    """``sdp`` rewritten so that its audio flows through ``address:port`` (see module doc).

    Raises SdpError when no audio stream with a codec we record is left.
    """
    found = sdp.audio()
    if found is None:
        raise SdpError("SDP has no active audio stream")
    index, _ = found
    stream = audio_stream(sdp)
    if not stream.codecs:
        raise SdpError("no codec we can record (PCMA, PCMU, G722, G726-nn, G729, G723) is offered")
    family = "IP6" if ":" in address else "IP4"
    connection = f"c=IN {family} {address}"
    kept = {str(pt) for pt in stream.codecs}
    if stream.event_payload_type is not None:
        kept.add(str(stream.event_payload_type))
    media: list[MediaDescription] = []
    for i, m in enumerate(sdp.media):
        if i != index:
            media.append(replace(m, port=0, lines=tuple(ln for ln in m.lines if ln[:2] != "c=")))
            continue
        formats = tuple(f for f in m.formats if f in kept)
        lines = tuple(
            connection if ln.startswith("c=") else ln
            for ln in m.lines
            if not _dropped(ln) and _format_line_kept(ln, kept)
        )
        media.append(replace(m, port=port, formats=formats, lines=lines))
    session: list[str] = []
    has_connection = False
    for line in sdp.session:
        if line.startswith("c="):
            session.append(connection)
            has_connection = True
        elif line.startswith("o="):
            session.append(_origin(line, family, address))
        elif not _dropped(line):
            session.append(line)
    if not has_connection:
        # Declined streams keep no c= of their own, so the session level must have one.
        at = next((i + 1 for i, ln in enumerate(session) if ln.startswith("s=")), len(session))
        session.insert(at, connection)
    return SessionDescription(session=tuple(session), media=tuple(media))


def _dropped(line: str) -> bool:
    return line.startswith("a=") and line[2:].startswith(_DROPPED_ATTRIBUTES)


def _format_line_kept(line: str, kept: set[str]) -> bool:
    for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
        if line.startswith(prefix):
            pt = line[len(prefix) :].split(" ", 1)[0]
            return pt in kept or pt == "*"
    return True


def _origin(line: str, family: str, address: str) -> str:
    parts = line[2:].split()
    if len(parts) != 6:
        raise SdpError(f"invalid o= line {line[:40]!r}")
    parts[4], parts[5] = family, address
    return "o=" + " ".join(parts)
