"""RTP sent by FFmpeg, an implementation we did not write, recorded after our handshake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from callrec.service import Service
from callrec.sim.phone import PhoneCall
from tests.support.audio import speech_like_signal, write_wav
from tests.support.ffmpeg import FFMPEG, needs_ffmpeg, run_ffmpeg
from tests.support.recording import only_recording, read_recording
from tests.support.waiting import wait_catalogued

FFMPEG_ENCODER = {
    "PCMA": ("pcm_alaw", "alaw", 8000),
    "PCMU": ("pcm_mulaw", "mulaw", 8000),
    "G722": ("g722", "g722", 16000),
}


@needs_ffmpeg
@pytest.mark.parametrize("codec", ["PCMA", "PCMU", "G722"])
async def test_ffmpeg_rtp_stream_is_recorded_exactly(
    server: Service, tmp_path: Path, codec: str
) -> None:
    encoder, raw_format, rate = FFMPEG_ENCODER[codec]
    source = write_wav(tmp_path / "in.wav", speech_like_signal(1.0, rate), rate)
    call = PhoneCall("127.0.0.1", server.control_port, session_id="ff", codec=codec)
    answer = await call.start()
    assert answer["result"] == "success"
    port = int(answer["port"])
    sdp = tmp_path / "out.sdp"
    proc = await asyncio.create_subprocess_exec(
        FFMPEG or "ffmpeg",
        "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-i", str(source), "-c:a", encoder, "-ar", str(rate), "-ac", "1",
        "-f", "rtp", "-sdp_file", str(sdp),
        f"rtp://127.0.0.1:{port}?localaddr=127.0.0.1&pkt_size=172",
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    # FFmpeg has exited: every datagram it sent is queued on the session's port, and the stop
    # reads what the kernel queued before it ends the recording.
    assert (await call.stop())["result"] == "success"
    await call.close()
    await wait_catalogued(server)  # record first: the row follows the answer
    rec = only_recording(server)
    samples, got_rate = read_recording(server, rec.id)
    assert got_rate == rate
    # The reference: FFmpeg's own encoding of the same input, decoded by FFmpeg.
    encoded = run_ffmpeg(
        "-i", str(source), "-c:a", encoder, "-ar", str(rate), "-f", raw_format, "-"
    )
    in_args = ["-f", raw_format] + (["-ar", "8000", "-ac", "1"] if codec != "G722" else [])
    reference = np.frombuffer(
        run_ffmpeg(*in_args, "-i", "pipe:0", "-f", "s16le", "-", data=encoded), "<i2"
    )
    assert rec.packets_lost == 0 and rec.packets_malformed == 0
    np.testing.assert_array_equal(samples, reference[: len(samples)])
    assert len(reference) - len(samples) < rate * 0.05  # at most FFmpeg's last partial packet
