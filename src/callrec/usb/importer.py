"""Import phone-local (USB) recordings into the catalogue, through the recording engine.

Each imported file becomes one catalogue row with source ``usb``: a playable WAV (decoded as
the server decodes, 16 kHz for G.722) under ``<import_dir>/<date>/<name>.wav`` and the phone's
original file, byte for byte, beside it as ``<name>.orig``; the row records the original's path
and SHA-256. Importing a file whose SHA-256 is already catalogued writes nothing and returns the
existing row with ``duplicate=True``.

An import is a one-shot recording of the engine (:meth:`RecordingEngine.record_file`): the
same admission (disk reserve), row-first name claim, files, finish and observers as a call,
its audio written all at once off the event loop. Both front ends use :class:`Importer`: the
web upload with the server's engine, ``callrec file import`` with one of its own
(:func:`callrec.service.importing`).

Rows: status ``complete``, or ``recovered`` when the file was damaged (cut short, header
disagreeing with the file) and what it held was read; stop reason ``imported``; the reader's
findings in ``extra["import"]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path, PurePosixPath
from typing import Any, Final

from callrec.catalog import Catalog, RecordingInfo
from callrec.engine import Original, RecordingEngine, RecordingSpec
from callrec.engine.spec import IMPORTED
from callrec.exceptions import (
    CallrecError,
    CatalogError,
    ConfigError,
    LocalFileError,
    ResourceError,
)
from callrec.media.localfile import LocalFileInfo, scan
from callrec.media.naming import sanitize_component
from callrec.usb.source import LocalFileSource

logger = logging.getLogger(__name__)

#: Defaults of the two settings (``usb_import_dir``, ``usb_import_max_bytes``).
DEFAULT_IMPORT_DIR: Final = "usb"
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
#: The catalogue's stop reason for every imported recording.
STOP_REASON: Final = IMPORTED
#: Suffix of the phone's original file kept beside the playable WAV.
ORIGINAL_SUFFIX: Final = ".orig"
#: Seconds an import waits for the catalogue to take its row before answering without it.
CATALOGUE_WAIT: Final = 30.0
#: Longest file-name stem kept from the original name.
_MAX_STEM: Final = 100
#: ``SystemTime`` in ``Record_[SystemTime]``: date and time digits, optionally separated
#: (``20261126161130``, ``2026-11-26_16-11-30``, ``20261126_161130`` ...).
_NAME_TIME: Final = re.compile(
    r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})[-_T .]?(\d{2})[-_:.]?(\d{2})[-_:.]?(\d{2})(?!\d)"
)


class ImportFailedError(CallrecError):
    """A good file that could not be stored (disk full, a write error); ``reason`` says
    which, as a stop reason of the engine (``disk_full`` ...)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImportTooLargeError(LocalFileError):
    """A file over the import size limit; the web answers it with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = "too_large"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """One imported (or recognised) file."""

    #: The catalogue row: the new one, or the existing one for a duplicate.
    recording: RecordingInfo
    #: The file was imported before; nothing was written this time.
    duplicate: bool
    #: Hex SHA-256 of the original file.
    original_sha256: str
    #: What the reader found wrong with the file (empty for a duplicate).
    problems: tuple[str, ...] = ()


class Importer:
    """Imports phone-local files through ``engine``; ``catalog`` answers the duplicate check
    and gives back the finished rows (reads, off the event loop)."""

    def __init__(
        self,
        engine: RecordingEngine,
        catalog: Catalog,
        *,
        import_dir: str = DEFAULT_IMPORT_DIR,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.import_dir = import_dir
        self.max_bytes = max_bytes
        # Holds the duplicate check and the import together, so that two uploads of one
        # file in this process cannot both be imported.
        self._lock = asyncio.Lock()

    async def import_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        device: str = "",
        tz: tzinfo | None = None,
    ) -> ImportResult:
        """Import the phone-local file at ``path``; see :meth:`import_bytes`.

        ``name`` (default: the file's own name) names the recording; the file's modification
        time dates it when the name carries no time. The size limit is checked before reading.
        """
        path = Path(path)
        data, mtime = await asyncio.to_thread(_read, path, self.max_bytes)
        return await self.import_bytes(
            data, name=name or path.name, device=device, file_time=mtime, tz=tz
        )

    async def import_bytes(
        self,
        data: bytes,
        *,
        name: str,
        device: str = "",
        file_time: datetime | None = None,
        tz: tzinfo | None = None,
    ) -> ImportResult:
        """Import a phone-local file held in ``data``.

        ``name`` is the original file name (a web upload's is untrusted: only a sanitised stem
        of it reaches a path). The recording starts at the ``SystemTime`` in the name, read in
        ``tz`` (the phone's clock; default: this machine's zone); else ``file_time`` (the
        file's last write, the end of the recording) minus the duration; else now. ``device``
        is the phone's MAC when known.

        Raises :class:`ImportTooLargeError` over ``max_bytes``, :class:`LocalFileError` for a
        file that cannot be read or decoded (the message says why), :class:`ConfigError` for
        an ``import_dir`` outside the recordings, :class:`ImportFailedError` when it could not
        be stored (disk full: reason ``disk_full``), :class:`CatalogError` when the catalogue
        fails.
        """
        _check_size(len(data), self.max_bytes)
        sha256 = hashlib.sha256(data).hexdigest()
        existing = await asyncio.to_thread(self.catalog.find_original, sha256)
        if existing is not None:
            return ImportResult(recording=existing, duplicate=True, original_sha256=sha256)
        info = await asyncio.to_thread(scan, data)
        codec = info.require_codec()
        if not info.units:
            # A header alone (a phone that stopped at once, a truncated copy) would be a
            # 0-second recording that plays nothing: refused before anything is stored.
            raise LocalFileError("no audio: the file holds a header and no whole unit of audio")
        start, start_from = _start_time(name, info, file_time, tz)
        folder = _import_base(self.import_dir) / start.astimezone(tz).strftime("%Y-%m-%d")
        stem = sanitize_component(PurePosixPath(name.replace("\\", "/")).stem, max_len=_MAX_STEM)
        spec = RecordingSpec(
            source="usb",
            session_id="",
            codec=codec,
            device=device,
            path=folder / f"{stem}.wav",
            start_time=start,
            extra={"import": _extra(name, info, start_from)},
            original=Original(data=data, sha256=sha256, suffix=ORIGINAL_SUFFIX),
            live=False,
        )
        async with self._lock:
            existing = await asyncio.to_thread(self.catalog.find_original, sha256)
            if existing is not None:
                return ImportResult(recording=existing, duplicate=True, original_sha256=sha256)
            try:
                finished = await self.engine.record_file(spec, LocalFileSource(info, data))
            except ResourceError as exc:
                self.engine.admission.refuse(exc.reason)
                raise ImportFailedError(f"cannot import {name}: {exc}", reason=exc.reason) from exc
        if finished.status == "failed" or finished.stop_reason != STOP_REASON:
            raise ImportFailedError(
                f"cannot import {name}: {finished.stop_reason.replace('_', ' ')} "
                f"(recording {finished.uid} is marked {finished.status})",
                reason=finished.stop_reason,
            )
        # Stored and journaled: the answer also names its row, once the journal applied it.
        try:
            await self.engine.journal.wait_applied(finished.seq, CATALOGUE_WAIT)
        except TimeoutError:
            raise CatalogError(
                f"{name} is stored, but the catalogue did not take it within "
                f"{CATALOGUE_WAIT:.0f} s; it will be catalogued when the catalogue can"
            ) from None
        recording = await asyncio.to_thread(self.catalog.get_uid, finished.uid)
        if recording is None:  # pragma: no cover - the row was just written
            raise CatalogError(f"imported recording {finished.uid} vanished from the catalogue")
        logger.info(
            "imported %s as #%d %s (%.2f s%s)",
            name,
            recording.id,
            recording.path,
            recording.duration or 0.0,
            ", damaged" if info.damaged else "",
        )
        return ImportResult(
            recording=recording, duplicate=False, original_sha256=sha256, problems=info.problems
        )


def _read(path: Path, max_bytes: int) -> tuple[bytes, datetime]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    _check_size(size, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return data, datetime.fromtimestamp(path.stat().st_mtime, UTC)


def name_time(name: str, tz: tzinfo | None = None) -> datetime | None:
    """The ``SystemTime`` in a ``Record_[SystemTime]`` name as an aware datetime, or None."""
    match = _NAME_TIME.search(PurePosixPath(name.replace("\\", "/")).name)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        naive = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return naive.replace(tzinfo=tz) if tz is not None else naive.astimezone()


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImportTooLargeError(
            f"file is {size} bytes, over the import limit of {max_bytes} bytes "
            "(setting usb_import_max_bytes)"
        )


def _start_time(
    name: str, info: LocalFileInfo, file_time: datetime | None, tz: tzinfo | None
) -> tuple[datetime, str]:
    from_name = name_time(name, tz)
    if from_name is not None:
        return from_name.astimezone(UTC), "name"
    if file_time is not None:
        if file_time.tzinfo is None:
            raise ValueError("file_time must be timezone-aware")
        return (file_time - timedelta(seconds=info.duration)).astimezone(UTC), "file_time"
    return datetime.now(UTC), "import_time"


def _import_base(import_dir: str) -> PurePosixPath:
    """``import_dir`` as a folder under the recordings; ConfigError when it would leave them
    (the engine checks the resolved path again, symlinks and all)."""
    parts = PurePosixPath(import_dir.replace("\\", "/")).parts
    if not parts or PurePosixPath(import_dir).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ConfigError(
            f"usb_import_dir {import_dir!r} must be a relative folder under recordings_dir"
        )
    return PurePosixPath(*parts)


def _extra(name: str, info: LocalFileInfo, start_from: str) -> dict[str, Any]:
    header = info.header
    return {
        "original_name": name,
        "codec_name": header.codec,
        "byte_order": header.byte_order,
        "unit_size": header.unit_size,
        "increment": header.increment,
        "data_size": header.data_size,
        "file_size": info.file_size,
        "units": info.units,
        "rtp_headers": info.rtp_headers,
        "damaged": info.damaged,
        "problems": list(info.problems),
        "start_time_from": start_from,
    }
