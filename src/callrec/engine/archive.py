"""The archive policy (issue 16, part 4): finished recordings older than
``archive_after_days`` become FLAC (lossless) or Opus, and the WAV goes only once the copy is
verified.

One recording (:func:`transcode_one`), in this order, so that a ``kill -9`` anywhere leaves the
WAV catalogued or the archive catalogued, never neither, and its file on disk:

1. **claim** it in the catalogue (:mod:`callrec.catalog.archives`): two processes never
   transcode one recording; a claim whose holder died is taken over by the next sweep;
2. check the WAV is what the catalogue recorded (its SHA-256);
3. **encode** to a hidden temporary file beside the WAV (``.<name>.archiving.flac``), by the
   same PyAV encoders as the downloads (:mod:`callrec.media.encode`), and ``fsync`` it;
4. **verify** by decoding it back (:mod:`callrec.media.verify`): same rate and channels,
   exactly the WAV's frames, and FLAC sample for sample the WAV, Opus the same sound at the
   same time; then its SHA-256;
5. **rename** it to its name (the WAV's, with ``.flac`` or ``.opus``) and write its sidecar
   (``<archive>.json``: the WAV's start and finish plus what the archive is, so that
   ``callrec catalogue rebuild`` finds it);
6. **switch** the catalogue row to it in one transaction (path, size, SHA-256, and
   ``extra["archive"]`` with the format, date and the WAV's SHA-256, size and path);
7. remove the WAV and its sidecar.

A crash before 6 leaves the WAV catalogued; what it left (the temporary file, an archive and
sidecar nobody catalogues) goes at the next sweep, which takes the claim over. A crash after 6
leaves the archive catalogued and maybe the WAV still on disk, which the next sweep removes.
:func:`archive_sweep` is a plain function over the catalogue (idempotent, safe from several
processes); ``callrec serve`` calls it every ``archive_interval`` and ``callrec archive run``
by hand.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol, TypeVar

from callrec import filemodes
from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog.archives import (
    CLAIMED,
    SWITCHED,
    ArchiveConflict,
    ArchivedFile,
    ArchiveInfo,
    ArchiveStore,
)
from callrec.config import Settings
from callrec.engine.journalfile import SIDECAR_SUFFIX, sidecar_path
from callrec.exceptions import CallrecError, CatalogError
from callrec.media.decode import (
    FLAC_FORMAT,
    OPUS_FORMAT,
    SUFFIXES,
    AudioFileError,
    pcm_blocks,
)
from callrec.media.encode import FLAC, EncodeError, Encoding, Samples, encode_file
from callrec.media.verify import VerifyError, verify_copy
from callrec.media.wav import fsync_dir, sha256_file

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a claim lasts before another process may take it over (its holder is renewed
#: before the rename; a holder on this host that died is taken over at once).
CLAIM_SECONDS: Final = 3600.0
#: Recordings one sweep looks at, at most (the next sweep takes the rest).
SWEEP_LIMIT: Final = 1000
#: The stage names :func:`transcode_one` reports to its ``step`` hook, in order (tests kill
#: the process at each).
STEPS: Final = ("claimed", "encoded", "verified", "renamed", "sidecar", "switched", "removed")
#: The key of a sidecar that says what archive replaced its recording's WAV.
SIDECAR_ARCHIVE: Final = "archive"


class ArchiveError(CallrecError):
    """A recording that could not be archived: its WAV changed, the copy did not verify, or
    the encoder failed. The WAV stays, catalogued."""


class _Stopped(Exception):
    """The recording in hand is let go, untouched: the process is stopping, or it holds no
    audio at all."""


class Via(Protocol):
    """Runs a catalogue write: at once (the command line), or on ``serve``'s catalogue
    writer thread (:class:`callrec.engine.CatalogWriter`)."""

    def __call__(self, fn: Callable[[], T], /) -> T: ...


def direct(fn: Callable[[], T], /) -> T:
    return fn()


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveOutcome:
    """What became of one recording."""

    recording_id: int
    #: ``archived``, ``failed``, ``skipped`` (claimed by another, or changed), ``would``
    #: (a dry run).
    result: str
    format: str
    path: str
    wav_bytes: int = 0
    archive_bytes: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(slots=True)
class SweepReport:
    """What one sweep did."""

    format: str
    outcomes: list[ArchiveOutcome] = field(default_factory=list)
    #: Files left by an interrupted run that were removed (paths under the root).
    cleaned: list[str] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def saved_bytes(self) -> int:
        return sum(o.wav_bytes - o.archive_bytes for o in self.outcomes if o.result == "archived")


def encoding_for(fmt: str, *, opus_bitrate: int, channels: int) -> Encoding:
    """The encoder of an archive format. Opus gets ``opus_bitrate`` per channel: a stereo
    SIP recording (one party each side) keeps each voice as good as a mono call's."""
    if fmt == FLAC_FORMAT:
        return FLAC
    if fmt == OPUS_FORMAT:
        return Encoding(
            codec="libopus",
            container="ogg",
            bit_rate=opus_bitrate * channels,
            options=(("application", "voip"),),
        )
    raise ArchiveError(f"unknown archive format {fmt!r} (flac or opus)")


