"""The stream core with fixed loss, reorder, duplicate and SSRC patterns."""

from __future__ import annotations

from callrec.rtp.packet import RtpPacket
from callrec.rtp.stream import Audio, MediaStream, Silence

PT = 8
PEER = "127.0.0.1"
UNITS = 160  # 20 ms at 8 kHz


def make_stream(**kw: object) -> MediaStream:
    args: dict[str, object] = dict(
        payload_type=PT,
        clock_rate=8000,
        timestamp_units=lambda n: n,
        peer_ip=PEER,
        reorder_window=3,
    )
    args.update(kw)
    return MediaStream(**args)  # type: ignore[arg-type]


def pkt(
    i: int, *, ssrc: int = 1, seq0: int = 100, ts0: int = 1000, pt: int = PT, tag: int | None = None
) -> bytes:
    payload = bytes([(i if tag is None else tag) % 256]) * UNITS
    return RtpPacket(
        payload_type=pt,
        sequence_number=(seq0 + i) % 65536,
        timestamp=(ts0 + i * UNITS) % (1 << 32),
        ssrc=ssrc,
        payload=payload,
    ).serialize()


def run(stream: MediaStream, datagrams: list[bytes], *, dt: float = 0.02, src: str = PEER) -> list:
    now = 0.0
    for d in datagrams:
        stream.receive(d, src, now)
        now += dt
    stream.flush(now, everything=True)
    return stream.pop_output()


def timeline(out: list) -> list:
    """Audio as packet tags, silence as ('gap', units)."""
    return [o.payload[0] if isinstance(o, Audio) else ("gap", o.units) for o in out]


def total_units(out: list) -> int:
    return sum(len(o.payload) if isinstance(o, Audio) else o.units for o in out)


def test_clean_stream() -> None:
    s = make_stream()
    out = run(s, [pkt(i) for i in range(10)])
    assert timeline(out) == list(range(10))
    assert s.counters.received == 10 and s.counters.lost == 0


def test_loss_becomes_silence_of_exact_length() -> None:
    s = make_stream()
    kept = [i for i in range(20) if i not in (3, 7, 8, 15)]
    out = run(s, [pkt(i) for i in kept])
    assert total_units(out) == 20 * UNITS
    assert timeline(out) == [
        0,
        1,
        2,
        ("gap", 160),
        4,
        5,
        6,
        ("gap", 320),
        *range(9, 15),
        ("gap", 160),
        16,
        17,
        18,
        19,
    ]
    assert s.counters.lost == 4


def test_reorder_within_window_is_repaired() -> None:
    s = make_stream()
    order = [0, 2, 1, 3, 6, 4, 5, 7, 9, 8]
    out = run(s, [pkt(i) for i in order])
    assert timeline(out) == list(range(10))
    assert s.counters.lost == 0 and s.counters.late == 0


def test_reorder_beyond_window_is_late() -> None:
    s = make_stream()
    order = [0, 2, 3, 4, 5, 6, 1, 7]
    out = run(s, [pkt(i) for i in order])
    assert timeline(out) == [0, ("gap", 160), 2, 3, 4, 5, 6, 7]
    assert s.counters.lost == 1 and s.counters.late == 1


def test_duplicates_are_dropped() -> None:
    s = make_stream()
    order = [0, 1, 1, 2, 0, 3, 3, 4]
    out = run(s, [pkt(i) for i in order])
    assert timeline(out) == [0, 1, 2, 3, 4]
    assert s.counters.duplicate == 3


def test_sequence_and_timestamp_wrap() -> None:
    s = make_stream()
    out = run(s, [pkt(i, seq0=65533, ts0=(1 << 32) - 320) for i in range(8) if i != 4])
    assert total_units(out) == 8 * UNITS
    assert s.counters.lost == 1


