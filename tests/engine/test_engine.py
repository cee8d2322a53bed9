"""The recording engine's one lifecycle, driven by a media source of the tests' own.

Real files (opened by a standard reader), a real SQLite catalogue through the catalogue
writer, the engine's own tick on the event loop: only the source is the tests'.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import soundfile

from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog.replay import JournalCheckpoint
from callrec.codecs import get_codec
from callrec.engine import (
    STOP_REASONS,
    Companion,
    LiveSession,
    Original,
    Recording,
    RecordingEngine,
    RecordingSpec,
    journalfile,
)
from callrec.engine import files as files_module
from callrec.engine.journalfile import read_sidecar, sidecar_path
from callrec.exceptions import ResourceError
from callrec.media.wav import WavWriter
from callrec.rtp.counters import StreamCounters
from callrec.service import standalone_engine
from tests.support.settings import server_settings
from tests.support.threads import flush_threads
from tests.support.waiting import wait_event, wait_for

PCMA = get_codec("PCMA")
#: 20 ms of a 440 Hz tone at 8 kHz, as int16 little-endian.
FRAME = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()


class Source:
    """A media source that releases ``frame`` at each pump, on each of ``outputs``."""

    def __init__(
        self,
        *,
        outputs: int = 1,
        frame: bytes = FRAME,
        port: int | None = 4242,
        fail: bool = False,
    ) -> None:
        self.outputs = outputs
        self.frame = frame
        self.port = port
        self.fail = fail
        self.pumped = 0
        self.closed = 0
        self.stats = StreamCounters()

    @property
    def media_port(self) -> int | None:
        return self.port

    def _out(self, frame: bytes) -> Sequence[bytes]:
        stereo = np.repeat(np.frombuffer(frame, "<i2"), 2).astype("<i2").tobytes()
        return (frame,) if self.outputs == 1 else (stereo, frame)

    def pump(self, now: float) -> Sequence[bytes]:
        if self.fail:
            raise RuntimeError("a bug in this source")
        self.pumped += 1
        self.stats.received += 1
        return self._out(self.frame)

    def drain(self, now: float) -> Sequence[bytes]:
        return self._out(self.frame)

    def cut_points(self) -> Sequence[int]:
        return ()

    def counters(self) -> StreamCounters:
        return self.stats

    def close(self) -> None:
        self.closed += 1


def spec(source: str = "server", **kw: Any) -> RecordingSpec:
    values: dict[str, Any] = dict(
        source=source,
        session_id=f"s-{source}",
        codec=PCMA,
        device="0c383e0e709a",
        direction="out",
        local_number="3001",
        remote_number="2011",
        peer_address="127.0.0.1",
        name_fields={
            "dir": "out",
            "local_number": "3001",
            "remote_number": "2011",
            "device": "0c383e0e709a",
            "id": source,
        },
    )
    values.update(kw)
    return RecordingSpec(**values)


class Rig:
    def __init__(self, engine: RecordingEngine, catalog: Catalog, root: Path) -> None:
        self.engine = engine
        self.catalog = catalog
        self.root = root
        self.events: list[tuple[str, LiveSession]] = []
        engine.live.add_observer(lambda event, live: self.events.append((event, live)))

    async def row(self, rec: Recording[Any]) -> RecordingInfo:
        """``rec``'s row once the journal has applied everything appended so far."""
        await wait_event(self.engine.journal.applied, what="the journal applied")
        row = self.catalog.get_uid(rec.uid)
        assert row is not None, f"no row for {rec.uid}"
        return row


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    # The engine over a journal of its own, as `callrec file import` has it.
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Rig:
            settings = server_settings(tmp_path, **{"sync_interval": 0.02, **overrides})
            catalog = stack.enter_context(Catalog(settings.database_url))
            engine = await stack.enter_async_context(
                standalone_engine(settings, catalog, name="test")
            )
            return Rig(engine, catalog, settings.recordings_dir.resolve())

        yield make


