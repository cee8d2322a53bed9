"""Start-up recovery: recordings a crash left open are repaired, finalised and catalogued."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callrec.catalog import Catalog, RecordingInfo
from callrec.engine.spec import CRASH
from callrec.media.wav import WavRepairError, being_written, repair_wav

logger = logging.getLogger(__name__)


def recover_unfinished(
    catalog: Catalog,
    root: Path,
    only: Callable[[RecordingInfo], bool] | None = None,
    node: str | None = None,
) -> list[str]:
    """Finish every row still marked ``recording`` (or those of them ``only`` picks: the
    calls of one crashed worker while the others record); returns one line per recording.

    A row whose file a live process still writes (it holds the file's lock: an orphaned
    worker, another node's process) is left alone. A recording that ended while its end was
    not yet catalogued is finished here as ``crash``, and its journal's finish, applied
    later, replaces that guess (:meth:`Catalog.apply_journal`). With ``node``, only that
    node's rows (and those of no node): another node's files are not here, and its open rows
    are its calls in progress or its own to recover when it restarts."""
    report: list[str] = []
    for rec in catalog.unfinished(node):
        if only is not None and not only(rec):
            continue
        path = root / rec.path
        if being_written(path):
            continue
        _repair_companions(rec.extra, rec.sample_rate, root)
        try:
            info = repair_wav(path, sample_rate=rec.sample_rate, channels=rec.channels)
        except (WavRepairError, OSError) as exc:
            missing = isinstance(exc, FileNotFoundError)
            catalog.finish_recording(
                rec.id,
                status="failed",
                stop_reason=CRASH,
                end_time=rec.start_time,
                duration=0.0,
                size_bytes=0 if missing else path.stat().st_size,
                sha256=None,
                counters=None,
            )
            why = "file missing" if missing else f"cannot repair ({exc})"
            report.append(f"#{rec.id} {rec.path}: {why}, marked failed")
            logger.warning("after a crash: %s", report[-1])
            continue
        # The file's modification time is when the last audio reached it.
        end_time = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        catalog.finish_recording(
            rec.id,
            status="recovered",
            stop_reason=CRASH,
            end_time=max(end_time, rec.start_time),
            duration=info.duration,
            size_bytes=info.size_bytes,
            sha256=info.sha256,
            counters=None,
        )
        report.append(f"#{rec.id} {rec.path}: {info.duration:.2f} s recovered")
        logger.warning("after a crash: %s", report[-1])
    return report


def _repair_companions(extra: dict[str, Any], sample_rate: int, root: Path) -> None:
    """Repair the files a row lists in ``extra["companions"]`` beside its own (SIP writes a
    mono mix next to each stereo recording); a companion that cannot be repaired is logged."""
    companions = extra.get("companions")
    if not isinstance(companions, list):
        return
    base = root.resolve()
    for item in companions:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            continue
        path = (root / item["path"]).resolve()
        if not path.is_relative_to(base):
            logger.warning("after a crash: companion %s is outside the recordings", item["path"])
            continue
        channels = item.get("channels", 1)
        try:
            repair_wav(path, sample_rate=sample_rate, channels=channels if channels == 2 else 1)
        except (WavRepairError, OSError) as exc:
            logger.warning("after a crash: companion %s not repaired: %s", item["path"], exc)
