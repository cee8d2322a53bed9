"""The load generator: its packets, its verification and a small bounded load test.

No timing assertions: the figures (CPU, latencies) are only checked to be there.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec.codecs import get_codec
from callrec.rtp.packet import RtpPacket
from callrec.service import Service
from callrec.sim.audioloop import AudioLoop
from callrec.sim.loadrun import LoadError, LoadOptions, MediaTarget, ServerTarget
from callrec.sim.loadtest import load_callrec
from callrec.sim.meters import ProcessMeter, process_cpu_seconds, process_rss_kib
from callrec.sim.report import sample_indices, verify_recording
from callrec.sim.senders import run_load
from tests.support.audio import write_wav
from tests.support.net import udp_receivers
from tests.support.settings import server_settings


@pytest.mark.parametrize("codec", ["PCMA", "G722"])
async def test_load_against_a_server_loses_nothing_and_verifies(tmp_path: Path, codec: str) -> None:
    settings = server_settings(tmp_path)
    server = Service(settings)
    await server.start()
    try:
        options = LoadOptions(calls=5, seconds=2, ramp=50, codec=codec, verify=5, senders=1)
        target = ServerTarget(
            host="127.0.0.1",
            port=server.control_port,
            meter=ProcessMeter.of([os.getpid()]),
            database_url=settings.database_url,
            recordings_dir=settings.recordings_dir,
        )
        report = await load_callrec(options, target)
    finally:
        await server.stop()
    assert report.problems == []
    assert report.ok
    assert report.calls_ok == 5
    assert report.packets_sent == 5 * 100
    assert report.packets_received == report.packets_recorded == report.packets_sent
    assert report.loss_percent == 0 and report.late_percent == 0
    assert report.kernel_drops == 0
    assert report.verified == 5 and report.verify_failed == 0
    assert all(c.audio_frames == 100 and c.silent_frames == 0 for c in report.checks)
    data = report.as_dict()
    for key in (
        "cpu_percent",
        "cpu_per_call_percent",
        "rss_per_call_kib",
        "stop_ms_median",
        "stop_ms_p99",
        "stop_row_ms_median",
        "stop_row_ms_p99",
        "start_ms_p99",
        "tick_lag_ms_p99",
    ):
        assert data[key] is not None, key
    assert data["ok"] is True
    json.dumps(data)


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


async def test_media_target_packets_are_a_phone_stream() -> None:
    """Each call: consecutive sequence numbers, timestamps 160 apart, one SSRC, the marker on
    the first packet only, and the loop's payloads from the call's offset on."""
    socks = udp_receivers(3)
    try:
        options = LoadOptions(calls=3, seconds=1, ramp=100, codec="PCMU", verify=0, senders=1)
        audio = AudioLoop.for_options(options)
        target = MediaTarget(host="127.0.0.1", ports=[s.getsockname()[1] for s in socks])
        run = await run_load(options, target, audio=audio)
        ssrcs = set()
        for call, sock in zip(run.calls, socks, strict=True):
            assert call.ok and call.packets_sent == 50
            packets = [RtpPacket.parse(d) for d in _drain(sock)]
            assert len(packets) == 50
            assert [p.marker for p in packets] == [True] + [False] * 49
            assert {p.payload_type for p in packets} == {0}
            assert len({p.ssrc for p in packets}) == 1
            ssrcs.add(packets[0].ssrc)
            for k, (a, b) in enumerate(itertools.pairwise(packets)):
                assert (b.sequence_number - a.sequence_number) % 65536 == 1, k
                assert (b.timestamp - a.timestamp) % (1 << 32) == 160, k
            assert [p.payload for p in packets] == [
                audio.payload(call.audio_offset + k) for k in range(50)
            ]
        assert len(ssrcs) == 3
    finally:
        for sock in socks:
            sock.close()


# -- verification ----------------------------------------------------------------------------


def _recorded(audio: AudioLoop, offset: int, count: int, lost: set[int]) -> bytes:
    """What a recorder writes: decoded payloads in order, silence (decoding nothing) for lost
    packets, as callrec does."""
    decoder = audio.codec.decoder()
    silence = bytes(2 * audio.frame_samples)
    return b"".join(
        silence if k in lost else decoder.decode(audio.payload(offset + k)) for k in range(count)
    )


@pytest.mark.parametrize("codec", ["PCMA", "PCMU", "G722"])
def test_verify_accepts_exact_audio_and_gaps(tmp_path: Path, codec: str) -> None:
    audio = AudioLoop.build(get_codec(codec))
    rate = audio.codec.sample_rate
    exact = write_wav(tmp_path / "exact.wav", _recorded(audio, 7, 120, set()), rate)
    check = verify_recording(exact, audio, 120, audio_offset=7, expected_audio_frames=120)
    assert check.ok and check.audio_frames == 120 and check.silent_frames == 0

    gaps = write_wav(tmp_path / "gaps.wav", _recorded(audio, 7, 120, {5, 6, 60}), rate)
    check = verify_recording(gaps, audio, 120, audio_offset=7, expected_audio_frames=117)
    assert check.ok and check.audio_frames == 117 and check.silent_frames == 3

    # The first two packets and the last one never arrived: the file starts at packet 2.
    decoder = audio.codec.decoder()
    body = b"".join(decoder.decode(audio.payload(7 + k)) for k in range(2, 119))
    cut = write_wav(tmp_path / "cut.wav", body, rate)
    check = verify_recording(cut, audio, 120, audio_offset=7)
    assert check.ok
    assert (check.leading_missing, check.trailing_missing, check.audio_frames) == (2, 1, 117)


def test_verify_fails_on_a_changed_sample(tmp_path: Path) -> None:
    audio = AudioLoop.build(get_codec("G722"))
    pcm = bytearray(_recorded(audio, 0, 100, set()))
    pcm[2 * 320 * 50 + 10] ^= 1  # one bit of one sample in packet 50
    path = write_wav(tmp_path / "bad.wav", bytes(pcm), 16000)
    check = verify_recording(path, audio, 100, call=3)
    assert not check.ok
    assert check.mismatched == 1
    assert check.problem == "1 of 100 frames differ from the audio sent (first at 1.00 s)"


def test_verify_names_a_gap_left_unfilled(tmp_path: Path) -> None:
    """Three packets lost and no silence in their place: everything after is early."""
    audio = AudioLoop.build(get_codec("PCMA"))
    decoder = audio.codec.decoder()
    body = b"".join(decoder.decode(audio.payload(k)) for k in [*range(40), *range(43, 100)])
    check = verify_recording(write_wav(tmp_path / "a.wav", body, 8000), audio, 100)
    assert check.problem == (
        "57 of 97 frames differ from the audio sent (first at 0.80 s: the audio jumps 3 "
        "packets ahead (mod 500), a gap left unfilled)"
    )


def test_verify_fails_on_a_wrong_count_rate_or_offset(tmp_path: Path) -> None:
    audio = AudioLoop.build(get_codec("PCMA"))
    path = write_wav(tmp_path / "a.wav", _recorded(audio, 0, 50, set()), 8000)
    check = verify_recording(path, audio, 50, expected_audio_frames=49)
    assert check.problem == "the file has 50 packets of audio, the recorder counts 49 recorded"
    check = verify_recording(path, audio, 50, audio_offset=200)
    assert check.problem == "the first frame of the file is none of the first packets sent"
    wrong_rate = write_wav(tmp_path / "b.wav", _recorded(audio, 0, 50, set()), 16000)
    check = verify_recording(wrong_rate, audio, 50)
    assert check.problem == "1 channel(s), 16-bit, 16000 Hz; expected mono 16-bit 8000 Hz"
    check = verify_recording(path, audio, 40)
    assert check.problem == "the file holds 50 packets of audio, 40 were sent"
    check = verify_recording(tmp_path / "missing.wav", audio, 50)
    assert not check.ok and check.problem.startswith("cannot read the file")


def test_audio_loop_refuses_digital_silence() -> None:
    pcm = np.ones(16000, dtype=np.int16) * 3000
    pcm[8000:8160] = 0
    with pytest.raises(LoadError, match="digital silence at 1000 ms"):
        AudioLoop.build(get_codec("PCMU"), pcm)


def test_options_and_helpers() -> None:
    with pytest.raises(LoadError, match="calls must be at least 1"):
        LoadOptions(calls=0, seconds=1)
    with pytest.raises(LoadError, match="ramp must be > 0"):
        LoadOptions(calls=1, seconds=1, ramp=0)
    assert LoadOptions(calls=1, seconds=2.5).packets_per_call == 125
    assert sample_indices(list(range(100)), 3) == [0, 50, 99]
    assert sample_indices([4, 5], 10) == [4, 5]
    assert sample_indices([], 3) == []
    cpu, rss = process_cpu_seconds(os.getpid()), process_rss_kib(os.getpid())
    assert cpu is not None and cpu > 0 and rss is not None and rss > 0


def _spawn_loadtest(tmp_path: Path, *args: str) -> dict[str, Any]:
    """`callrec loadtest --spawn ... --json` as a user runs it; its JSON report."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "callrec",
            "loadtest",
            "--spawn",
            *args,
            "--json",
            "--quiet",
            "--workdir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] and report["problems"] == []
    return report


