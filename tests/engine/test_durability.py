"""Each tick's audio reaches the disk: one sync per tick, after its flushes, on the media I/O
thread, covering every file the tick wrote; a failing sync ends no recording.

The engine runs as ``callrec serve`` builds it, on real files under ``tmp_path``; the spies
wrap the real sync calls (they still run) and read the page cache with cachestat
(:mod:`tests.support.pagecache`): right after each sync, no page of any file of the tick is
still only in memory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec import config
from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.engine import (
    Companion,
    Recording,
    RecordingEngine,
    RecordingSpec,
    durability,
)
from callrec.engine.durability import DiskSync
from callrec.exceptions import ConfigError
from callrec.media.wav import WavWriter, read_wav_info
from callrec.rtp.counters import StreamCounters
from callrec.service import standalone_engine
from tests.support import pagecache
from tests.support.settings import server_settings
from tests.support.waiting import wait_for

#: 20 ms of a 440 Hz tone at 8 kHz, int16 little-endian: what each pump releases.
FRAME = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype("<i2").tobytes()
TICKS = 8


class Source:
    """Releases one frame per pump on each output (stereo and mono for two outputs)."""

    media_port = 4242

    def __init__(self, outputs: int = 1) -> None:
        self.outputs = outputs
        self.pumped = 0
        self.stats = StreamCounters()

    def _out(self) -> Sequence[bytes]:
        stereo = np.repeat(np.frombuffer(FRAME, "<i2"), 2).astype("<i2").tobytes()
        return (FRAME,) if self.outputs == 1 else (stereo, FRAME)

    def pump(self, now: float) -> Sequence[bytes]:
        self.pumped += 1
        self.stats.received += 1
        return self._out()

    def drain(self, now: float) -> Sequence[bytes]:
        return ()

    def cut_points(self) -> Sequence[int]:
        return ()

    def counters(self) -> StreamCounters:
        return self.stats

    def close(self) -> None:
        pass


def spec(name: str, **kw: Any) -> RecordingSpec:
    return RecordingSpec(
        source="server",
        session_id=name,
        codec=get_codec("PCMA"),
        device="0c383e0e709a",
        direction="out",
        local_number="3001",
        remote_number="2011",
        name_fields={"dir": "out", "local_number": "3001", "remote_number": name},
        **kw,
    )


@pytest.fixture
def pages_visible(tmp_path: Path) -> None:
    try:
        pagecache.check_supported(tmp_path)
    except pagecache.Unsupported as exc:
        pytest.skip(str(exc))


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    # The engine over a journal of its own, as `callrec file import` has it.
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> RecordingEngine:
            settings = server_settings(tmp_path, **{"sync_interval": 0.02, **overrides})
            catalog = stack.enter_context(Catalog(settings.database_url))
            engine = await stack.enter_async_context(
                standalone_engine(settings, catalog, name="test")
            )
            return engine

        yield make


async def open_two(engine: RecordingEngine) -> list[Recording[Any]]:
    """A mono recording and a stereo one with a mono companion: three files."""
    return [
        await engine.open(spec("a"), Source),
        await engine.open(
            spec("b", channels=2, companions=(Companion(suffix=".mix.wav"),)),
            lambda: Source(outputs=2),
        ),
    ]


@dataclass
class Tick:
    """What one tick's file work did, as the spies saw it."""

    files: list[Path]
    syncs: int = 0
    synced: list[Path] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    #: Pages of the tick's files not on the disk, just before and just after its syncs.
    unsynced_before: int = 0
    unsynced_after: int = 0


def watch_ticks(
    engine: RecordingEngine, monkeypatch: pytest.MonkeyPatch, *, pages: bool = True
) -> list[Tick]:
    """From now on, one :class:`Tick` per call of the engine's tick file work; with
    ``pages``, once it returns, how many pages of the tick's files the disk still lacks."""
    ticks: list[Tick] = []
    real = engine.disk.flush

    def flush(recordings: list[Recording[Any]]) -> Any:
        tick = Tick(files=[w.path for rec in recordings for w in rec.writers])
        ticks.append(tick)
        failed = real(recordings)
        if pages:
            tick.unsynced_after = sum(pagecache.unsynced(path) for path in tick.files)
        return failed

    monkeypatch.setattr(engine.disk, "flush", flush)
    return ticks