def archive_names(wav_path: str, fmt: str, rec_id: int) -> tuple[str, str]:
    """The archive's catalogued path: the WAV's with the format's suffix, or, should another
    recording hold that name (a later call the engine gave the WAV's freed name, already
    archived), the same with the recording's id, which no other can have."""
    path = PurePosixPath(wav_path)
    return (
        str(path.with_suffix(SUFFIXES[fmt])),
        str(path.with_name(f"{path.stem}.{rec_id}{SUFFIXES[fmt]}")),
    )


def temp_path(wav: Path, fmt: str) -> Path:
    """Where the copy is encoded, hidden beside the WAV; one name per recording and format
    (only the claim's holder writes it, and the next holder removes what a crash left)."""
    return wav.with_name(f".{wav.stem}.archiving{SUFFIXES[fmt]}")


# -- claims --------------------------------------------------------------------------------


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_is_stale(claimed_by: str | None, claimed_until: datetime | None, now: datetime) -> bool:
    """Whether another process's claim may be taken over: it ran out, or its holder was a
    process of this host that no longer runs."""
    if claimed_by is None or claimed_until is None or claimed_until <= now:
        return True
    host, _, rest = claimed_by.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # another sweep of this process: it lets go of what it holds
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# -- one recording -------------------------------------------------------------------------