def test_cli_spawn_runs_a_server_and_reports_json(tmp_path: Path) -> None:
    """`callrec loadtest --spawn` end to end: its own server, two sender processes, JSON."""
    report = _spawn_loadtest(
        tmp_path,
        "--calls",
        "4",
        "--seconds",
        "1",
        "--ramp",
        "20",
        "--senders",
        "2",
        "--verify",
        "4",
    )
    assert report["calls_ok"] == 4 and report["packets_received"] == 200
    assert report["verified"] == 4 and report["verify_failed"] == 0
    assert report["processes"] >= 1 and report["rss_per_call_kib"] is not None
    assert (tmp_path / "run" / "server.log").exists()


def test_cli_spawn_with_two_workers_counts_every_process(tmp_path: Path) -> None:
    """`--server-args "--workers 2"`: calls land in both processes; CPU and memory are read
    over the process tree, and every call is verified."""
    report = _spawn_loadtest(
        tmp_path,
        *("--calls", "12", "--seconds", "1", "--ramp", "50", "--verify", "12"),
        *("--server-args", "--workers 2"),
    )
    assert report["calls_ok"] == 12 and report["packets_received"] == 600
    assert report["verified"] == 12 and report["verify_failed"] == 0
    assert report["processes"] >= 2
    log = (tmp_path / "run" / "server.log").read_text()
    assert "started 1 media workers" in log and "[worker 1]" in log
