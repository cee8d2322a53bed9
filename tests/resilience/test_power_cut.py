"""What a power cut leaves: a real ``callrec serve`` records a call from the simulated phone,
is killed (SIGKILL) at a point chosen by what its files show, and its WAV is copied as the
disk has it at that moment, not as the page cache does.

The copy is the file up to its first page that is dirty or under write-back
(:func:`tests.support.pagecache.disk_copy`, cachestat): those pages would be lost with the
power. The WAV's header page is rewritten by every flush, so it is taken as it is: the disk
holds an older header over the same bytes, and start-up recovery rewrites the header from
the file's size anyway.

The kill point is chosen without timing. The test waits until the header announces two
seconds of audio (one tick's flush is complete), then until the file is longer than that
(a later tick's flush has begun). A tick's flush and its sync run one after the other on the
engine's one media I/O thread before the next tick's flush, so at the kill every byte that
header announced has been synced: the disk must hold all of it, but for the page it ends in
(which the later tick's append dirtied again). With ``sync_mode = off`` this fails: the
kernel writes pages back only after 30 s, so nearly the whole file is still in memory.

The copy is then put in the file's place, as the disk would give it back after the power
returns, and a restarted server recovers it: row ``recovered`` / ``crash``, its duration
what the copy holds, every sample the decode of what the phone sent.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import numpy as np
import pytest

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.media.wav import HEADER_SIZE, WavError, WavHeader
from callrec.sim.phone import PhoneCall
from tests.support import pagecache
from tests.support.audio import read_wav
from tests.support.data import encoded
from tests.support.net import free_tcp_port
from tests.support.rtp import rtp_packets
from tests.support.serve import start_serve, terminate
from tests.support.waiting import wait_for

#: Bytes per second of the recording: 8 kHz mono 16-bit (a PCMA call).
BYTE_RATE = 16000
#: Audio the header must announce before the kill point is chosen.
ANNOUNCED = 2 * BYTE_RATE
#: Waits for the server's ticks: generous for a loaded machine, never a timing assertion.
WAIT = 30.0


def announced(path: Path) -> int:
    """Data bytes the WAV's header announces now; 0 until there is a whole header (or while
    a read catches it being rewritten: its two sizes then disagree)."""
    try:
        with path.open("rb") as file:
            return WavHeader.parse(file.read(HEADER_SIZE)).data_size
    except (OSError, WavError):
        return 0


@pytest.mark.parametrize("mode", ["syncfs", "fdatasync"])
async def test_a_power_cut_keeps_every_tick_synced_before_it(tmp_path: Path, mode: str) -> None:
    try:
        pagecache.check_supported(tmp_path)
    except pagecache.Unsupported as exc:
        pytest.skip(str(exc))
    port = free_tcp_port()
    data = encoded("PCMA") * 4  # 8 s: more than the call lasts until the kill
    packets = rtp_packets("PCMA", data)
    reference = np.frombuffer(get_codec("PCMA").decoder().decode(data), "<i2")
    proc = start_serve(tmp_path, port, sync_mode=mode)  # the default sync_interval
    call = PhoneCall("127.0.0.1", port, session_id="cut", codec="PCMA", answer_timeout=10)
    sender: asyncio.Task[int] | None = None
    try:
        assert (await call.start())["result"] == "success"
        sender = asyncio.create_task(call.send_packets(packets, realtime=True))
        began = asyncio.get_running_loop().time()
        root = tmp_path / "recordings"
        path: Path = await wait_for(
            lambda: next(root.rglob("*.wav"), None), what="the call's WAV file", timeout=WAIT
        )
        synced = await wait_for(
            lambda: (n := announced(path)) >= ANNOUNCED and n,
            what=f"the header to announce {ANNOUNCED} bytes",
            timeout=WAIT,
        )
        await wait_for(
            lambda: path.stat().st_size > HEADER_SIZE + synced,
            what="a later tick to write",
            timeout=WAIT,
        )
        proc.send_signal(signal.SIGKILL)  # the kill point
        proc.wait(10)
        # For the failure message only: packets are paced every 20 ms from ``began``.
        sent_seconds = asyncio.get_running_loop().time() - began
        states = pagecache.page_states(path)
        copy = tmp_path / "as-on-disk.wav"
        kept = pagecache.disk_copy(path, copy)
    finally:
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await call.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # Every page the synced header announced is on the disk, but the one it ends in.
    must = (HEADER_SIZE + synced) // pagecache.PAGE
    lost = states.find("D", 1)
    what = (
        f"pages ('D': only in memory) {states}; the header announced {synced} data bytes "
        f"(through page {must}) before a later tick wrote; about {sent_seconds:.2f} s sent "
        f"at the kill"
    )
    assert lost < 0 or lost >= must, what
    assert kept >= must * pagecache.PAGE, what

    # After the power cut: the disk's copy in the file's place, and a restart recovers it.
    path.write_bytes(copy.read_bytes())
    proc = start_serve(tmp_path, port, sync_mode=mode)
    assert terminate(proc) == 0
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        (row,) = catalog.find()
    assert (row.status, row.stop_reason) == ("recovered", "crash")
    frames, rate = read_wav(path)
    assert rate == 8000
    assert len(frames) == (kept - HEADER_SIZE) // 2, what
    assert row.duration == pytest.approx(len(frames) / 8000)
    np.testing.assert_array_equal(frames, reference[: len(frames)])
