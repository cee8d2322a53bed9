"""The listening hub on a WAV file written by the recording's writer, without a server: a
listener joins at the next write, gets the file's bytes in 0.1 s frames with their positions,
keeps at most 2 s queued (dropping its own oldest), is held within a 1 s window of what it
acknowledged, and gets the rest and an end once the recording has finished."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callrec.engine import LiveSession
from callrec.media.wav import WavWriter
from callrec.web.listen import Listener, ListenHub
from tests.support.audio import pcm, tone

RATE = 8000
FRAME = 800  # sample frames in 0.1 s


def session(path: str) -> LiveSession:
    return LiveSession(
        uid="a" * 32,
        rec_id=None,
        source="server",
        session_id="1",
        device="",
        direction="out",
        local_number="3001",
        local_name="",
        remote_number="2011",
        remote_name="",
        codec="PCMA",
        peer_address="127.0.0.1",
        media_port=0,
        started_at=datetime.now(UTC),
        duration=0.0,
        bytes_written=0,
        counters={},
        path=path,
    )


@pytest.fixture
def audio() -> bytes:
    return pcm(tone(RATE, 10.0))


async def poll(hub: ListenHub) -> None:
    assert hub.poll_once()
    await asyncio.sleep(0)  # what it handed to the loop is delivered


async def attach(hub: ListenHub, name: str) -> Listener:
    return await hub.attach(session(name), username="u", client="127.0.0.1")


async def test_frames_positions_queue_window_and_end(tmp_path: Path, audio: bytes) -> None:
    writer = WavWriter(tmp_path / "call.wav", sample_rate=RATE)
    writer.write(audio[: 2 * RATE])  # 1 s before anyone listens
    writer.flush()
    hub = ListenHub(None, tmp_path, thread=False)  # polled here, when the test says
    try:
        slow = await attach(hub, "call.wav")
        fast = await attach(hub, "call.wav")
        assert fast.format.sample_rate == RATE and fast.format.channels == 1
        writer.write(audio[2 * RATE : 2 * 4 * RATE])  # 3 s more, in one tick
        writer.flush()
        await poll(hub)
        # Joined at the next write: from 1 s; 3 s is more than a queue holds (2 s).
        first = await fast.get()
        assert first is not None and first.position == RATE + FRAME * 10
        assert first.pcm == audio[2 * first.position : 2 * (first.position + FRAME)]
        assert slow.dropped == 10 and slow.queued == 20
        # An acknowledging listener gets 1 s past what it acknowledged, then waits.
        fast.acknowledge(FRAME)
        taken = [first]
        for _ in range(10):
            frame = await fast.get()
            assert frame is not None
            taken.append(frame)
        assert fast.sent_samples - FRAME == RATE and fast.queued == 9
        # The rest of the file, then the end.
        writer.write(audio[2 * 4 * RATE : 2 * 5 * RATE])
        writer.close()
        hub.finish("a" * 32)
        await poll(hub)
        fast.acknowledge(10**9)
        while (frame := await fast.get()) is not None:
            taken.append(frame)
        assert fast.ended
        assert taken[-1].position + len(taken[-1].pcm) // 2 == 5 * RATE
        heard = b"".join(f.pcm for f in taken)
        assert heard == audio[2 * first.position : 2 * 5 * RATE]
        assert fast.dropped == 10 and fast.sent == len(taken)
    finally:
        hub.close()
        await hub.stop()