def spy_syncfs(
    ticks: list[Tick], monkeypatch: pytest.MonkeyPatch, fail: Callable[[int], int] | None = None
) -> None:
    """Count each syncfs in its tick; ``fail(n)`` (n: the call, from 1) gives an errno to
    fail the call with instead of syncing, or 0."""
    real = durability.syncfs
    calls = 0

    def syncfs(fd: int) -> None:
        nonlocal calls
        calls += 1
        tick = ticks[-1]
        tick.syncs += 1
        tick.threads.add(threading.current_thread().name)
        tick.unsynced_before = sum(pagecache.unsynced(path) for path in tick.files)
        code = fail(calls) if fail else 0
        if code:
            raise OSError(code, "injected")
        real(fd)

    monkeypatch.setattr(durability, "syncfs", syncfs)


def spy_fdatasync(ticks: list[Tick], monkeypatch: pytest.MonkeyPatch) -> None:
    real = WavWriter.sync

    def sync(self: WavWriter) -> None:
        tick = ticks[-1]
        if not tick.synced:
            tick.unsynced_before = sum(pagecache.unsynced(path) for path in tick.files)
        tick.synced.append(self.path)
        tick.threads.add(threading.current_thread().name)
        real(self)

    monkeypatch.setattr(WavWriter, "sync", sync)


async def run_ticks(recs: list[Recording[Any]], ticks: list[Tick], count: int) -> list[Tick]:
    """Wait for ``count`` ticks that wrote every file of ``recs``; returns those ticks."""
    files = {w.path for rec in recs for w in rec.writers}

    def full() -> list[Tick]:
        return [t for t in ticks[:-1] if set(t.files) == files]  # the last may be running

    await wait_for(lambda: len(full()) >= count, what=f"{count} ticks writing every file")
    return full()


async def test_syncfs_once_per_tick_after_the_flushes_covers_every_file(
    make_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, pages_visible: None
) -> None:
    engine: RecordingEngine = await make_engine()
    assert engine.disk.mode == "syncfs"
    ticks = watch_ticks(engine, monkeypatch)
    spy_syncfs(ticks, monkeypatch)
    recs = await open_two(engine)
    done = await run_ticks(recs, ticks, TICKS)
    for tick in done:
        assert tick.syncs == 1, tick
        assert tick.threads and all(n.startswith("media-io") for n in tick.threads), tick
        # Every page the tick's flushes dirtied (headers and audio of all three files) is on
        # the disk once the one syncfs has returned.
        assert tick.unsynced_after == 0, tick
    # The check can see unsynced pages: the flushes left some for the sync.
    assert any(tick.unsynced_before > 0 for tick in done), done
    # A tick with nothing to write does not sync (an idle server leaves the disk alone).
    assert all(t.syncs == 0 for t in ticks[:-1] if not t.files)
    for rec in recs:
        await engine.finish(rec, "phone_stop")
    assert engine.disk.failures == 0 and engine.disk.syncs >= TICKS


async def test_fdatasync_mode_syncs_each_file_of_the_tick_once(
    make_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, pages_visible: None
) -> None:
    engine: RecordingEngine = await make_engine(sync_mode="fdatasync")
    ticks = watch_ticks(engine, monkeypatch)
    spy_fdatasync(ticks, monkeypatch)
    directories: list[Path] = []
    real_fsync_directory = durability._fsync_directory

    def fsync_directory(directory: Path) -> None:
        directories.append(directory)
        real_fsync_directory(directory)

    monkeypatch.setattr(durability, "_fsync_directory", fsync_directory)
    recs = await open_two(engine)
    done = await run_ticks(recs, ticks, TICKS)
    for tick in done:
        assert sorted(tick.synced) == sorted(tick.files), tick
        assert all(n.startswith("media-io") for n in tick.threads), tick
        assert tick.unsynced_after == 0, tick
    assert any(tick.unsynced_before > 0 for tick in done), done
    # New files' entries: their directory and its parents up to the recordings directory's
    # parent, once per tick that has new files (the two recordings may open in one gap).
    root = engine.root
    day = recs[0].path.parent
    assert day.parent == root
    assert set(directories) == {day, root, root.parent}, directories
    assert len(directories) in (3, 6), directories
    for rec in recs:
        await engine.finish(rec, "phone_stop")