def test_foreign_address_other_payload_types_and_rtcp_are_not_audio() -> None:
    s = make_stream()
    s.receive(pkt(0), PEER, 0.0)
    s.receive(pkt(1), "127.0.0.2", 0.01)
    s.receive(pkt(1, pt=101, ssrc=2), PEER, 0.02)  # another source's event: not in sequence
    s.receive(pkt(1, pt=13), PEER, 0.02)  # comfort noise: takes sequence number 1
    s.receive(b"\x80\xc8\x00\x06" + bytes(24), PEER, 0.03)  # RTCP SR
    s.receive(b"\x80\x08\x00", PEER, 0.03)  # truncated
    s.receive(pkt(2), PEER, 0.04)
    s.flush(1.0, everything=True)
    # The comfort noise's 20 ms are silence, not loss.
    assert timeline(s.pop_output()) == [0, ("gap", UNITS), 2]
    c = s.counters
    assert (c.received, c.foreign, c.other, c.malformed) == (7, 1, 3, 1)
    assert c.lost == 0


def test_accept_foreign_media_when_configured() -> None:
    s = make_stream(accept_foreign=True)
    out = run(s, [pkt(i) for i in range(3)], src="127.0.0.2")
    assert timeline(out) == [0, 1, 2]


def test_new_ssrc_after_hold_continues_with_wall_clock_gap() -> None:
    s = make_stream()
    for i in range(5):
        s.receive(pkt(i), PEER, i * 0.02)
    # 3 s of hold, then a new RTP session with unrelated seq/ts.
    for i in range(5):
        s.receive(pkt(i, ssrc=2, seq0=9000, ts0=777_777, tag=50 + i), PEER, 3.1 + i * 0.02)
    s.flush(10.0, everything=True)
    out = s.pop_output()
    assert timeline(out) == [0, 1, 2, 3, 4, ("gap", 3 * 8000), 50, 51, 52, 53, 54]
    assert s.counters.ssrc_changes == 1


def test_stray_ssrc_packets_are_dropped() -> None:
    s = make_stream()
    data = []
    for i in range(10):
        data.append(pkt(i))
        if i in (2, 3, 6):
            data.append(pkt(i, ssrc=99, tag=200))
    out = run(s, data)
    assert timeline(out) == list(range(10))
    assert s.counters.foreign == 3 and s.counters.ssrc_changes == 0


def test_timestamp_jump_is_bounded_by_wall_clock() -> None:
    s = make_stream()
    data = [pkt(i) for i in range(3)]
    # Sender jumps its timestamp by two hours between two consecutive packets.
    data += [pkt(i, ts0=1000 + 2 * 3600 * 8000) for i in range(3, 6)]
    out = run(s, data)
    assert timeline(out) == list(range(6))
    assert total_units(out) == 6 * UNITS


def test_long_gap_is_capped() -> None:
    s = make_stream(max_gap=1.0)
    s.receive(pkt(0), PEER, 0.0)
    s.receive(pkt(1, ts0=1000 + 10 * 8000), PEER, 10.0)  # 10 s of silence by both clocks
    s.flush(20.0, everything=True)
    assert timeline(s.pop_output()) == [0, ("gap", 8000), 1]


def test_sequence_restart_on_same_ssrc_resyncs() -> None:
    s = make_stream()
    data = [pkt(i) for i in range(5)] + [
        pkt(i, seq0=40000, ts0=1000 + 5 * UNITS - 5 * UNITS) for i in range(5, 10)
    ]
    out = run(s, data)
    # The first packet after the restart is held as suspect and dropped; the rest follow.
    assert timeline(out) == [0, 1, 2, 3, 4, ("gap", 160), 6, 7, 8, 9]
    assert s.counters.foreign == 1


def test_time_based_flush_releases_held_packets() -> None:
    s = make_stream(max_hold=0.2)
    for i in (0, 2, 3):
        s.receive(pkt(i), PEER, 0.0)
    assert s.pop_output() == []  # the start is held too, for a first packet that comes late
    s.flush(0.1)
    assert s.pop_output() == []
    s.flush(0.25)
    assert timeline(s.pop_output()) == [0, ("gap", 160), 2, 3]