async def test_open_write_finish_catalogue_notify(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    source = Source()
    rec = await rig.engine.open(spec(), lambda: source)
    row = await rig.row(rec)
    assert row.status == "recording" and row.media_port == 4242 and rec.rec_id == row.id
    assert rec.relpath == f"{rec.relpath[:10]}/out_3001_2011_0c383e0e709a_{rec.relpath[-23:]}"
    await wait_for(lambda: source.pumped >= 5, what="five ticks")
    finished = await rig.engine.finish(rec, "phone_stop", stop_fields={"reason": "hangup"})
    assert finished is not None and (finished.status, finished.stop_reason) == (
        "complete",
        "phone_stop",
    )
    row = await rig.row(rec)
    assert (row.status, row.stop_reason, row.phone_stop_reason) == (
        "complete",
        "phone_stop",
        "hangup",
    )
    # Every pump's PCM and the drain's, in a file a standard reader opens.
    samples, rate = soundfile.read(str(rig.root / row.path), dtype="int16")
    assert rate == 8000 and len(samples) == 160 * (source.pumped + 1)
    assert samples[:160].tobytes() == FRAME
    assert row.duration == pytest.approx(len(samples) / 8000)
    assert row.sha256 == hashlib.sha256((rig.root / row.path).read_bytes()).hexdigest()
    assert row.packets_received == source.pumped
    assert source.closed == 1
    assert [(event, live.uid, live.source) for event, live in rig.events] == [
        ("started", rec.uid, "server"),
        ("finished", rec.uid, "server"),
    ]
    # The sidecar beside the file tells the same as the row.
    start, end = read_sidecar(sidecar_path(rig.root / row.path))
    assert start.rec.uid == rec.uid and start.rec.path == row.path
    assert end is not None and end.finish.sha256 == row.sha256
    assert rig.engine.recordings == {} and rig.engine.idle.is_set()
    # A second finish is a no-op.
    assert await rig.engine.finish(rec, "shutdown") is None


async def test_flushes_run_on_the_media_io_thread_not_the_event_loop(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = flush_threads(monkeypatch)
    rig: Rig = await make_rig()
    sources = [Source(), Source(outputs=2)]
    recs = [
        await rig.engine.open(spec("server"), lambda: sources[0]),
        await rig.engine.open(
            spec("sip", channels=2, companions=(Companion(suffix=".mix.wav"),)),
            lambda: sources[1],
        ),
    ]
    await wait_for(lambda: len(threads) >= 8, what="flushes")
    for rec in recs:
        await rig.engine.finish(rec, "hangup")
    assert threads and all(name.startswith("media-io") for name in threads), set(threads)


async def test_a_stuck_catalogue_delays_no_open_and_no_finish(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig: Rig = await make_rig(max_sessions=2, max_sessions_per_device=16)
    real = rig.catalog.apply_journal
    release = threading.Event()

    def stuck(entries: Any) -> Any:
        release.wait(10)  # the catalogue hangs
        return real(entries)

    monkeypatch.setattr(rig.catalog, "apply_journal", stuck)
    sources = [Source() for _ in range(3)]
    recs = [
        await rig.engine.open(spec(session_id=str(i)), lambda s=s: s)
        for i, s in enumerate(sources[:2])
    ]
    with pytest.raises(ResourceError) as caught:  # the limits still hold, from memory
        await rig.engine.open(spec(session_id="2"), lambda: sources[2])
    assert caught.value.reason == "busy" and sources[2].closed == 0
    await wait_for(lambda: all(s.pumped >= 3 for s in sources[:2]), what="three ticks each")
    for rec in recs:
        finished = await rig.engine.finish(rec, "phone_stop")
        assert finished is not None and finished.status == "complete" and finished.rec_id is None
    assert rig.engine.idle.is_set() and not rig.engine.journal.applied.is_set()
    assert rig.engine.journal.status().backlog == 4  # two starts, two finishes
    release.set()
    for rec in recs:
        row = await rig.row(rec)
        assert (row.status, row.stop_reason) == ("complete", "phone_stop")
        assert row.duration == pytest.approx(160 * (row.packets_received + 1) / 8000)
    assert rig.catalog.count() == 2


async def test_per_device_limit_holds_across_sources(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig(max_sessions_per_device=1)
    phone = await rig.engine.open(spec("server", device="aa"), Source)
    with pytest.raises(ResourceError, match="device 'aa'") as caught:
        await rig.engine.open(spec("sip", device="aa"), Source)
    assert caught.value.reason == "busy"
    await rig.engine.finish(phone, "phone_stop")


async def test_disk_reserve_refuses_calls_and_imports(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig(disk_reserve_bytes=1 << 62)
    for live in (True, False):
        source = Source()
        with pytest.raises(ResourceError, match="reserve") as caught:
            await rig.engine.open(spec(live=live), lambda s=source: s)
        assert caught.value.reason == "disk_full"
        assert source.closed == 0  # never made: admission comes first
    assert rig.catalog.count() == 0 and rig.engine.idle.is_set()


async def test_a_failing_open_closes_the_source_and_frees_its_place(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig: Rig = await make_rig(max_sessions=1)

    def broken(path: Path, start: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(journalfile, "create_sidecar", broken)
    source = Source()
    with pytest.raises(OSError, match="disk on fire"):
        await rig.engine.open(spec(), lambda: source)
    assert source.closed == 1 and rig.engine.idle.is_set()
    assert [p for p in rig.root.rglob("*") if p.is_file() and ".callrec" not in p.parts] == []
    monkeypatch.undo()
    rec = await rig.engine.open(spec(), Source)  # the place was given back
    await rig.engine.finish(rec, "shutdown")
    # The refused call has a row saying why, the next one has the name and the file.
    row = await rig.row(rec)
    refused = [r for r in rig.catalog.find() if r.id != row.id]
    assert [(r.status, r.stop_reason, r.size_bytes) for r in refused] == [
        ("failed", "write_error", 0)
    ]
    assert refused[0].path.startswith(row.path + "#refused-")
    assert (row.status, row.stop_reason) == ("complete", "shutdown")
    assert (rig.root / row.path).is_file()


async def test_one_stop_reason_vocabulary(make_rig: Callable[..., Any]) -> None:
    assert {"phone_stop", "hangup", "record_off", "connection_lost", "shutdown"} <= STOP_REASONS
    assert {"max_duration", "max_size", "disk_full", "write_error", "crash", "imported"} <= (
        STOP_REASONS
    )
    rig: Rig = await make_rig()
    rec = await rig.engine.open(spec(), Source)
    with pytest.raises(ValueError, match="unknown stop reason 'error'"):
        await rig.engine.finish(rec, "error")
    assert not rec.finishing
    await rig.engine.finish(rec, "hangup")


async def test_companions_and_their_links_in_the_row(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    mix = Companion(suffix=".mix.wav", channels=1, link=("sip", "mix"))
    source = Source(outputs=2)
    rec = await rig.engine.open(
        spec("sip", channels=2, companions=(mix,), extra={"sip": {"segment": 1}}),
        lambda: source,
    )
    await wait_for(lambda: source.pumped >= 3, what="three ticks")
    await rig.engine.finish(rec, "hangup")
    row = await rig.row(rec)
    assert row.channels == 2
    mix_path = PurePosixPath(row.path).with_name(PurePosixPath(row.path).stem + ".mix.wav")
    assert row.extra["sip"] == {"segment": 1, "mix": str(mix_path)}
    assert row.extra["companions"] == [{"path": str(mix_path), "channels": 1}]
    stereo, _ = soundfile.read(str(rig.root / row.path), dtype="int16")
    mono, _ = soundfile.read(str(rig.root / mix_path), dtype="int16")
    assert stereo.shape == (len(mono), 2) and len(mono) == 160 * (source.pumped + 1)
    assert np.array_equal(stereo[:, 0], mono) and np.array_equal(stereo[:, 1], mono)


async def test_a_name_taken_on_disk_or_in_the_catalogue_moves_on(
    make_rig: Callable[..., Any],
) -> None:
    rig: Rig = await make_rig(filename_template="fixed.wav")
    (rig.root / "fixed.wav").write_bytes(b"someone else's")
    first = await rig.engine.open(spec(), Source)
    second = await rig.engine.open(spec(), Source)
    assert (first.relpath, second.relpath) == ("fixed_1.wav", "fixed_2.wav")
    for rec in (first, second):
        await rig.engine.finish(rec, "shutdown")
    assert (rig.root / "fixed.wav").read_bytes() == b"someone else's"


async def test_one_checkpoint_for_all_sources(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig: Rig = await make_rig()
    batches: list[set[str]] = []
    journal = rig.engine.journal
    real = journal.append

    def append(entry: Any) -> int:
        if isinstance(entry, JournalCheckpoint):
            batches.append(set(entry.counters))
        return real(entry)

    monkeypatch.setattr(journal, "append", append)
    phone = await rig.engine.open(spec("server"), Source)
    sip = await rig.engine.open(spec("sip"), Source)
    await wait_for(lambda: bool(batches), what="a checkpoint", timeout=10)
    assert batches[0] == {phone.uid, sip.uid}
    row = await rig.row(sip)
    assert row.status == "recording" and row.packets_received > 0
    for rec in (phone, sip):
        await rig.engine.finish(rec, "shutdown")


async def test_max_duration_ends_a_recording_of_any_source(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig(max_duration=0.1)
    source = Source()
    rec = await rig.engine.open(spec("sip"), lambda: source)
    await asyncio.wait_for(rec.wait_ended(), 5)
    row = await rig.row(rec)
    assert (row.status, row.stop_reason) == ("complete", "max_duration")
    assert source.closed == 1  # its front end hears of it through the source


async def test_a_failing_source_ends_its_recording_only(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    bad, good = Source(fail=True), Source()
    broken = await rig.engine.open(spec("sip"), lambda: bad)
    healthy = await rig.engine.open(spec("server"), lambda: good)
    await asyncio.wait_for(broken.wait_ended(), 5)
    row = await rig.row(broken)
    assert row.stop_reason == "internal_error"
    before = good.pumped
    await wait_for(lambda: good.pumped > before + 2, what="the other recording to go on")
    await rig.engine.finish(healthy, "phone_stop")


async def test_at_the_largest_size_what_fits_is_kept(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from callrec.media import wav as wav_module

    monkeypatch.setattr(wav_module, "max_data_size", lambda channels: 1000)
    rig: Rig = await make_rig()
    rec = await rig.engine.open(spec(), Source)
    await asyncio.wait_for(rec.wait_ended(), 5)
    row = await rig.row(rec)
    assert (row.status, row.stop_reason) == ("complete", "max_size")
    assert row.size_bytes == 44 + 1000 and row.duration == pytest.approx(500 / 8000)


async def test_stop_finishes_every_open_recording(make_rig: Callable[..., Any]) -> None:
    rig: Rig = await make_rig()
    recs = [await rig.engine.open(spec(session_id=str(i)), Source) for i in range(3)]
    await rig.engine.stop()
    for rec in recs:
        row = await rig.row(rec)
        assert (row.status, row.stop_reason) == ("complete", "shutdown")
    with pytest.raises(ResourceError, match="shutting down"):
        await rig.engine.open(spec(), Source)


def test_write_frames_cuts_at_a_frame_without_cut_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callrec.media import wav as wav_module

    monkeypatch.setattr(wav_module, "max_data_size", lambda channels: 10)  # a tiny file
    writer = WavWriter(tmp_path / "s.wav", sample_rate=8000, channels=2)
    with pytest.raises(files_module.WavTooLargeError):
        files_module.write_frames((writer,), (b"\x01\x00" * 20,), lambda: ())
    assert writer.frames_written == 2  # 8 of the 10 bytes: whole stereo frames only
    writer.close()


async def test_stop_ends_a_recording_that_was_still_opening(
    make_rig: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig: Rig = await make_rig()
    real = files_module.write_original
    release = threading.Event()

    def slow(path: Path, data: bytes) -> None:
        release.wait(5)  # an import's original, still being stored
        real(path, data)

    monkeypatch.setattr(files_module, "write_original", slow)
    data = b"original bytes"
    original = Original(data=data, sha256=hashlib.sha256(data).hexdigest())
    opening = asyncio.ensure_future(
        rig.engine.record_file(spec(live=False, original=original), FileChunks())
    )
    await asyncio.sleep(0.05)  # admitted; its original is being written
    stopping = asyncio.ensure_future(rig.engine.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # the stop waits for it
    release.set()
    finished = await opening
    await asyncio.wait_for(stopping, 5)
    await wait_event(rig.engine.journal.applied, what="the journal applied")
    row = rig.catalog.get_uid(finished.uid)
    assert row is not None and (row.status, row.stop_reason) == ("complete", "imported")


class FileChunks:
    """A one-shot source: two frames."""

    damaged = False
    media_port = None

    def chunks(self) -> Iterator[Sequence[bytes]]:
        return iter([(FRAME,), (FRAME,)])

    def pump(self, now: float) -> Sequence[bytes]:
        return ()

    def drain(self, now: float) -> Sequence[bytes]:
        return ()

    def cut_points(self) -> Sequence[int]:
        return ()

    def counters(self) -> StreamCounters:
        return StreamCounters()

    def close(self) -> None:
        pass