def transcode_one(
    catalog: Catalog,
    root: Path,
    rec_id: int,
    *,
    fmt: str,
    opus_bitrate: int,
    now: datetime,
    holder: str | None = None,
    via: Via = direct,
    step: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> ArchiveOutcome:
    """Archive one recording as the module docstring says; never raises for the recording's
    own trouble (an :class:`ArchiveOutcome` ``failed`` says why), only when the catalogue
    fails (:class:`CatalogError`)."""
    store = ArchiveStore(catalog)
    holder = holder or new_holder()
    report = step or (lambda _name: None)
    rec = via(
        lambda: store.claim(
            rec_id,
            fmt=fmt,
            holder=holder,
            until=now + timedelta(seconds=CLAIM_SECONDS),
            now=now,
            stale=lambda by, until: claim_is_stale(by, until, now),
        )
    )
    if rec is None:
        return ArchiveOutcome(recording_id=rec_id, result="skipped", format=fmt, path="")
    report("claimed")
    wav = root / rec.path
    primary, other = archive_names(rec.path, fmt, rec_id)
    final_rel = other if store.path_catalogued(primary) else primary
    final = root / final_rel
    temp = temp_path(wav, fmt)
    renamed = False
    try:
        archived = _copy(rec, wav, temp, fmt, opus_bitrate, report, stop)
        if not via(lambda: store.holds(rec_id, holder, until=_later(now))):
            raise ArchiveConflict(f"recording {rec_id}: the claim to archive it was lost")
        if store.path_catalogued(final_rel):
            raise ArchiveError(f"{final_rel} exists and is another recording's")
        os.replace(temp, final)
        renamed = True
        fsync_dir(final.parent)
        report("renamed")
        stamp = ArchivedFile(
            format=fmt,
            path=final_rel,
            size=archived.size,
            sha256=archived.sha256,
            frames=archived.frames,
            archived_at=now,
        )
        _write_archive_sidecar(wav, final, stamp, rec)
        report("sidecar")
        via(lambda: store.switch(rec_id, holder, stamp))
    except _Stopped:
        temp.unlink(missing_ok=True)
        via(lambda: store.release(rec_id, holder))
        return ArchiveOutcome(recording_id=rec_id, result="skipped", format=fmt, path=rec.path)
    except ArchiveConflict as exc:
        temp.unlink(missing_ok=True)
        # A deleted recording's archive goes (its sidecar would bring it back in a rebuild);
        # one whose claim another process took is that process's to replace or remove.
        if renamed and catalog.get(rec_id) is None:
            _drop_uncatalogued(catalog, final, final_rel)
        logger.info("recording %d not archived: %s", rec_id, exc)
        return ArchiveOutcome(
            recording_id=rec_id, result="skipped", format=fmt, path=rec.path, error=str(exc)
        )
    except OSError as exc:
        # The disk (full, read-only ...), not the recording: let go, the next sweep retries.
        temp.unlink(missing_ok=True)
        if renamed:
            _drop_uncatalogued(catalog, final, final_rel)
        logger.warning("recording %d not archived as %s, for now: %s", rec_id, fmt, exc)
        via(lambda: store.release(rec_id, holder))
        return ArchiveOutcome(
            recording_id=rec_id, result="skipped", format=fmt, path=rec.path, error=str(exc)
        )
    except (ArchiveError, AudioFileError, EncodeError, VerifyError) as exc:
        temp.unlink(missing_ok=True)
        if renamed:
            _drop_uncatalogued(catalog, final, final_rel)
        message = str(exc)
        logger.warning("recording %d not archived as %s: %s", rec_id, fmt, message)
        via(lambda: store.fail(rec_id, holder, message))
        return ArchiveOutcome(
            recording_id=rec_id, result="failed", format=fmt, path=rec.path, error=message
        )
    except CatalogError:
        temp.unlink(missing_ok=True)
        if renamed:
            _drop_uncatalogued(catalog, final, final_rel)
        raise
    report("switched")
    _remove_wav(wav)
    via(lambda: store.finished(rec_id))
    report("removed")
    logger.info(
        "recording %d archived as %s: %s (%d bytes, was %d)",
        rec_id,
        fmt,
        final_rel,
        archived.size,
        rec.size_bytes or 0,
    )
    return ArchiveOutcome(
        recording_id=rec_id,
        result="archived",
        format=fmt,
        path=final_rel,
        wav_bytes=rec.size_bytes or 0,
        archive_bytes=archived.size,
        seconds=archived.frames / archived.sample_rate if archived.sample_rate else 0.0,
    )


def _later(now: datetime) -> datetime:
    # The lease runs from the renewal, not the sweep's start (a long run of recordings).
    return max(now, datetime.now(now.tzinfo)) + timedelta(seconds=CLAIM_SECONDS)


@dataclass(frozen=True, slots=True)
class _Copy:
    size: int
    sha256: str
    frames: int
    sample_rate: int


def _copy(
    rec: RecordingInfo,
    wav: Path,
    temp: Path,
    fmt: str,
    opus_bitrate: int,
    report: Callable[[str], None],
    stop: threading.Event | None,
) -> _Copy:
    """Encode ``wav`` into ``temp``, make it durable, decode it back and check it."""
    if rec.sha256 is not None and sha256_file(wav) != rec.sha256:
        raise ArchiveError(f"{rec.path} is not the file catalogued (its SHA-256 differs)")
    source, blocks = pcm_blocks(wav)
    if source.frames == 0:
        raise _Stopped  # no audio: nothing to save, and no archive format holds nothing
    temp.unlink(missing_ok=True)  # a crash's leftover: only the claim's holder writes it
    encoding = encoding_for(fmt, opus_bitrate=opus_bitrate, channels=source.channels)
    try:
        encode_file(
            _watched(blocks, stop),
            temp,
            encoding=encoding,
            sample_rate=source.sample_rate,
            channels=source.channels,
        )
        filemodes.apply(temp)  # PyAV made it under the umask
        _fsync_file(temp)
        report("encoded")
        verify_copy(wav, source, temp, fmt)
        report("verified")
        return _Copy(
            size=temp.stat().st_size,
            sha256=sha256_file(temp),
            frames=source.frames,
            sample_rate=source.sample_rate,
        )
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _watched(blocks: Iterator[Samples], stop: threading.Event | None) -> Iterator[Samples]:
    for block in blocks:
        if stop is not None and stop.is_set():
            raise _Stopped
        yield block


# -- files ---------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_archive_sidecar(wav: Path, final: Path, stamp: ArchivedFile, rec: RecordingInfo) -> None:
    """The archive's sidecar: the WAV's (its start and finish) plus what the archive is, so
    that a catalogue rebuilt from the disk names the archive. Written whole, then synced."""
    source = sidecar_path(wav)
    try:
        data: dict[str, Any] = json.loads(source.read_bytes().decode("utf-8", "surrogatepass"))
    except FileNotFoundError:
        return  # a recording from before sidecars: the catalogue alone knows it
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read the sidecar of {rec.path}: {exc}") from exc
    data[SIDECAR_ARCHIVE] = {
        "format": stamp.format,
        "path": stamp.path,
        "size_bytes": stamp.size,
        "sha256": stamp.sha256,
        "frames": stamp.frames,
        "archived_at": stamp.archived_at.isoformat(),
        "wav_path": rec.path,
        "wav_sha256": rec.sha256,
    }
    target = sidecar_path(final)
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=1)
    filemodes.write_new(temporary, text.encode("utf-8", "surrogatepass"))
    _fsync_file(temporary)
    os.replace(temporary, target)
    fsync_dir(target.parent)


