"""End to end on loopback: a simulated phone records calls to a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.data import encoded
from tests.support.ffmpeg import ffmpeg_samples, needs_ffmpeg
from tests.support.recording import only_recording, read_recording, record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings
from tests.support.waiting import wait_catalogued, wait_idle, wait_received

PACKET = 160


def reference_with_gaps(codec: str, packets: list[RtpPacket], kept: list[int]) -> np.ndarray:
    """FFmpeg's decode of the packets that were written, silence where the others were."""
    c = get_codec(codec)
    decoded = ffmpeg_samples(codec, b"".join(packets[i].payload for i in kept))
    out = np.zeros(
        sum(
            c.samples_for_timestamp(c.timestamp_units(len(p.payload)))
            for p in packets[kept[0] : kept[-1] + 1]
        ),
        np.int16,
    )
    pos_in = 0
    for i in kept:
        n = c.samples_for_timestamp(c.timestamp_units(len(packets[i].payload)))
        start = sum(
            c.samples_for_timestamp(c.timestamp_units(len(p.payload))) for p in packets[kept[0] : i]
        )
        out[start : start + n] = decoded[pos_in : pos_in + n]
        pos_in += n
    return out


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["PCMA", "PCMU", "G722"])
async def test_record_each_codec_equals_ffmpeg_decode(server: Service, codec: str) -> None:
    data = encoded(codec)
    packets = rtp_packets(codec, data)
    answer = await record(server, codec, packets, remote_name="Иван Петров", local_name="Desk")
    assert answer["server"] == "127.0.0.1" and int(answer["port"]) > 0
    rec = only_recording(server)
    samples, rate = read_recording(server, rec.id)
    expected_rate = 16000 if codec == "G722" else 8000
    assert rate == expected_rate
    np.testing.assert_array_equal(samples, ffmpeg_samples(codec, data))
    info = soundfile.info(str(server.root / rec.path))
    assert info.samplerate == expected_rate and info.frames == len(samples)
    # The catalogue row has every field the phone sent and the stream's counters.
    assert rec.status == "complete" and rec.stop_reason == "phone_stop"
    assert rec.phone_stop_reason == "hangup"
    assert (rec.session_id, rec.device, rec.direction) == ("15082", "0c383e0e709a", "out")
    assert (rec.local_number, rec.remote_number) == ("3001", "2011")
    assert (rec.local_name, rec.remote_name) == ("Desk", "Иван Петров")
    assert rec.codec == codec and rec.sample_rate == expected_rate
    assert rec.peer_address == "127.0.0.1" and rec.media_port == int(answer["port"])
    assert rec.packets_received == len(packets)
    assert (
        rec.packets_lost,
        rec.packets_late,
        rec.packets_duplicate,
        rec.packets_foreign,
        rec.packets_malformed,
    ) == (0, 0, 0, 0, 0)
    assert rec.duration == pytest.approx(len(samples) / rate)
    assert rec.size_bytes == (server.root / rec.path).stat().st_size
    assert rec.sha256 is not None and len(rec.sha256) == 64
    assert rec.end_time is not None and rec.end_time >= rec.start_time
    name = Path(rec.path)
    assert name.parent.name == rec.start_time.astimezone().strftime("%Y-%m-%d")
    assert name.name.startswith("out_3001_2011_0c383e0e709a_")


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["PCMA", "G722"])
async def test_loss_reorder_duplicates_with_fixed_pattern(server: Service, codec: str) -> None:
    packets = rtp_packets(codec, encoded(codec))
    lost = {5, 6, 20, 41, 77}
    order = [i for i in range(len(packets)) if i not in lost]
    # Swap some neighbours (reorder within the window) and repeat some packets.
    for a in (10, 30, 60):
        j = order.index(a)
        order[j], order[j + 1] = order[j + 1], order[j]
    order.insert(order.index(50) + 2, 50)
    order.insert(order.index(70) + 1, 70)
    await record(server, codec, [packets[i] for i in order])
    rec = only_recording(server)
    samples, _rate = read_recording(server, rec.id)
    kept = sorted(set(order))
    np.testing.assert_array_equal(samples, reference_with_gaps(codec, packets, kept))
    c = get_codec(codec)
    assert len(samples) == c.samples_for_timestamp(len(packets) * PACKET)
    assert (rec.packets_lost, rec.packets_duplicate, rec.packets_late) == (len(lost), 2, 0)
    assert rec.packets_received == len(order)


