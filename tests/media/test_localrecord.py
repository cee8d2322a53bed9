"""Local (USB) recording by the phone simulator, read back by the reader: the round trip."""

from __future__ import annotations

import asyncio
import wave
from datetime import datetime
from pathlib import Path

import pytest

from callrec.codecs import get_codec
from callrec.media.localfile import HEADER_SIZE, LocalFileHeader, decode, payloads, scan
from callrec.media.localrecord import (
    LocalRecorder,
    LocalRecordError,
    LocalRecordOptions,
    is_paused,
    pause_spans,
    record_packets,
)
from callrec.media.wav import read_wav_info
from callrec.service import Service
from callrec.sim.call import record_call, run_phone
from callrec.sim.phone import build_packets
from tests.support.audio import decode_payloads, tone, write_wav
from tests.support.settings import server_settings
from tests.support.waiting import wait_idle

CODECS = ["PCMA", "PCMU", "G722"]
START = datetime(2026, 11, 26, 16, 11, 30)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("rtp_headers", [True, False], ids=["rtp", "bare"])
def test_simulator_files_read_back_exactly(name: str, rtp_headers: bool, tmp_path: Path) -> None:
    codec = get_codec(name)
    packets = build_packets(
        tone(codec.sample_rate, 3.0), codec, ssrc=0x1234, first_seq=65400, first_ts=7
    )
    unit_size = 172 if rtp_headers else 160
    per_file = 40  # 0.8 s a file: three rollovers in what is left of 3 s
    options = LocalRecordOptions(
        directory=tmp_path / "usb",
        rtp_headers=rtp_headers,
        max_bytes=HEADER_SIZE + per_file * unit_size + unit_size - 1,
        pauses=((0.5, 1.1),),  # 30 packets paused
        start=START,
    )
    paths = record_packets(packets, codec, options)

    kept = [i for i in range(len(packets)) if not 0.5 <= i * 0.02 < 1.1]
    assert len(kept) == 150 - 30
    groups = [kept[i : i + per_file] for i in range(0, len(kept), per_file)]
    assert [len(g) for g in groups] == [40, 40, 40]
    # Named by the phone's clock when each file was opened: the call time of its first unit.
    assert [p.name for p in paths] == [
        "Record_20261126161130.wav",
        "Record_20261126161131.wav",  # opened at 1.4 s (after the pause)
        "Record_20261126161132.wav",  # opened at 2.2 s
    ]
    total = 0.0
    for path, group in zip(paths, groups, strict=True):
        data = path.read_bytes()
        assert len(data) <= options.max_bytes
        info = scan(data)
        assert info.problems == () and not info.damaged
        assert info.header == LocalFileHeader(
            codec=name, unit_size=unit_size, increment=160, data_size=len(group) * unit_size
        )
        assert info.rtp_headers is rtp_headers
        assert info.units == len(group)
        assert info.duration == pytest.approx(len(group) * 0.02)
        assert list(payloads(info, data)) == [packets[i].payload for i in group]
        expected = decode_payloads(codec, [packets[i].payload for i in group])
        assert b"".join(decode(info, data)) == expected
        assert len(expected) == 2 * len(group) * codec.sample_rate // 50
        total += info.duration
    # The paused 0.6 s is left out: 3.0 s streamed, 2.4 s recorded.
    assert total == pytest.approx(3.0 - 0.6)


def test_rollover_in_the_same_second_gets_a_distinct_name(tmp_path: Path) -> None:
    codec = get_codec("PCMA")
    packets = build_packets(tone(codec.sample_rate, 0.2), codec, ssrc=1)
    paths = record_packets(
        packets,
        codec,
        LocalRecordOptions(directory=tmp_path, max_bytes=HEADER_SIZE + 3 * 172, start=START),
    )
    assert [p.name for p in paths] == [
        "Record_20261126161130.wav",
        "Record_20261126161130_1.wav",
        "Record_20261126161130_2.wav",
        "Record_20261126161130_3.wav",
    ]
    assert [scan(p.read_bytes()).units for p in paths] == [3, 3, 3, 1]


def test_pause_to_the_end_and_pause_at_the_start(tmp_path: Path) -> None:
    codec = get_codec("PCMU")
    packets = build_packets(tone(codec.sample_rate, 1.0), codec, ssrc=1)
    paths = record_packets(
        packets,
        codec,
        LocalRecordOptions(directory=tmp_path, pauses=((0.0, 0.2), (0.6, None)), start=START),
    )
    (path,) = paths
    assert path.name == "Record_20261126161130.wav"  # opened at 0.2 s, still 16:11:30
    info = scan(path.read_bytes())
    assert info.units == 20 and info.rtp_headers  # 0.2 s to 0.6 s
    assert list(payloads(info, path.read_bytes())) == [p.payload for p in packets[10:30]]


def test_everything_paused_writes_no_file(tmp_path: Path) -> None:
    codec = get_codec("PCMA")
    packets = build_packets(tone(codec.sample_rate, 0.2), codec, ssrc=1)
    options = LocalRecordOptions(directory=tmp_path / "usb", pauses=((0.0, None),))
    assert record_packets(packets, codec, options) == []
    assert record_packets([], codec, options) == []
    assert not (tmp_path / "usb").exists()


