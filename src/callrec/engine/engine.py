"""The recording engine: one lifecycle for every recording, whatever brought the call.

    open -> write -> checkpoint -> finish -> catalogue -> notify

* **open** (:meth:`RecordingEngine.open`): admission from memory (session limits, disk
  reserve: :mod:`callrec.engine.admission`), then the front end's media source is made (it
  binds its port), then the files are created exclusively (the WAV is the name's claim; its
  companions such as the SIP mono mix, an imported original; the sidecar that describes it),
  then the start is journaled and the live registry hears of it. Nothing of this waits for
  the catalogue (record first: :mod:`callrec.engine.journal` catalogues it afterwards).
* **write**: every ``sync_interval`` one tick pumps each live recording's source (decoding in
  memory, no system call) and then flushes every file of the tick together on the media I/O
  thread, so the event loop never waits for a disk. A full disk or a failing one ends the
  recordings it hit (``disk_full``, ``write_error``) with what they have.
* **checkpoint**: every ``CHECKPOINT_TICKS`` ticks the counters of all recordings, whatever
  their source, go to the journal as one entry (one transaction in the catalogue).
* **finish** (:meth:`RecordingEngine.finish`): the source is drained and closed, the files
  are closed (fsync, SHA-256) off the loop, or repaired when that fails; one stop-reason
  vocabulary for all sources (:mod:`callrec.engine.spec`).
* **catalogue**: the finish goes to the sidecar and the journal; the journal's applier puts it
  in the catalogue when the catalogue can take it.
* **notify**: observers (the live view, metrics, the job runner: webhooks and
  on_complete_command, :mod:`callrec.jobs`) are told.

A one-shot recording made from a file (a USB import) runs the same steps, its writes all at
once on a worker thread (:meth:`RecordingEngine.record_file`).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import errno
import functools
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from callrec import filemodes
from callrec.catalog import FinishRecording, NewRecording, StreamCounters
from callrec.catalog.replay import JournalCheckpoint, JournalFinish, JournalStart
from callrec.engine import files, journalfile
from callrec.engine.admission import Admission, Ticket
from callrec.engine.durability import DiskSync
from callrec.engine.journal import Journal
from callrec.engine.live import LiveRegistry, LiveSession
from callrec.engine.recording import Finished, Recording, RecordingLog, S
from callrec.engine.spec import (
    DISK_FULL,
    IMPORTED,
    INTERNAL_ERROR,
    MAX_DURATION,
    MAX_SIZE,
    SHUTDOWN,
    STOP_REASONS,
    WRITE_ERROR,
    WRITE_FAILURES,
    FileSource,
    MediaSource,
    RecordingSpec,
    companion_path,
    original_path,
)
from callrec.exceptions import ResourceError
from callrec.media.naming import UnsafePathError, recording_path
from callrec.media.wav import (
    SAMPLE_WIDTH,
    WavError,
    WavInfo,
    WavTooLargeError,
    WavWriter,
)

logger = logging.getLogger(__name__)

#: How often (in ticks) the counters of the open recordings are saved to the catalogue.
CHECKPOINT_TICKS: Final = 20
#: Seconds of pumping between two turns of the loop, in a tick.
PUMP_SLICE: Final = 0.01
#: Most names tried (``<stem>``, ``<stem>_1`` ...) before a start is refused.
MAX_NAME_TRIES: Final = 1000
#: Seconds :meth:`RecordingEngine.stop` waits for recordings still being opened.
STOP_GRACE: Final = 30.0
#: A one-shot recording flushes its file whenever this much PCM is buffered.
FILE_FLUSH_BYTES: Final = 1 << 20
#: The empty mapping a recording's spec keeps in place of what only its row needed.
NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})


class RecordingEngine:
    """Runs every recording of one process; see the module docstring."""

    def __init__(
        self,
        *,
        root: Path,
        journal: Journal,
        live: LiveRegistry,
        admission: Admission,
        filename_template: str,
        sync_interval: float,
        max_duration: float,
        sync_mode: str = "syncfs",
        node: str | None = None,
    ) -> None:
        self.root = root
        #: The node_name stored on each recording (several nodes on one catalogue).
        self.node = node
        self.journal = journal
        self.live = live
        self.admission = admission
        self.filename_template = filename_template
        self.sync_interval = sync_interval
        self.max_duration = max_duration
        #: Recordings being written, by uid (one-shot ones too, while they write).
        self.recordings: dict[str, Recording[Any]] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-io")
        #: Puts each tick's flushed audio on the disk (power cuts): see engine/durability.py.
        self.disk = DiskSync(root, sync_mode, interval=sync_interval)
        self._tick_task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[Any]] = set()
        #: Set while no recording is open (nothing being written or finished).
        self.idle = asyncio.Event()
        self.idle.set()
        live.attach(self._live_snapshots)
        journal.on_catalogued = self._catalogued

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        filemodes.make_dirs(self.root)
        self._tick_task = asyncio.create_task(self._tick_loop(), name="callrec-tick")

    async def stop(self) -> None:
        """Refuse new recordings, finish every open one (``shutdown``) and wait for them."""
        self.admission.closing = True
        if self._tick_task is not None:
            self._tick_task.cancel()
        for rec in list(self.recordings.values()):
            if rec.spec.live:
                self.spawn_finish(rec, SHUTDOWN)
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        # Opens still making their files end as soon as they are open (see open()).
        try:
            await asyncio.wait_for(self.idle.wait(), STOP_GRACE)
        except TimeoutError:
            logger.error(
                "%d recordings still opening after %.0f s; start-up recovery will finish them",
                self.admission.admitted,
                STOP_GRACE,
            )
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self._io.shutdown, wait=True)
        )

    # -- open ------------------------------------------------------------------------------

    async def open(self, spec: RecordingSpec, make_source: Callable[[], S]) -> Recording[S]:
        """Admit, make the source, claim the name, create the files, register it live.

        Raises :class:`ResourceError` (``busy``, ``disk_full``, ``internal``: the reason a
        front end answers with) or what ``make_source`` raises. When opening fails after
        ``make_source`` returned, the source is closed."""
        ticket = self.admission.admit(spec.device, live=spec.live)
        self.idle.clear()
        try:
            started_at = spec.start_time or datetime.now(UTC)
            wanted = self._wanted_path(spec, started_at)
            source = make_source()
        except BaseException:
            self._release(ticket)
            raise
        try:
            rec = await self._create(spec, source, wanted, started_at, ticket)
        except BaseException:
            self._release(ticket)
            _close_quietly(source)
            raise
        self.recordings[rec.uid] = rec
        self.live.started(self.snapshot(rec), counted=spec.live)
        if self.admission.closing and spec.live:
            # Admitted before the engine began to stop: it ends at once, as the others did.
            self.spawn_finish(rec, SHUTDOWN)
        rec.log.info(
            "recording %s from %s (%s) to %s%s",
            spec.codec.name,
            spec.peer_address or spec.source,
            spec.device or "?",
            rec.relpath,
            f" on UDP {source.media_port}" if source.media_port else "",
        )
        return rec

    def _release(self, ticket: Ticket) -> None:
        self.admission.release(ticket)
        if not self.admission.admitted:
            self.idle.set()

    def _wanted_path(self, spec: RecordingSpec, started_at: datetime) -> Path:
        if spec.path is not None:
            path = self.root.joinpath(*spec.path.parts)
            if not path.resolve().is_relative_to(self.root):
                raise ResourceError(f"{spec.path} is outside the recordings", reason="internal")
            return path
        try:
            return recording_path(
                self.filename_template,
                root=self.root,
                start=started_at.astimezone(),
                fields={**spec.name_fields, "node": self.node or ""},
            )
        except UnsafePathError as exc:
            raise ResourceError(str(exc), reason="internal") from exc

    async def _create(
        self,
        spec: RecordingSpec,
        source: S,
        wanted: Path,
        started_at: datetime,
        ticket: Ticket,
    ) -> Recording[S]:
        """Create the files under the first name free on disk among ``wanted``,
        ``<stem>_1``, ... (the WAV's exclusive creation is the claim: two processes never
        get one name), the sidecar, then journal the start."""
        for n in range(MAX_NAME_TRIES):
            path = wanted if n == 0 else wanted.with_name(f"{wanted.stem}_{n}{wanted.suffix}")
            paths = [path, *(companion_path(path, c) for c in spec.companions)]
            if spec.original is not None:
                paths.append(original_path(path, spec.original))
            sidecar = journalfile.sidecar_path(path)
            if any(os.path.lexists(p) for p in (*paths, sidecar)):
                continue
            uid = uuid.uuid4().hex
            start = JournalStart(self._new_row(spec, source, paths, started_at, uid))
            try:
                writers = await self._create_files(spec, path, start)
            except FileExistsError:
                continue  # another process (or program) took the name since we looked
            # Journaled once the files exist: only the process that created a name catalogues
            # it (a kill -9 in the microseconds between leaves a file with its sidecar and no
            # row; `callrec catalogue rebuild` catalogues it).
            except OSError as exc:
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                # A call that could not be recorded is never silently missing: its row
                # says why, and names no file (nor a name another recording may get).
                refused = dataclasses.replace(start.rec, path=f"{start.rec.path}#refused-{uid}")
                self.journal.append(JournalStart(refused))
                self.journal.append(_refused(uid, DISK_FULL if full else WRITE_ERROR))
                if full:
                    raise ResourceError(f"cannot create {path}: {exc}", reason="disk_full") from exc
                raise
            self.journal.append(start)
            return Recording(
                uid=uid,
                start=start,
                # What only the row needed is not kept for the recording's life (an import's
                # original can be hundreds of megabytes).
                spec=dataclasses.replace(spec, name_fields=NOTHING, extra=NOTHING, original=None),
                source=source,
                writers=tuple(writers),
                path=path,
                relpath=path.relative_to(self.root).as_posix(),
                started_at=started_at,
                started_mono=asyncio.get_running_loop().time(),
                log=RecordingLog(logger, {"session": spec.session_id or uid[:8]}),
                ticket=ticket,
            )
        raise ResourceError(f"no free file name near {wanted}", reason="internal")

    async def _create_files(
        self, spec: RecordingSpec, path: Path, start: JournalStart
    ) -> list[WavWriter]:
        """The original (imports), the recording's WAV, its companions' and its sidecar (all
        created exclusively); on failure none of them is left."""
        writers: list[WavWriter] = []
        original: Path | None = None
        sidecar: Path | None = None
        try:
            if spec.original is not None:
                made = original_path(path, spec.original)
                await asyncio.get_running_loop().run_in_executor(
                    None, files.write_original, made, spec.original.data
                )
                original = made
            rate = spec.codec.sample_rate
            writers.append(WavWriter(path, sample_rate=rate, channels=spec.channels))
            for companion in spec.companions:
                writers.append(
                    WavWriter(
                        companion_path(path, companion),
                        sample_rate=rate,
                        channels=companion.channels,
                    )
                )
            made = journalfile.sidecar_path(path)
            journalfile.create_sidecar(made, start)  # raises before it is ours to remove
            sidecar = made
        except BaseException:
            for writer in writers:
                writer.abort()
                writer.path.unlink(missing_ok=True)
            for own in (original, sidecar):
                if own is not None:
                    own.unlink(missing_ok=True)
            raise
        return writers

    def _new_row(
        self,
        spec: RecordingSpec,
        source: MediaSource,
        paths: list[Path],
        started_at: datetime,
        uid: str,
    ) -> NewRecording:
        """The row of a recording whose files will be ``paths``: its own, its companions',
        then its original's."""

        def rel(p: Path) -> str:
            return p.relative_to(self.root).as_posix()

        extra: dict[str, Any] = copy.deepcopy(dict(spec.extra))
        if spec.companions:
            companions = []
            for companion, file in zip(spec.companions, paths[1:], strict=False):
                companions.append({"path": rel(file), "channels": companion.channels})
                if companion.link is not None:
                    section, key = companion.link
                    extra.setdefault(section, {})[key] = rel(file)
            # Files that belong to this row and that start-up recovery repairs with it.
            extra["companions"] = companions
        original = spec.original
        return NewRecording(
            source=spec.source,
            **spec.who(),
            codec=spec.codec.name,
            peer_port=spec.peer_port,
            media_port=source.media_port,
            start_time=started_at,
            sample_rate=spec.codec.sample_rate,
            channels=spec.channels,
            path=rel(paths[0]),
            extra=extra,
            original_path=rel(paths[-1]) if original is not None else None,
            original_sha256=original.sha256 if original is not None else None,
            uid=uid,
            node=self.node,
        )

    # -- write -----------------------------------------------------------------------------

    def write(self, rec: Recording[Any], frames: Sequence[bytes]) -> None:
        """Hand each output's PCM to its file: :func:`write_frames`."""
        files.write_frames(rec.writers, frames, rec.source.cut_points)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            await asyncio.sleep(self.sync_interval)
            ticks += 1
            now = loop.time()
            slice_end = now + PUMP_SLICE
            due: list[Recording[Any]] = []
            for rec in list(self.recordings.values()):
                if loop.time() >= slice_end:
                    # Thousands of calls take a few hundred ms to pump: in slices, so that a
                    # start or a stop never waits behind all of them.
                    await asyncio.sleep(0)
                    now = loop.time()
                    slice_end = now + PUMP_SLICE
                self._pump(rec, now, due)
            # All writes of the tick, coalesced, on the I/O thread: the loop keeps reading.
            failed = await loop.run_in_executor(self._io, self._flush, due)
            for rec, exc in failed:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    rec.log.error("disk full; closing the recording with what it has")
                    self.spawn_finish(rec, DISK_FULL)
                else:
                    rec.log.error("write failed (%s); closing the recording", exc)
                    self.spawn_finish(rec, WRITE_ERROR)
            if ticks % CHECKPOINT_TICKS == 0:
                self.checkpoint()

    def _pump(self, rec: Recording[Any], now: float, due: list[Recording[Any]]) -> None:
        """A tick of one recording: decode what its source released into its files' buffers
        (no system call); ``due`` collects the recordings to flush."""
        if rec.finishing or not rec.spec.live:
            return
        try:
            self.write(rec, rec.source.pump(now))
        except WavTooLargeError:
            rec.log.error("recording too large; closing it")
            self.spawn_finish(rec, MAX_SIZE)
            return
        except Exception:
            # A bug in one source must not stop the recording of every other call.
            rec.log.exception("pumping the media source failed (a bug); closing it")
            self.spawn_finish(rec, INTERNAL_ERROR)
            return
        due.append(rec)
        if self.max_duration and now - rec.started_mono >= self.max_duration:
            self.spawn_finish(rec, MAX_DURATION)

    def checkpoint(self) -> None:
        """Journal the counters of every open recording, all sources, as one entry."""
        snapshot = {
            rec.uid: rec.source.counters().copy()
            for rec in self.recordings.values()
            if rec.spec.live
        }
        if snapshot:
            self.journal.append(JournalCheckpoint(snapshot))

    # -- finish ----------------------------------------------------------------------------

    def spawn_finish(self, rec: Recording[Any], reason: str) -> None:
        """Finish ``rec`` in a task of its own (the engine's own decisions, shutdown)."""
        task = asyncio.create_task(self.finish(rec, reason))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def finish(
        self,
        rec: Recording[Any],
        reason: str,
        *,
        stop_fields: dict[str, str] | None = None,
        damaged: bool = False,
    ) -> Finished | None:
        """End ``rec``: drain and close its source, close (or repair) its files, journal the
        end (its sidecar too), tell the observers. None when it was already finishing."""
        if reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {reason!r}")
        if rec.finishing:
            return None
        rec.finishing = True
        loop = asyncio.get_running_loop()
        frames: Sequence[bytes] = ()
        try:
            frames = rec.source.drain(loop.time())
        except Exception:
            rec.log.exception("could not read out the media source")
        _close_quietly(rec.source)
        # Read on the loop, where the source lives; final, as the source is closed.
        counters = rec.source.counters().copy() if rec.spec.live else None
        # One trip to a worker thread for the files and the sidecar: a stop waits for the
        # loop once, not once per step, when the loop is busy (docs/performance.md).
        entry, info = await loop.run_in_executor(
            None,
            functools.partial(
                self._seal,
                rec,
                frames,
                reason,
                damaged=damaged,
                counters=counters,
                stop_fields=stop_fields,
            ),
        )
        reason = entry.finish.stop_reason
        duration = entry.finish.duration
        seq = self.journal.append(entry)
        self.recordings.pop(rec.uid, None)
        self._release(rec.ticket)
        self.live.finished(dataclasses.replace(self.snapshot(rec), stop_reason=reason))
        rec.mark_ended()
        rec.log.info("stopped (%s): %.2f s, %s", reason, duration, counters or "")
        return Finished(rec.uid, rec.rec_id, seq, entry.finish.status, reason, info)

    def _seal(
        self,
        rec: Recording[Any],
        frames: Sequence[bytes],
        reason: str,
        *,
        damaged: bool,
        counters: StreamCounters | None,
        stop_fields: dict[str, str] | None,
    ) -> tuple[JournalFinish, WavInfo | None]:
        """Append the last ``frames``, close (or else repair) the files, then write the
        finished sidecar: the blocking part of :meth:`finish`, on a worker thread (nothing
        on the loop touches a finishing recording's files). Returns the journal entry of the
        end."""
        status = "complete"
        info: WavInfo | None = None
        try:
            try:
                self.write(rec, frames)
            except WavTooLargeError:
                reason = MAX_SIZE
            info = files.close_files(rec.writers)
        except (OSError, WavError):
            # Disk full or failing: keep what reached the files, with headers that say so.
            rec.log.exception("could not finalise %s; keeping what was written", rec.relpath)
            for writer in rec.writers:
                writer.abort()
            if reason not in WRITE_FAILURES:
                reason = WRITE_ERROR
            try:
                info = files.repair_files(rec.writers)
            except (OSError, WavError):
                rec.log.exception("could not repair %s", rec.relpath)
                status = "failed"
        if status == "complete" and damaged:
            status = "recovered"
        duration = info.duration if info else rec.writers[0].duration
        end_time = datetime.now(UTC)
        if not rec.spec.live:
            end_time = rec.started_at + timedelta(seconds=duration)
        entry = JournalFinish(
            rec.uid,
            FinishRecording(
                rec_id=0,
                status=status,
                stop_reason=reason,
                end_time=end_time,
                duration=duration,
                size_bytes=info.size_bytes if info else 0,
                sha256=info.sha256 if info else None,
                counters=counters,
                phone_stop_reason=(stop_fields or {}).get("reason"),
                stop_fields=stop_fields,
            ),
        )
        try:
            journalfile.replace_sidecar(journalfile.sidecar_path(rec.path), rec.start, entry)
        except OSError as exc:
            rec.log.error("could not update the sidecar of %s: %s", rec.relpath, exc)
        return entry, info

    # -- one-shot recordings ---------------------------------------------------------------

    async def record_file(self, spec: RecordingSpec, source: FileSource) -> Finished:
        """Open, write everything ``source`` holds (on a worker thread), finish as
        ``imported``: the lifecycle of a recording made from a file. Once open, the
        recording is finished even if the caller is cancelled (:meth:`stop` waits for it)."""
        rec = await self.open(spec, lambda: source)
        task = asyncio.create_task(self._record_all(rec, source))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return await asyncio.shield(task)

    async def _record_all(self, rec: Recording[Any], source: FileSource) -> Finished:
        loop = asyncio.get_running_loop()
        reason = IMPORTED
        try:
            await loop.run_in_executor(None, self._write_all, rec, source)
        except WavTooLargeError:
            rec.log.error("%s is larger than a WAV file can be; kept what fits", rec.relpath)
            reason = MAX_SIZE
        except (OSError, WavError) as exc:
            rec.log.error("could not write %s: %s", rec.relpath, exc)
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            reason = DISK_FULL if full else WRITE_ERROR
        except Exception:
            rec.log.exception("could not write %s (a bug)", rec.relpath)
            reason = INTERNAL_ERROR
        finished = await self.finish(rec, reason, damaged=source.damaged)
        assert finished is not None  # nothing else finishes a one-shot recording
        return finished

    def _write_all(self, rec: Recording[Any], source: FileSource) -> None:
        for frames in source.chunks():
            self.write(rec, frames)
            if any(w.bytes_buffered >= FILE_FLUSH_BYTES for w in rec.writers):
                for writer in rec.writers:
                    writer.flush()

    # -- live view ---------------------------------------------------------------------------

    def snapshot(self, rec: Recording[Any]) -> LiveSession:
        spec = rec.spec
        writer = rec.writers[0]
        return LiveSession(
            uid=rec.uid,
            rec_id=rec.rec_id,
            source=spec.source,
            # The parties' text fields (typed loosely: LiveSession has non-text ones too).
            **dict[str, Any](spec.who()),
            codec=spec.codec.name,
            media_port=rec.source.media_port or 0,
            started_at=rec.started_at,
            duration=writer.duration,
            bytes_written=writer.frames_written * SAMPLE_WIDTH * writer.channels,
            counters=rec.source.counters().as_dict(),
            path=rec.relpath,
            node=self.node or "",
        )

    def _live_snapshots(self) -> list[LiveSession]:
        return [
            self.snapshot(rec)
            for rec in self.recordings.values()
            if rec.spec.live and not rec.finishing
        ]

    # -- the journal's news -----------------------------------------------------------------

    def _catalogued(self, ids: Mapping[str, int]) -> None:
        for uid, rec_id in ids.items():
            rec = self.recordings.get(uid)
            if rec is not None:
                rec.rec_id = rec_id

    def _flush(self, due: list[Recording[Any]]) -> list[tuple[Recording[Any], OSError]]:
        """The tick's writes (the I/O thread): every file's buffer and one sync of them
        (DiskSync: power cuts), then the journal."""
        failed = self.disk.flush(due)
        self.journal.sync()
        return failed


def _refused(uid: str, reason: str) -> JournalFinish:
    """The end of a recording whose files could not be created."""
    return JournalFinish(
        uid,
        FinishRecording(
            rec_id=0,
            status="failed",
            stop_reason=reason,
            end_time=datetime.now(UTC),
            duration=0.0,
            size_bytes=0,
            sha256=None,
            counters=None,
        ),
    )


def _close_quietly(source: MediaSource) -> None:
    try:
        source.close()
    except Exception:
        logger.exception("closing media source %r failed", source)