def read_archive_sidecar(path: Path) -> tuple[str, ArchivedFile, str | None] | None:
    """(the recording's uid, the archive, the WAV's SHA-256) from an archive's sidecar, or
    None when ``path`` is not one."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
        entry = data[SIDECAR_ARCHIVE]
        uid = data["start"]["rec"]["uid"]  # a crash's recording may have no finish here
        archived = ArchivedFile(
            format=str(entry["format"]),
            path=str(entry["path"]),
            size=int(entry["size_bytes"]),
            sha256=str(entry["sha256"]),
            frames=int(entry["frames"]),
            archived_at=datetime.fromisoformat(entry["archived_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(uid, str) or not uid:
        return None
    wav_sha = entry.get("wav_sha256")
    return str(uid), archived, wav_sha if isinstance(wav_sha, str) else None


def adopt_archives(catalog: Catalog, sidecars: list[Path]) -> int:
    """Switch the rows of recordings whose archive sidecars are ``sidecars`` to their
    archive (a catalogue rebuild). How many rows changed."""
    store = ArchiveStore(catalog)
    changed = 0
    for path in sidecars:
        found = read_archive_sidecar(path)
        if found is None:
            logger.warning("archive sidecar %s unreadable, skipped", path)
            continue
        uid, stamp, wav_sha256 = found
        if not path.with_name(path.name.removesuffix(SIDECAR_SUFFIX)).is_file():
            continue  # the archive itself is gone
        changed += store.adopt(uid, stamp, wav_sha256)
    return changed


def is_archive_sidecar(path: Path) -> bool:
    name = path.name
    return any(name.endswith(SUFFIXES[f] + SIDECAR_SUFFIX) for f in (FLAC_FORMAT, OPUS_FORMAT))


def _remove_wav(wav: Path) -> None:
    """The WAV and its sidecar, once the archive is catalogued (a sidecar left behind would
    bring the WAV's row back in a rebuild... which the archive's sidecar then switches)."""
    for target in (wav, sidecar_path(wav)):
        target.unlink(missing_ok=True)
    fsync_dir(wav.parent)


def _drop_uncatalogued(catalog: Catalog, final: Path, final_rel: str) -> None:
    """An archive renamed into place whose switch did not happen: removed, with its
    sidecar, unless some row names it (then it is not ours to remove)."""
    try:
        if ArchiveStore(catalog).path_catalogued(final_rel):
            return
    except CatalogError:
        return  # cannot tell: the next sweep's holder replaces it
    final.unlink(missing_ok=True)
    sidecar_path(final).unlink(missing_ok=True)


# -- sweeps --------------------------------------------------------------------------------


def recover(
    catalog: Catalog, root: Path, now: datetime, *, via: Via = direct, node: str | None = None
) -> list[str]:
    """Finish what interrupted runs left: a claim whose holder died is let go and its
    files removed (the WAV is still the one catalogued); a switched recording whose WAV is
    still on disk loses it. Returns the paths removed. With ``node``, only that node's
    recordings (and those of no node): another node's files are on its disk."""
    store = ArchiveStore(catalog)
    cleaned: list[str] = []
    for item in store.unfinished():
        if not claim_is_stale(item.claimed_by, item.claimed_until, now):
            continue
        rec = catalog.get(item.recording_id)
        if rec is None or (node is not None and rec.node not in (None, node)):
            continue
        wav = root / item.wav_path
        if item.state == CLAIMED and rec.path == item.wav_path:
            # The WAV is still the one catalogued: whatever the run made goes.
            leftovers = [temp_path(wav, item.format)]
            for name in archive_names(item.wav_path, item.format, item.recording_id):
                if not store.path_catalogued(name):
                    leftovers += [root / name, sidecar_path(root / name)]
            cleaned += _unlink(root, leftovers)
            _release(store, via, item)
        elif item.state == SWITCHED and rec.path != item.wav_path:
            # The archive is the one catalogued: the WAV goes.
            cleaned += _unlink(root, [wav, sidecar_path(wav)])
            _finished(store, via, item)
    return cleaned