def test_empty_payload_is_malformed() -> None:
    s = make_stream()
    s.receive(
        RtpPacket(payload_type=PT, sequence_number=1, timestamp=1, ssrc=1).serialize(), PEER, 0
    )
    assert s.counters.malformed == 1
    assert isinstance(Silence(1), Silence)


def test_loss_read_in_a_burst_after_a_stall_keeps_its_length() -> None:
    # A loaded server reads a backlog at once: 150 packets (3 s) were dropped by the
    # kernel and the survivors arrive with no time between them. The sequence numbers
    # still say 3 s are missing: that is silence, not a timestamp jump.
    s = make_stream()
    kept = list(range(10)) + list(range(160, 170))
    for i in kept:
        s.receive(pkt(i), PEER, 0.0)
    s.flush(1.0, everything=True)
    out = s.pop_output()
    assert timeline(out) == [*range(10), ("gap", 150 * UNITS), *[i % 256 for i in range(160, 170)]]
    assert total_units(out) == 170 * UNITS


# -- issue 13: what real phones and networks send ------------------------------------------


def test_first_two_packets_swapped_still_open_the_recording() -> None:
    """Item 8: the true first packet arrives second; it is written first, nothing is late."""
    s = make_stream()
    out = run(s, [pkt(1), pkt(0)] + [pkt(i) for i in range(2, 8)])
    assert timeline(out) == list(range(8))
    assert (s.counters.late, s.counters.lost) == (0, 0)


def test_start_is_released_by_time_when_few_packets_come() -> None:
    s = make_stream(max_hold=0.2)
    s.receive(pkt(0), PEER, 0.0)
    s.flush(0.1)
    assert s.pop_output() == []
    s.flush(0.21)
    assert timeline(s.pop_output()) == [0]


def test_comfort_noise_takes_sequence_numbers_and_is_not_loss() -> None:
    """Item 9: silence suppression sends one CN packet then nothing; its sequence number
    is not a lost packet, and the silence lasts as the timestamps say."""
    s = make_stream()
    cn = RtpPacket(
        payload_type=13, sequence_number=103, timestamp=1000 + 3 * UNITS, ssrc=1, payload=b"\x40"
    ).serialize()
    # Packets 0-2, CN (seq 103), then audio resumes at seq 104 one second of ticks later.
    resumed = [
        RtpPacket(
            payload_type=PT,
            sequence_number=104 + k,
            timestamp=1000 + 3 * UNITS + 8000 + k * UNITS,
            ssrc=1,
            payload=bytes([10 + k]) * UNITS,
        ).serialize()
        for k in range(3)
    ]
    now = 0.0
    for d in [pkt(0), pkt(1), pkt(2)]:
        s.receive(d, PEER, now)
        now += 0.02
    s.receive(cn, PEER, now)
    now += 1.0
    for d in resumed:
        s.receive(d, PEER, now)
        now += 0.02
    s.flush(now, everything=True)
    assert timeline(s.pop_output()) == [0, 1, 2, ("gap", 8000), 10, 11, 12]
    assert (s.counters.lost, s.counters.other) == (0, 1)


def test_telephone_events_take_sequence_numbers_too() -> None:
    s = make_stream()
    event = RtpPacket(
        payload_type=101, sequence_number=102, timestamp=1000 + 2 * UNITS, ssrc=1, payload=bytes(4)
    ).serialize()
    out = run(s, [pkt(0), pkt(1), event, pkt(3), pkt(4)])
    assert timeline(out) == [0, 1, ("gap", UNITS), 3, 4]
    assert (s.counters.lost, s.counters.other) == (0, 1)