@needs_ffmpeg
async def test_new_ssrc_after_hold_continues_same_recording(server: Service) -> None:
    codec = "PCMU"
    packets = rtp_packets(codec, encoded(codec))
    first = packets[:40]
    second = rtp_packets(codec, encoded(codec), ssrc=0xBEEF, seq0=30000, ts0=99999)[40:]
    call = PhoneCall("127.0.0.1", server.control_port, session_id="hold", codec=codec)
    assert (await call.start())["result"] == "success"
    await call.send_packets(first, realtime=False)
    await asyncio.sleep(0.5)  # on hold: half a second without RTP, what the test is about
    await call.send_packets(second, realtime=False)
    await wait_received(server, "hold", len(first) + len(second))
    await call.stop()
    await call.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    assert rec.ssrc_changes == 1 and rec.packets_lost == 0
    reference = ffmpeg_samples(codec, encoded(codec))
    np.testing.assert_array_equal(samples[: 40 * 160], reference[: 40 * 160])
    np.testing.assert_array_equal(samples[-60 * 160 :], reference[40 * 160 :])
    hold = len(samples) - len(reference)
    assert 0.3 * 8000 < hold < 1.5 * 8000  # the hold became silence of about its length
    assert not samples[40 * 160 : 40 * 160 + hold].any()


async def test_foreign_source_never_reaches_the_call(server: Service) -> None:
    # The call's socket takes only the phone's address (media latching): the kernel drops
    # the intruder's packets before they take room in its queue.
    codec = "PCMA"
    packets = rtp_packets(codec, encoded(codec))[:20]
    call = PhoneCall("127.0.0.1", server.control_port, session_id="f1", codec=codec)
    answer = await call.start()
    intruder = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.2", 0)
    )
    for p in rtp_packets(codec, bytes(160 * 5), ssrc=666):
        intruder[0].sendto(p.serialize(), ("127.0.0.1", int(answer["port"])))
    intruder[0].close()
    await call.send_packets(packets, realtime=False)
    await wait_received(server, "f1", len(packets))
    await call.stop()
    await call.close()
    await wait_catalogued(server)
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == 20 * 160
    assert rec.packets_foreign == 0 and rec.packets_received == 20


async def test_connection_dropped_mid_call_keeps_recording(server: Service) -> None:
    codec = "PCMA"
    packets = rtp_packets(codec, encoded(codec))[:30]
    call = PhoneCall("127.0.0.1", server.control_port, session_id="drop", codec=codec)
    assert (await call.start())["result"] == "success"
    await call.send_packets(packets, realtime=False)
    await wait_received(server, "drop", len(packets))
    await call.abort()
    await wait_idle(server)  # the lost connection ended the recording
    rec = only_recording(server)
    assert rec.status == "complete" and rec.stop_reason == "connection_lost"
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == 30 * 160
    await call.close()


async def test_shutdown_finalises_open_recordings(tmp_path: Path) -> None:
    srv = Service(server_settings(tmp_path))
    await srv.start()
    call = PhoneCall("127.0.0.1", srv.control_port, session_id="sd", codec="PCMA")
    assert (await call.start())["result"] == "success"
    await call.send_packets(rtp_packets("PCMA", encoded("PCMA"))[:10], realtime=False)
    await wait_received(srv, "sd", 10)
    await srv.stop()
    await call.close()
    catalog = Catalog(srv.settings.database_url)
    (rec,) = catalog.find()
    assert rec.status == "complete" and rec.stop_reason == "shutdown"
    assert rec.duration == pytest.approx(0.2)
    catalog.close()


async def test_stop_right_after_the_last_packet_keeps_every_packet(
    server: Service,
) -> None:
    # A busy server may not have read the socket yet when the stop arrives: what the
    # kernel queued before the stop still belongs to the recording.
    packets = rtp_packets("PCMA", encoded("PCMA"))
    call = PhoneCall("127.0.0.1", server.control_port, session_id="q", codec="PCMA")
    assert (await call.start())["result"] == "success"
    # Stand in for a loop too busy to read: the datagrams stay queued in the kernel.
    (session,) = server.phone.sessions.values()
    session.source.stop_reading()
    await call.send_packets(packets, realtime=False)
    assert (await call.stop())["result"] == "success"
    await call.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    rec = only_recording(server)
    samples, _ = read_recording(server, rec.id)
    assert len(samples) == len(packets) * 160
    assert rec.packets_received == len(packets) and rec.packets_lost == 0
