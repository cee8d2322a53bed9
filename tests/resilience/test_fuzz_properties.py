"""Property tests: any input either parses or raises our own protocol error, never anything
else; and the stateful cores never raise on any datagram or byte stream."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.control import ControlConnection, ControlMessage, StartRequest, StopRequest
from callrec.exceptions import ControlProtocolError, RtpError
from callrec.rtp import stream as stream_module
from callrec.rtp.packet import RtpPacket
from callrec.rtp.stream import Audio, MediaStream, Silence

FUZZ = settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

keyish = st.text(alphabet="abcdefgh_=&%+\r\n\0\xff", max_size=40)


@FUZZ
@given(st.binary(max_size=600) | keyish.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_control_message_parse(data: bytes) -> None:
    try:
        msg = ControlMessage.parse(data)
    except ControlProtocolError as exc:
        assert exc.reason in ("bad_request", "too_many_fields")
        return
    assert ControlMessage.parse(msg.serialize()) == msg


@FUZZ
@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), max_size=12),
)
def test_control_connection_never_raises(chunks: list[bytes], gaps: list[float]) -> None:
    conn = ControlConnection(max_message_bytes=256, message_idle=0.03)
    now = 0.0
    for i, chunk in enumerate(chunks):
        now += gaps[i] if i < len(gaps) else 0.01
        conn.receive_data(chunk, now)
        while (event := conn.next_event(now)) is not None:
            if isinstance(event, StartRequest) and i % 2:
                conn.accept_start(event, server="127.0.0.1", port=41000)
            elif isinstance(event, StopRequest) and event.state_before is None:
                conn.refuse_stop(event, reason="unknown_id")
    # End of stream (as a FIN does) leaves no message pending, and nothing raises.
    conn.receive_eof(now)
    while conn.next_event(now) is not None:
        pass
    assert conn.deadline() is None
    conn.connection_lost()


rtp_like = st.builds(
    lambda first, rest: bytes([first]) + rest,
    st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0x8F, 0x81, 0x40, 0x00]),
    st.binary(max_size=200),
)


@FUZZ
@given(rtp_like | st.binary(max_size=200))
def test_rtp_parse(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError as exc:
        assert exc.reason == "malformed"
        return
    assert RtpPacket.parse(packet.serialize()) == packet


packets = st.builds(
    lambda pt, seq, ts, ssrc, n: RtpPacket(
        payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=b"\xd5" * n
    ).serialize(),
    st.sampled_from([8, 8, 8, 0, 13, 101]),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1, 1, 1, 2, 3]),
    st.integers(0, 400),
)


@FUZZ
@given(
    st.lists(packets | rtp_like, max_size=60),
    st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=60),
)
def test_media_stream_survives_anything(datagrams: list[bytes], gaps: list[float]) -> None:
    stream = MediaStream(
        payload_type=8,
        clock_rate=8000,
        timestamp_units=lambda n: n,
        peer_ip="127.0.0.1",
        max_gap=10.0,
    )
    now = 0.0
    for i, d in enumerate(datagrams):
        now += gaps[i] if i < len(gaps) else 0.02
        stream.receive(d, "127.0.0.1", now)
        stream.flush(now)
    stream.flush(now, everything=True)
    out = stream.pop_output()
    c = stream.counters
    assert c.received == len(datagrams)
    audio = sum(1 for o in out if isinstance(o, Audio))
    accounted = audio + c.late + c.duplicate + c.foreign + c.malformed + c.other
    assert accounted == c.received
    for o in out:
        if isinstance(o, Silence):
            assert 0 < o.units <= 10 * 8000


@st.composite
def mostly_in_order(draw: st.DrawFn) -> list[tuple[bytes, float]]:
    """A stream that is mostly the fast path's common packet, with every kind of deviation:
    loss, reordering, duplicates, timestamp jumps, SSRC changes, other payload types, the
    marker bit, CSRCs, padding, sequence jumps, empty payloads and junk."""
    out: list[tuple[bytes, float]] = []
    seq = draw(st.integers(0, 65535))
    ts = draw(st.integers(0, 2**32 - 1))
    ssrc = 1
    kinds = ["ok"] * 12 + [
        "skip", "swap", "dup", "tsjump", "ssrc", "pt", "marker", "raw", "bigjump", "empty",
        "csrc", "pad",
    ]  # fmt: skip
    for i in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from(kinds))
        size = draw(st.sampled_from([160, 160, 80]))
        if kind == "raw":
            out.append((draw(st.binary(max_size=40)), draw(st.floats(0, 3))))
            continue
        if kind == "skip":
            gap = draw(st.integers(1, 5))
            seq, ts = seq + gap, ts + 160 * gap
        elif kind == "tsjump":
            ts += draw(st.integers(1, 200_000))
        elif kind == "ssrc":
            ssrc = draw(st.integers(1, 3))
        elif kind == "bigjump":
            seq += draw(st.integers(3000, 40_000))
        data = RtpPacket(
            payload_type=draw(st.sampled_from([0, 13, 101, 72])) if kind == "pt" else 8,
            sequence_number=seq % 65536,
            timestamp=ts % 2**32,
            ssrc=ssrc,
            payload=b"" if kind == "empty" else bytes([i % 256]) * size,
            marker=kind == "marker",
            csrc=(5,) if kind == "csrc" else (),
            padding_size=4 if kind == "pad" else 0,
        ).serialize()
        out.append((data, draw(st.sampled_from([0.02, 0.02, 0.0, 0.3, 2.5]))))
        if kind == "dup":
            out.append((data, 0.0))
        elif kind == "swap" and len(out) >= 2:
            out[-1], out[-2] = out[-2], out[-1]
        seq, ts = seq + 1, ts + size
    return out


def _record(events: list[tuple[bytes, float]], flush_every: int) -> tuple[list, dict[str, int]]:
    stream = MediaStream(
        payload_type=8,
        clock_rate=8000,
        timestamp_units=lambda n: n,
        peer_ip="127.0.0.1",
        max_gap=10.0,
        reorder_window=3,
    )
    now = 0.0
    out: list = []
    for i, (data, dt) in enumerate(events):
        now += dt
        stream.receive(data, "127.0.0.1", now)
        if flush_every and i % flush_every == 0:
            stream.flush(now)
            out += stream.pop_pieces()
    stream.flush(now, everything=True)
    out += stream.pop_output()
    flat = [o if isinstance(o, bytes | Silence) else o.payload for o in out]
    return flat, stream.counters.as_dict()


@FUZZ
@given(mostly_in_order(), st.integers(0, 4))
def test_fast_path_changes_nothing(events: list[tuple[bytes, float]], flush_every: int) -> None:
    fast = _record(events, flush_every)
    # No first byte matches the fast path's: every packet takes the general path.
    plain, stream_module._PLAIN_FIRST_BYTE = stream_module._PLAIN_FIRST_BYTE, -1
    try:
        general = _record(events, flush_every)
    finally:
        stream_module._PLAIN_FIRST_BYTE = plain
    assert fast == general