def _unlink(root: Path, paths: list[Path]) -> list[str]:
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path.relative_to(root).as_posix())
        fsync_dir(path.parent)
    return removed


def _release(store: ArchiveStore, via: Via, item: ArchiveInfo) -> None:
    holder = item.claimed_by or ""
    via(lambda: store.release(item.recording_id, holder))


def _finished(store: ArchiveStore, via: Via, item: ArchiveInfo) -> None:
    via(lambda: store.finished(item.recording_id))


def archive_sweep(
    catalog: Catalog,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
    ids: list[int] | None = None,
    fmt: str | None = None,
    limit: int = SWEEP_LIMIT,
    via: Via = direct,
    step: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> SweepReport:
    """Archive the finished recordings that ended more than ``archive_after_days`` before
    ``now`` (or the recordings ``ids``, whatever their age) as ``fmt`` (default the
    ``archive_format`` setting; nothing when both are empty). Blocking: run it on a worker
    thread. Idempotent and safe from several processes at once. Only this node's
    recordings (and those from before nodes): the others are on their nodes' disks, whose
    own sweeps archive them (docs/scaling.md)."""
    fmt = settings.archive_format if fmt is None else fmt
    report = SweepReport(format=fmt)
    if not fmt:
        return report
    root = settings.recordings_dir.resolve()
    store = ArchiveStore(catalog)
    if not dry_run:
        report.cleaned = recover(catalog, root, now, via=via, node=settings.node_name)
    ended_before = now - timedelta(days=settings.archive_after_days)
    holder = new_holder()
    candidates = store.candidates(
        ended_before=ended_before, limit=limit, ids=ids, node=settings.node_name
    )
    for rec in candidates:
        if stop is not None and stop.is_set():
            break
        if dry_run:
            report.outcomes.append(
                ArchiveOutcome(
                    recording_id=rec.id,
                    result="would",
                    format=fmt,
                    path=rec.path,
                    wav_bytes=rec.size_bytes or 0,
                )
            )
            continue
        report.outcomes.append(
            transcode_one(
                catalog,
                root,
                rec.id,
                fmt=fmt,
                opus_bitrate=settings.archive_opus_bitrate,
                now=now,
                holder=holder,
                via=via,
                step=step,
                stop=stop,
            )
        )
    return report
