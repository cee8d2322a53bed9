"""The phone-local (USB) file format core: header, units, RTP detection, damage, decoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.codecs import get_codec
from callrec.exceptions import LocalFileError, RemoteProtocolError
from callrec.media.localfile import (
    HEADER_SIZE,
    LocalFileHeader,
    LocalFileWriter,
    build_file,
    decode,
    payloads,
    scan,
)
from callrec.rtp.packet import RtpPacket
from callrec.sim.phone import build_packets
from tests.support.audio import decode_payloads, tone
from tests.support.data import CODEC_DATA

CODECS = ["PCMA", "PCMU", "G722"]


def packets_for(name: str, seconds: float = 0.4, *, first_seq: int = 65530) -> list[RtpPacket]:
    codec = get_codec(name)
    return build_packets(
        tone(codec.sample_rate, seconds), codec, ssrc=0xABCDEF01, first_seq=first_seq
    )


def header_bytes(
    codec: bytes = b"PCMA", unit: int = 172, inc: int = 160, size: int = 0, order: str = "<"
) -> bytes:
    return codec.ljust(64, b"\0") + struct.pack(f"{order}iiI", unit, inc, size)


# -- header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_header_round_trip(order: str) -> None:
    data = header_bytes(b"G722", 160, 160, 8000, order)
    header = LocalFileHeader.parse(data)
    assert header == LocalFileHeader(
        codec="G722",
        unit_size=160,
        increment=160,
        data_size=8000,
        byte_order="little" if order == "<" else "big",
    )
    assert header.serialize() == data
    assert header.announced_units == 50
    assert header.announced_duration == 1.0


def test_header_is_76_bytes_little_endian() -> None:
    header = LocalFileHeader(codec="PCMA", unit_size=172, increment=160, data_size=258000)
    data = header.serialize()
    assert len(data) == HEADER_SIZE == 76
    assert data[:5] == b"PCMA\0" and data[64:] == struct.pack("<iiI", 172, 160, 258000)


def test_header_ignores_bytes_after_the_nul() -> None:
    data = b"PCMU\0" + b"\xaa" * 59 + struct.pack("<iiI", 160, 160, 0)
    assert LocalFileHeader.parse(data).codec == "PCMU"


def test_header_big_endian_detected_from_plausibility() -> None:
    # 160 little-endian is a0 00 00 00; read big-endian that is 2 684 354 560.
    assert LocalFileHeader.parse(header_bytes(order=">")).byte_order == "big"
    assert LocalFileHeader.parse(header_bytes(order="<")).byte_order == "little"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is empty (0 bytes): not a phone recording"),
        (
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            "a standard RIFF/WAVE file, not a phone recording: any player opens it as it is",
        ),
        (
            b"PCMA\0\0\0",
            "file is 7 bytes, shorter than the 76-byte header of a phone recording "
            "(cut short, or another kind of file)",
        ),
        (
            b"x" * 100,
            "the 64-byte codec field has no NUL terminator (b'xxxxxxxxxxxxxxxx'...): "
            "not a phone recording",
        ),
        (header_bytes(b""), "the codec field is empty: not a phone recording"),
        (
            header_bytes(b"\x01\x02PCMA"),
            "the codec field b'\\x01\\x02PCMA' is not a name: not a phone recording",
        ),
        (
            header_bytes(unit=0),
            "rtpLen 0 and increment 160 are not plausible (1-65535) in either byte order: "
            "not a phone recording",
        ),
        (
            header_bytes(inc=-5),
            "rtpLen 172 and increment -5 are not plausible (1-65535) in either byte order: "
            "not a phone recording",
        ),
        (
            header_bytes(unit=70000),
            "rtpLen 70000 and increment 160 are not plausible (1-65535) in either byte order: "
            "not a phone recording",
        ),
    ],
)
def test_not_a_phone_recording(data: bytes, message: str) -> None:
    with pytest.raises(LocalFileError) as caught:
        scan(data)
    assert str(caught.value) == message
    assert caught.value.reason == "bad_file"
    assert isinstance(caught.value, RemoteProtocolError)  # the file's fault, not ours


def test_header_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="codec name"):
        LocalFileHeader(codec="", unit_size=1, increment=1, data_size=0)
    with pytest.raises(ValueError, match="unit size"):
        LocalFileHeader(codec="PCMA", unit_size=0, increment=1, data_size=0)
    with pytest.raises(ValueError, match="increment"):
        LocalFileHeader(codec="PCMA", unit_size=1, increment=70000, data_size=0)
    with pytest.raises(ValueError, match="data size"):
        LocalFileHeader(codec="PCMA", unit_size=1, increment=1, data_size=-1)
    with pytest.raises(ValueError, match="byte order"):
        LocalFileHeader(codec="PCMA", unit_size=1, increment=1, data_size=0, byte_order="x")  # type: ignore[arg-type]


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("rtp_headers", [True, False])
def test_scan_and_decode_clean_file(name: str, rtp_headers: bool) -> None:
    packets = packets_for(name)
    units = [p.serialize() if rtp_headers else p.payload for p in packets]
    data = build_file(codec=name, units=units, increment=160)
    info = scan(data)
    assert info.units == 20
    assert info.rtp_headers is rtp_headers
    assert info.payload_size == 160
    assert info.duration == pytest.approx(0.4)
    assert info.problems == () and not info.damaged
    assert info.codec is get_codec(name)
    assert info.sample_rate == (16000 if name == "G722" else 8000)
    assert list(payloads(info, data)) == [p.payload for p in packets]
    expected = decode_payloads(get_codec(name), [p.payload for p in packets])
    assert b"".join(decode(info, data, chunk_units=7)) == expected
    assert len(expected) == 2 * round(0.4 * info.sample_rate)


def test_rtp_detection_allows_sequence_gaps_from_a_pause() -> None:
    packets = packets_for("PCMA", 1.0)
    kept = packets[:3] + packets[30:]  # a pause after the third unit
    info = scan(build_file(codec="PCMA", units=[p.serialize() for p in kept], increment=160))
    assert info.rtp_headers and info.units == len(kept)


def test_payload_that_looks_like_rtp_but_does_not_advance_is_bare() -> None:
    # Each 160-byte payload starts like an RTP header (v2, PT 8) with the same sequence number.
    unit = bytes([0x80, 0x08, 0x12, 0x34]) + bytes(range(156))
    info = scan(build_file(codec="PCMA", units=[unit] * 10, increment=160))
    assert not info.rtp_headers
    assert info.problems == ()


def test_a_lone_unit_is_rtp_only_if_it_matches_codec_and_increment() -> None:
    packet = packets_for("PCMU")[0]
    lone = scan(build_file(codec="PCMU", units=[packet.serialize()], increment=160))
    assert lone.rtp_headers and lone.units == 1
    # The same bytes under another codec name: payload type 0 is not PCMA's.
    other = scan(build_file(codec="PCMA", units=[packet.serialize()], increment=160))
    assert not other.rtp_headers
    assert "increment 160 disagrees with the unit: 172 bytes of PCMA" in other.problems[0]


def test_rtp_units_with_csrc_and_padding_lose_their_whole_header() -> None:
    packets = [
        RtpPacket(
            payload_type=8, sequence_number=i, timestamp=160 * i, ssrc=1,
            csrc=(7,), payload=bytes([i]) * 152, padding_size=4,
        )
        for i in range(5)
    ]  # fmt: skip
    units = [p.serialize() for p in packets]
    assert len(units[0]) == 172
    data = build_file(codec="PCMA", units=units, increment=160)
    info = scan(data)
    assert info.rtp_headers
    assert list(payloads(info, data)) == [bytes([i]) * 152 for i in range(5)]


def test_a_unit_whose_rtp_header_breaks_loses_twelve_bytes() -> None:
    packets = packets_for("PCMA")
    units = [p.serialize() for p in packets]
    units[10] = b"\x00" * 12 + packets[10].payload  # version 0: not RTP
    data = build_file(codec="PCMA", units=units, increment=160)
    info = scan(data)
    assert info.rtp_headers
    assert list(payloads(info, data))[10] == packets[10].payload


def test_payload_type_disagreeing_with_codec_is_reported() -> None:
    packets = packets_for("PCMU")
    data = build_file(codec="PCMA", units=[p.serialize() for p in packets], increment=160)
    info = scan(data)
    assert info.rtp_headers
    assert info.problems == (
        "units carry RTP payload type 0 but the header names PCMA (payload type 8); "
        "decoded as PCMA",
    )


def test_increment_disagreeing_with_unit_is_reported_and_header_wins() -> None:
    packets = packets_for("PCMA")
    data = build_file(codec="PCMA", units=[p.payload for p in packets], increment=80)
    info = scan(data)
    assert info.duration == pytest.approx(20 * 80 / 8000)
    assert info.problems == (
        "increment 80 disagrees with the unit: 160 bytes of PCMA are 160 RTP clock units; "
        "the duration follows the header",
    )


# -- damage ----------------------------------------------------------------------------------


def test_cut_short_reads_to_last_whole_unit() -> None:
    packets = packets_for("G722")
    full = build_file(codec="G722", units=[p.serialize() for p in packets], increment=160)
    data = full[: HEADER_SIZE + 7 * 172 + 100]
    info = scan(data)
    assert info.units == 7 and info.damaged and info.rtp_headers
    assert info.duration == pytest.approx(0.14)
    assert info.problems == (
        "file cut short: header announces 3440 data bytes, the file holds 1304; "
        "read to the last whole unit",
        "100 bytes at the end are a partial unit; ignored",
    )
    codec = get_codec("G722")
    assert b"".join(decode(info, data)) == decode_payloads(codec, [p.payload for p in packets[:7]])


def test_header_never_rewritten_reads_the_whole_file() -> None:
    # A phone that loses power before rewriting the header leaves dataSize 0.
    packets = packets_for("PCMA")
    writer = LocalFileWriter(codec="PCMA", unit_size=172, increment=160)
    data = writer.header() + b"".join(writer.unit(p.serialize()) for p in packets)
    info = scan(data)
    assert info.units == 20 and info.damaged
    assert info.problems == (
        "header announces 0 data bytes but the file holds 3440; read 3440 "
        "(header not updated, e.g. power lost while recording)",
    )


def test_stale_header_with_rtp_units_stops_at_the_first_non_unit() -> None:
    packets = packets_for("PCMA")
    good = build_file(codec="PCMA", units=[p.serialize() for p in packets], increment=160)
    stale = good[:72] + struct.pack("<I", 5 * 172) + good[76:]
    data = stale + b"\xff" * 172 * 2  # two units' worth of junk after the stream
    info = scan(data)
    assert info.units == 20
    assert info.problems == (
        "header announces 860 data bytes but the file holds 3784; read 3440 "
        "(header not updated, e.g. power lost while recording)",
        "344 bytes after the announced data are not RTP units of this stream; ignored",
    )


def test_data_size_not_whole_units_is_reported() -> None:
    packets = packets_for("PCMA")
    data = build_file(codec="PCMA", units=[p.payload for p in packets], increment=160) + b"xyz"
    data = data[:72] + struct.pack("<I", 20 * 160 + 3) + data[76:]
    info = scan(data)
    assert info.units == 20
    assert info.problems == (
        "header dataSize 3203 is not a whole number of 160-byte units",
        "3 bytes at the end are a partial unit; ignored",
    )


def test_header_only_file_has_no_audio() -> None:
    info = scan(
        LocalFileHeader(codec="PCMA", unit_size=160, increment=160, data_size=0).serialize()
    )
    assert info.units == 0 and info.duration == 0.0 and not info.damaged
    assert info.problems == ("no audio: the file holds no whole unit",)
    assert list(decode(info, b"")) == []


@pytest.mark.parametrize("rtp_headers", [True, False])
@pytest.mark.parametrize(("name", "payload_type"), [("G726-32", 2), ("g726_32", 112)])
def test_a_g726_file_decodes_as_ffmpeg_does(
    name: str, payload_type: int, rtp_headers: bool
) -> None:
    """G.726 has no static payload type: the phone's own (2 or a dynamic one) is no problem,
    and the header's spelling of the name is the phone's."""
    encoded = (CODEC_DATA / "signal.g726-32").read_bytes()
    chunks = [encoded[i : i + 80] for i in range(0, len(encoded), 80)]
    packets = [
        RtpPacket(
            payload_type=payload_type, sequence_number=i, timestamp=160 * i, ssrc=7, payload=c
        )
        for i, c in enumerate(chunks)
    ]
    units = [p.serialize() if rtp_headers else p.payload for p in packets]
    data = build_file(codec=name, units=units, increment=160)

    info = scan(data)

    assert info.codec is get_codec("G726-32")
    assert info.rtp_headers is rtp_headers
    assert info.problems == ()
    assert info.duration == pytest.approx(2.0)
    pcm = b"".join(decode(info, data, chunk_units=7))
    assert pcm == (CODEC_DATA / "signal.g726-32.ffmpeg.s16le").read_bytes()


def test_unknown_codec_scans_but_does_not_decode() -> None:
    data = build_file(codec="iLBC", units=[bytes(38)] * 50, increment=160)
    info = scan(data)
    assert info.codec is None and info.sample_rate is None
    assert info.duration == 1.0
    message = (
        "codec 'iLBC' is not supported (callrec decodes PCMU, PCMA, G722, G726-16, G726-24, "
        "G726-32, G726-40, AAL2-G726-16, AAL2-G726-24, AAL2-G726-32, AAL2-G726-40, G729, G723): "
        "the audio cannot be decoded"
    )
    assert info.problems == (message,)
    with pytest.raises(LocalFileError, match=r"^codec 'iLBC' is not supported"):
        list(decode(info, data))


def test_codec_names_are_case_blind_and_aliased() -> None:
    packets = packets_for("PCMA")
    info = scan(build_file(codec="g711a", units=[p.payload for p in packets], increment=160))
    assert info.codec is get_codec("PCMA") and info.header.codec == "g711a"


# -- writer ----------------------------------------------------------------------------------


def test_writer_counts_units_and_fits_a_limit() -> None:
    writer = LocalFileWriter(codec="PCMA", unit_size=160, increment=160)
    assert LocalFileHeader.parse(writer.header()).data_size == 0
    assert writer.fits(HEADER_SIZE + 160) and not writer.fits(HEADER_SIZE + 159)
    writer.unit(bytes(160))
    assert writer.data_size == 160 and writer.file_size == HEADER_SIZE + 160
    assert not writer.fits(HEADER_SIZE + 319) and writer.fits(HEADER_SIZE + 320)
    assert LocalFileHeader.parse(writer.header()).data_size == 160
    with pytest.raises(ValueError, match="a unit is 160 bytes, not 10"):
        writer.unit(bytes(10))


# -- anything at all -------------------------------------------------------------------------


def _read_everything(data: bytes) -> None:
    try:
        info = scan(data)
    except LocalFileError:
        return
    assert info.units * info.header.unit_size <= len(data) - HEADER_SIZE
    for problem in info.problems:
        assert isinstance(problem, str) and problem
    try:
        pcm = b"".join(decode(info, data))
    except LocalFileError as exc:
        assert info.codec is None, exc
        return
    assert len(pcm) % 2 == 0


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_local_file_error(data: bytes) -> None:
    _read_everything(data)


@st.composite
def plausible_files(draw: st.DrawFn) -> bytes:
    """A header that parses (any codec, sizes, order) over random or RTP-looking units."""
    codec = draw(st.sampled_from([b"PCMA", b"PCMU", b"G722", b"G729", b"iLBC", b"pcmu"]))
    unit = draw(st.integers(1, 200))
    order = draw(st.sampled_from(["<", ">"]))
    head = header_bytes(
        codec,
        unit,
        draw(st.integers(1, 400)),
        draw(st.integers(0, 0xFFFFFFFF)),
        order,
    )
    count = draw(st.integers(0, 12))
    body = b""
    for seq in range(count):
        if draw(st.booleans()):
            rtp = struct.pack("!BBHII", 0x80, draw(st.integers(0, 127)), seq, 0, 1)
            body += (rtp + draw(st.binary(min_size=unit, max_size=unit)))[:unit]
        else:
            body += draw(st.binary(min_size=unit, max_size=unit))
    return head + body + draw(st.binary(max_size=3))


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plausible_files())
def test_any_plausible_file_parses_or_raises_local_file_error(data: bytes) -> None:
    _read_everything(data)