def test_recorder_leaves_header_unannounced_until_closed(tmp_path: Path) -> None:
    codec = get_codec("PCMA")
    packets = build_packets(tone(codec.sample_rate, 0.2), codec, ssrc=1)
    recorder = LocalRecorder(tmp_path, codec=codec, unit_size=172, increment=160, start=START)
    for i, packet in enumerate(packets):
        recorder.write(packet.serialize(), i * 0.02)
    # What a power cut now leaves: units on disk, a header announcing none. Still readable.
    during = scan(recorder.paths[0].read_bytes())
    assert during.units == 10 and during.damaged
    assert recorder.close() == [tmp_path / "Record_20261126161130.wav"]
    after = scan(recorder.paths[0].read_bytes())
    assert after.units == 10 and not after.damaged and after.problems == ()


@pytest.mark.parametrize(
    ("pause_at", "resume_at", "spans"),
    [
        ([], [], ()),
        ([1.0], [2.0], ((1.0, 2.0),)),
        ([1.0, 3.0], [2.0], ((1.0, 2.0), (3.0, None))),
        ([0.0, 2.0], [2.0, 2.5], ((0.0, 2.0), (2.0, 2.5))),
    ],
)
def test_pause_spans(
    pause_at: list[float], resume_at: list[float], spans: tuple[tuple[float, float | None], ...]
) -> None:
    assert pause_spans(pause_at, resume_at) == spans


@pytest.mark.parametrize(
    ("pause_at", "resume_at", "message"),
    [
        ([], [1.0], "1 resume times for 0 pauses: each resume needs a pause before it"),
        ([2.0], [1.0], "resume at 1 s is not after its pause at 2 s"),
        ([1.0, 1.5], [2.0, 3.0], "pause at 1.5 s comes before the previous resume or is negative"),
        ([-1.0], [], "pause at -1 s comes before the previous resume or is negative"),
    ],
)
def test_pause_spans_refused(pause_at: list[float], resume_at: list[float], message: str) -> None:
    with pytest.raises(LocalRecordError) as caught:
        pause_spans(pause_at, resume_at)
    assert str(caught.value) == message


def test_pause_without_resume_must_be_last() -> None:
    with pytest.raises(LocalRecordError, match="has no resume but is not the last"):
        LocalRecordOptions(directory=Path("x"), pauses=((1.0, None), (2.0, 3.0)))


def test_is_paused_bounds() -> None:
    spans = ((1.0, 2.0),)
    assert [is_paused(t, spans) for t in (0.98, 1.0, 1.98, 2.0)] == [False, True, True, False]


def test_size_limit_must_hold_a_unit(tmp_path: Path) -> None:
    with pytest.raises(LocalRecordError, match="leaves no room after the 76-byte header"):
        LocalRecordOptions(directory=tmp_path, max_bytes=76)
    codec = get_codec("PCMA")
    packets = build_packets(tone(codec.sample_rate, 0.1), codec, ssrc=1)
    with pytest.raises(LocalRecordError, match="cannot hold the 76-byte header and one 172-byte"):
        record_packets(packets, codec, LocalRecordOptions(directory=tmp_path, max_bytes=200))


def test_run_phone_local_only(tmp_path: Path) -> None:
    codec = get_codec("G722")
    source = write_wav(tmp_path / "call.wav", tone(codec.sample_rate, 2.0), 16000)
    result = run_phone(
        "127.0.0.1:9",  # never contacted
        codec="G722",
        play=source,
        fast=True,
        local_record=tmp_path / "usb",
        local_rtp_headers=False,
        local_max_bytes=HEADER_SIZE + 60 * 160,
        pause_at=[0.5],
        resume_at=[1.0],
        local_only=True,
    )
    assert result.ok and result.packets_sent == 0 and result.start_answer == {}
    infos = [scan(p.read_bytes()) for p in result.local_files]
    assert [i.units for i in infos] == [60, 15]
    assert sum(i.duration for i in infos) == pytest.approx(1.5)
    assert all(not i.rtp_headers and i.sample_rate == 16000 for i in infos)
    assert "local file:" in result.describe()


def test_run_phone_local_options_need_a_directory(tmp_path: Path) -> None:
    source = write_wav(tmp_path / "call.wav", tone(get_codec("PCMA").sample_rate, 0.1), 8000)
    with pytest.raises(LocalRecordError, match="need --local-record DIR"):
        run_phone("127.0.0.1:9", codec="PCMA", play=source, pause_at=[1.0])


def test_phone_records_locally_what_it_streams_to_the_server(tmp_path: Path) -> None:
    codec = get_codec("PCMA")
    pcm = tone(codec.sample_rate, 1.0)
    settings = server_settings(tmp_path)

    async def call() -> list[Path]:
        server = Service(settings)
        await server.start()
        try:
            result = await record_call(
                "127.0.0.1",
                server.control_port,
                codec="PCMA",
                pcm=pcm,
                realtime=False,
                local=LocalRecordOptions(directory=tmp_path / "usb", start=START),
            )
            assert result.ok, result.error
            await wait_idle(server)  # the server's recording is finished
            return result.local_files
        finally:
            await server.stop()

    (local,) = asyncio.run(call())
    (recorded,) = list(settings.recordings_dir.rglob("*.wav"))
    data = local.read_bytes()
    info = scan(data)
    assert info.rtp_headers and info.units == 50
    # The server's recording and the phone's own file hold the same audio.
    with wave.open(str(recorded), "rb") as wav:
        server_pcm = wav.readframes(wav.getnframes())
    assert b"".join(decode(info, data)) == server_pcm
    assert read_wav_info(recorded).duration == pytest.approx(info.duration)
