"""Import phone-local (USB) recordings into the catalogue, beside the server's recordings.

Each imported file becomes one catalogue row with source ``usb``: a playable WAV (decoded as
the server decodes, 16 kHz for G.722) under ``<import_dir>/<date>/<name>.wav`` and the phone's
original file, byte for byte, beside it as ``<name>.orig``; the row records the original's path
and SHA-256. Importing a file whose SHA-256 is already catalogued writes nothing and returns the
existing row with ``duplicate=True``.

This is the library entry point for both front ends: ``callrec file import`` calls
:func:`import_file`, the web upload calls :func:`import_bytes` (or :func:`import_file` on its
spooled temporary file) with the upload's file name. Both block (disk, catalogue): run them in
an executor from async code.

Rows: status ``complete``, or ``recovered`` when the file was damaged (cut short, header
disagreeing with the file) and what it held was read; stop reason ``imported``; the reader's
findings in ``extra["import"]``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path, PurePosixPath
from typing import Any, Final

from callrec.catalog import Catalog, NewRecording, RecordingInfo
from callrec.exceptions import CatalogError, ConfigError, LocalFileError
from callrec.media.convert import write_wav
from callrec.media.localfile import LocalFileInfo, scan
from callrec.media.naming import sanitize_component
from callrec.media.wav import WavInfo

logger = logging.getLogger(__name__)

#: Defaults of the two settings (``usb_import_dir``, ``usb_import_max_bytes``).
DEFAULT_IMPORT_DIR: Final = "usb"
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
#: The catalogue's stop reason for every imported recording.
STOP_REASON: Final = "imported"
#: Suffix of the phone's original file kept beside the playable WAV.
ORIGINAL_SUFFIX: Final = ".orig"
#: Longest file-name stem kept from the original name.
_MAX_STEM: Final = 100
#: ``SystemTime`` in ``Record_[SystemTime]``: date and time digits, optionally separated
#: (``20261126161130``, ``2026-11-26_16-11-30``, ``20261126_161130`` ...).
_NAME_TIME: Final = re.compile(
    r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})[-_T .]?(\d{2})[-_:.]?(\d{2})[-_:.]?(\d{2})(?!\d)"
)

# Holds the duplicate check and the row's creation together, so that two uploads of one file
# in this process cannot both be imported.
_import_lock = threading.Lock()


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


def import_file(
    catalog: Catalog,
    root: Path,
    path: Path,
    *,
    name: str | None = None,
    device: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    import_dir: str = DEFAULT_IMPORT_DIR,
    tz: tzinfo | None = None,
) -> ImportResult:
    """Import the phone-local file at ``path``; see :func:`import_bytes`.

    ``name`` (default: the file's own name) names the recording; the file's modification
    time dates it when the name carries no time. The size limit is checked before reading.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    _check_size(size, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return import_bytes(
        catalog,
        root,
        data,
        name=name or path.name,
        device=device,
        file_time=mtime,
        max_bytes=max_bytes,
        import_dir=import_dir,
        tz=tz,
    )


def import_bytes(
    catalog: Catalog,
    root: Path,
    data: bytes,
    *,
    name: str,
    device: str = "",
    file_time: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    import_dir: str = DEFAULT_IMPORT_DIR,
    tz: tzinfo | None = None,
) -> ImportResult:
    """Import a phone-local file held in ``data`` into ``catalog``, files under ``root``.

    ``name`` is the original file name (a web upload's is untrusted: only a sanitised stem of
    it reaches a path). The recording starts at the ``SystemTime`` in the name, read in ``tz``
    (the phone's clock; default: this machine's zone); else ``file_time`` (the file's last
    write, the end of the recording) minus the duration; else now. ``device`` is the phone's
    MAC when known.

    Raises :class:`ImportTooLargeError` over ``max_bytes``, :class:`LocalFileError` for a
    file that cannot be read or decoded (the message says why), :class:`ConfigError` for an
    ``import_dir`` outside ``root``, :class:`CatalogError` when the catalogue fails (the
    files written are then removed).
    """
    _check_size(len(data), max_bytes)
    sha256 = hashlib.sha256(data).hexdigest()
    existing = catalog.find_original(sha256)
    if existing is not None:
        return ImportResult(recording=existing, duplicate=True, original_sha256=sha256)
    info = scan(data)
    codec = info.require_codec()
    start, start_from = _start_time(name, info, file_time, tz)
    base = _import_base(Path(root), import_dir)
    folder = base / start.astimezone(tz).strftime("%Y-%m-%d")
    stem = sanitize_component(PurePosixPath(name.replace("\\", "/")).stem, max_len=_MAX_STEM)
    with _import_lock:
        existing = catalog.find_original(sha256)
        if existing is not None:
            return ImportResult(recording=existing, duplicate=True, original_sha256=sha256)
        wav_path, original_path, wav = _write_files(folder, stem, info, data)
        try:
            rec_id = catalog.create_recording(
                NewRecording(
                    source="usb",
                    session_id="",
                    device=device,
                    codec=codec.name,
                    start_time=start,
                    sample_rate=codec.sample_rate,
                    channels=1,
                    path=_relative(wav_path, root),
                    extra={"import": _extra(name, info, start_from)},
                    original_path=_relative(original_path, root),
                    original_sha256=sha256,
                )
            )
        except BaseException:
            wav_path.unlink(missing_ok=True)
            original_path.unlink(missing_ok=True)
            raise
    catalog.finish_recording(
        rec_id,
        status="recovered" if info.damaged else "complete",
        stop_reason=STOP_REASON,
        end_time=start + timedelta(seconds=wav.duration),
        duration=wav.duration,
        size_bytes=wav.size_bytes,
        sha256=wav.sha256,
        counters=None,
    )
    recording = catalog.get(rec_id)
    if recording is None:  # pragma: no cover - the row was just written
        raise CatalogError(f"imported recording {rec_id} vanished from the catalogue")
    logger.info(
        "imported %s as #%d %s (%.2f s%s)",
        name,
        rec_id,
        recording.path,
        wav.duration,
        ", damaged" if info.damaged else "",
    )
    return ImportResult(
        recording=recording, duplicate=False, original_sha256=sha256, problems=info.problems
    )


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


def _import_base(root: Path, import_dir: str) -> Path:
    parts = PurePosixPath(import_dir.replace("\\", "/")).parts
    if not parts or PurePosixPath(import_dir).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ConfigError(
            f"usb_import_dir {import_dir!r} must be a relative folder under recordings_dir"
        )
    base = root.resolve().joinpath(*parts)
    if not base.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"usb_import_dir {import_dir!r} resolves outside recordings_dir")
    return base


def _write_files(
    folder: Path, stem: str, info: LocalFileInfo, data: bytes
) -> tuple[Path, Path, WavInfo]:
    """The playable WAV and the original, under the first ``stem[_n]`` free for both."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(10000):
        candidate = stem if number == 0 else f"{stem}_{number}"
        wav_path = folder / f"{candidate}.wav"
        original_path = folder / f"{candidate}{ORIGINAL_SUFFIX}"
        if os.path.lexists(wav_path) or os.path.lexists(original_path):
            continue
        try:
            wav = write_wav(info, data, wav_path)
        except FileExistsError:
            continue
        try:
            with original_path.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            wav_path.unlink(missing_ok=True)
            original_path.unlink(missing_ok=True)
            raise
        return wav_path, original_path, wav
    raise CatalogError(f"no free file name for {stem} in {folder}")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(Path(root).resolve()).as_posix()


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