def g722_pkt(i: int, *, ticks: int, seq0: int = 100, ts0: int = 1000) -> bytes:
    """A 20 ms G.722 packet (160 bytes, 160 ticks of RFC 3551's 8 kHz clock) stamped with
    ``ticks`` per packet."""
    return RtpPacket(
        payload_type=9,
        sequence_number=seq0 + i,
        timestamp=ts0 + i * ticks,
        ssrc=1,
        payload=bytes([i % 256]) * 160,
    ).serialize()


def g722_stream(**kw: object) -> MediaStream:
    return make_stream(payload_type=9, other_clock_scale=2, **kw)


def test_g722_with_a_16khz_rtp_clock_is_timed_by_it() -> None:
    """Item 7: 320 ticks per 20 ms: no silence between packets, and a lost packet is 20 ms."""
    s = g722_stream()
    datagrams = [g722_pkt(i, ticks=320) for i in range(10) if i != 6]
    out = run(s, datagrams)
    assert timeline(out) == [0, 1, 2, 3, 4, 5, ("gap", 160), 7, 8, 9]
    assert s.counters.clock_changes == 1 and s.counters.lost == 1


def test_g722_with_the_rfc_clock_is_left_alone() -> None:
    s = g722_stream()
    out = run(s, [g722_pkt(i, ticks=160) for i in range(10)])
    assert timeline(out) == list(range(10))
    assert s.counters.clock_changes == 0


def test_clock_is_found_again_for_a_new_ssrc() -> None:
    """A transfer to a device with the other clock: the new stream's start is weighed too."""
    s = g722_stream()
    first = [g722_pkt(i, ticks=320) for i in range(8)]
    second = [
        RtpPacket(
            payload_type=9,
            sequence_number=5000 + i,
            timestamp=900_000 + i * 160,
            ssrc=2,
            payload=bytes([100 + i]) * 160,
        ).serialize()
        for i in range(8)
    ]
    out = run(s, first + second)
    assert timeline(out) == list(range(8)) + [100 + i for i in range(8)]
    assert s.counters.clock_changes == 2


def test_a_single_odd_step_does_not_switch_the_clock() -> None:
    s = g722_stream()
    datagrams = [g722_pkt(i, ticks=160) for i in range(10)]
    # Packet 5 stamped as if 16 kHz (one glitch): only one pair says so.
    odd = RtpPacket.parse(datagrams[5])
    datagrams[5] = RtpPacket(
        payload_type=9,
        sequence_number=odd.sequence_number,
        timestamp=odd.timestamp + 160,
        ssrc=1,
        payload=odd.payload,
    ).serialize()
    run(s, datagrams)
    assert s.counters.clock_changes == 0


def test_dynamic_payload_type_is_found_from_audio_sized_payloads() -> None:
    """G.726 has no static payload type: the stream takes the dynamic one carrying audio,
    not the telephone-event's 4-byte payloads."""
    s = make_stream(payload_type=2, dynamic_payload_type=True)
    event = RtpPacket(
        payload_type=101, sequence_number=99, timestamp=1000 - UNITS, ssrc=1, payload=bytes(4)
    ).serialize()
    out = run(s, [event] + [pkt(i, pt=112) for i in range(5)])
    assert timeline(out) == list(range(5))
    assert s.payload_type == 112 and s.counters.other == 1


def test_dynamic_payload_type_is_settled_by_audio_of_the_expected_type() -> None:
    """A G.726 phone sending RFC 1890's type 2 keeps it: a later packet of a dynamic type
    (another stream's, a redundancy format) is not taken for the codec's."""
    s = make_stream(payload_type=2, dynamic_payload_type=True)
    out = run(
        s, [pkt(i, pt=2) for i in range(3)] + [pkt(3, pt=112)] + [pkt(i, pt=2) for i in range(4, 6)]
    )
    assert s.payload_type == 2 and s.counters.other == 1
    assert timeline(out) == [0, 1, 2, ("gap", UNITS), 4, 5]