async def test_off_mode_never_syncs(
    make_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: RecordingEngine = await make_engine(sync_mode="off")
    ticks = watch_ticks(engine, monkeypatch, pages=False)
    spy_syncfs(ticks, monkeypatch)
    spy_fdatasync(ticks, monkeypatch)
    recs = await open_two(engine)
    done = await run_ticks(recs, ticks, 3)
    assert all(t.syncs == 0 and not t.synced for t in done)
    for rec in recs:
        await engine.finish(rec, "phone_stop")
    assert engine.disk.syncs == 0


async def test_a_failing_sync_ends_no_recording_and_is_logged_once_per_episode(
    make_engine: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pages_visible: None,
) -> None:
    engine: RecordingEngine = await make_engine()
    ticks = watch_ticks(engine, monkeypatch)
    # Two episodes: syncs 1-5 fail (EIO), 6-8 work, 9-10 fail (a write-back error), then work.
    spy_syncfs(ticks, monkeypatch, lambda n: errno.EIO if n <= 5 or 9 <= n <= 10 else 0)
    caplog.set_level(logging.INFO, logger="callrec.engine.durability")
    rec = await engine.open(spec("a"), Source)
    await wait_for(lambda: engine.disk.syncs >= 6, what="six syncs that worked")
    assert engine.disk.failures == 7
    # Still recording: nothing ended it, and the ticks kept writing.
    assert not rec.finishing and list(engine.recordings.values()) == [rec]
    finished = await engine.finish(rec, "phone_stop")
    assert finished is not None and (finished.status, finished.stop_reason) == (
        "complete",
        "phone_stop",
    )
    assert finished.info is not None and finished.info == read_wav_info(rec.path)
    assert finished.info.frames == 160 * rec.source.pumped
    said = [r.getMessage() for r in caplog.records if r.name == "callrec.engine.durability"]
    failed = [m for m in said if m.startswith("could not sync")]
    again = [m for m in said if m.startswith("syncing the recordings works again")]
    assert len(failed) == 2 and "Errno 5" in failed[0], said
    assert again == [
        "syncing the recordings works again, after 5 failed syncs",
        "syncing the recordings works again, after 2 failed syncs",
    ], said


async def test_syncfs_refused_at_run_time_falls_back_to_fdatasync_in_the_same_tick(
    make_engine: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, pages_visible: None
) -> None:
    engine: RecordingEngine = await make_engine()
    ticks = watch_ticks(engine, monkeypatch)
    spy_syncfs(ticks, monkeypatch, lambda n: errno.ENOSYS)  # a seccomp filter, an old kernel
    spy_fdatasync(ticks, monkeypatch)
    recs = await open_two(engine)
    done = await run_ticks(recs, ticks, 3)
    assert engine.disk.mode == "fdatasync" and engine.disk.failures == 0
    first = next(t for t in ticks if t.syncs)
    assert first.syncs == 1 and sorted(first.synced) == sorted(first.files)
    assert all(t.unsynced_after == 0 and sorted(t.synced) == sorted(t.files) for t in done)
    for rec in recs:
        await engine.finish(rec, "phone_stop")


def test_without_syncfs_in_the_c_library_the_mode_is_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durability, "_syncfs", None)
    assert DiskSync(tmp_path, "syncfs").mode == "fdatasync"
    assert DiskSync(tmp_path, "off").mode == "off"
    with pytest.raises(OSError) as caught:
        durability.syncfs(0)
    assert caught.value.errno == errno.ENOSYS


def test_sync_mode_setting() -> None:
    assert config.SYNC_MODES == durability.MODES
    assert config.Settings().sync_mode == "syncfs"
    with pytest.raises(ConfigError, match="sync_mode must be one of syncfs, fdatasync, off"):
        config.Settings(sync_mode="always")
    with pytest.raises(ValueError, match="sync mode"):
        DiskSync(Path("."), "always")
