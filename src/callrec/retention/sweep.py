"""The sweeps: retention (by policy or ``--before``) and the disk quota, as plain functions
over the catalogue, idempotent and safe to run twice at once or from two processes.

Each batch is: the catalogue deletes the rows and writes their tombstones and audit rows in
one transaction (:mod:`callrec.catalog.retirement`), then the files go, then the tombstones
are marked done. So a catalogued file is never removed without a tombstone saying why; a
crash after the transaction leaves pending tombstones that :func:`finish_pending` (the start
of every sweep) completes; a file that vanished while its row stayed (removed by hand, or by
an older delete that crashed) is no obstacle: its row is tombstoned like any other.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from callrec.catalog import Catalog, RecordingInfo, RetentionPolicy, RetentionRule, TombstoneInfo
from callrec.catalog.retirement import BATCH, BY_RETENTION
from callrec.config import Settings, parse_quota
from callrec.jobs.events import webhook_events
from callrec.retention.files import remove_files

logger = logging.getLogger(__name__)


def policy_of(settings: Settings) -> RetentionPolicy:
    """The retention policy the settings describe."""
    return RetentionPolicy(
        default_days=settings.retention_days,
        rules=tuple(RetentionRule.parse(r) for r in settings.retention_rules),
    )


@dataclass(slots=True)
class SweepResult:
    """What one sweep did (or, with ``dry_run``, would do)."""

    dry_run: bool
    #: Recordings deleted (or, in a dry run, that would be).
    deleted: int = 0
    #: Their catalogued sizes, added up.
    bytes: int = 0
    files_removed: int = 0
    #: Tombstones of earlier deletes whose files this sweep removed (a crash's leftovers).
    finished_pending: int = 0
    #: Deleted per rule label (``default 90 days``, ``tag=complaint 2555 days``...).
    by_reason: Counter[str] = field(default_factory=Counter)
    #: A dry run's oldest candidates, with the rule that expires each.
    preview: list[tuple[RecordingInfo, str]] = field(default_factory=list)


def _remove(
    catalog: Catalog, base: Path, tombs: list[TombstoneInfo], node: str | None = None
) -> int:
    """Remove the tombstones' files and mark them done; how many files went. A tombstone
    whose removal fails (permissions, a dead mount) stays pending, and is logged. With
    ``node``, another node's recording stays pending too: its files are on that node's disk,
    whose own :func:`finish_pending` removes them (docs/scaling.md)."""
    done: list[int] = []
    removed = 0
    for tomb in tombs:
        if node is not None and tomb.node not in (None, node):
            continue
        try:
            removed += len(remove_files(base, tomb))
        except OSError as exc:
            logger.error(
                "recording %d (%s) deleted but its files could not be removed: %s; "
                "the next sweep tries again",
                tomb.recording_id,
                tomb.path,
                exc,
            )
            continue
        done.append(tomb.id)
    catalog.mark_files_removed(done)
    return removed


def finish_pending(catalog: Catalog, settings: Settings) -> tuple[int, int]:
    """Remove the files of tombstones still pending (a delete that crashed half-way, or one
    under way: removing twice is harmless); (tombstones finished, files removed)."""
    root = settings.recordings_dir.resolve()
    node = settings.node_name
    finished = files = 0
    after = 0
    while True:
        # By id, onwards: one whose files cannot be removed stays pending, and is not met
        # again in this run.
        pending = catalog.pending_tombstones(limit=BATCH, after_id=after, node=node)
        if not pending:
            return finished, files
        after = pending[-1].id
        files += _remove(catalog, root, pending, node)
        finished += len(pending)


def sweep(
    catalog: Catalog,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
    before: datetime | None = None,
    by: str = BY_RETENTION,
    batch: int | None = None,
    preview: int = 20,
    stop: threading.Event | None = None,
) -> SweepResult:
    """Delete every recording past its retention at ``now`` (or, with ``before``, every one
    that started before it), oldest first, never a held one or one being recorded.
    ``dry_run`` changes nothing and says what would go. ``by`` names who asked, for the
    tombstones and the audit log (``retention``, or ``cli:<login>`` for ``--before``).
    ``stop`` set: end after the current batch (the server stopping)."""
    policy = policy_of(settings)
    result = SweepResult(dry_run=dry_run)
    if dry_run:
        total, rows = catalog.expired(
            None if before is not None else policy, now, before=before, limit=preview
        )
        result.deleted = total
        result.preview = rows
        return result
    result.finished_pending, result.files_removed = finish_pending(catalog, settings)
    if before is None and not policy.deletes_anything:
        return result
    root = settings.recordings_dir.resolve()
    # recording.deleted per recording, queued in each batch's transaction.
    events = webhook_events(settings)
    after: tuple[datetime, int] | None = None
    # The files of one batch go on a thread of their own while the catalogue deletes the
    # next (each batch's tombstones are committed before its files are touched).
    with ThreadPoolExecutor(1, thread_name_prefix="callrec-retention-files") as files:
        removing: Future[int] | None = None
        while stop is None or not stop.is_set():
            if before is not None:
                tombs = catalog.retire_before(
                    before, by=by, limit=batch, after=after, events=events
                )
            else:
                tombs = catalog.retire_expired(policy, now, limit=batch, after=after, events=events)
            if not tombs:
                break
            after = max((t.start_time, t.recording_id) for t in tombs)
            result.deleted += len(tombs)
            result.bytes += sum(t.size_bytes or 0 for t in tombs)
            result.by_reason.update(t.reason for t in tombs)
            if removing is not None:
                result.files_removed += removing.result()
            removing = files.submit(_remove, catalog, root, tombs, settings.node_name)
        if removing is not None:
            result.files_removed += removing.result()
    if result.deleted:
        logger.info(
            "retention: deleted %d recordings (%s)",
            result.deleted,
            ", ".join(f"{n} by {label}" for label, n in result.by_reason.most_common()),
        )
    return result


@dataclass(frozen=True, slots=True)
class QuotaResult:
    """One look at the disk quota, and what its sweep deleted."""

    #: The quota in bytes; None when none is set.
    limit: int | None
    #: Bytes the catalogued recordings take, after the sweep.
    used: int
    deleted: int = 0
    freed: int = 0

    @property
    def ratio(self) -> float | None:
        return None if not self.limit else self.used / self.limit


def quota_limit(
    settings: Settings, statvfs: Callable[[str], os.statvfs_result] = os.statvfs
) -> int | None:
    """``disk_quota`` in bytes (a percent of the recordings' filesystem, measured now)."""
    quota = parse_quota(settings.disk_quota)
    if quota is None:
        return None
    kind, amount = quota
    if kind == "bytes":
        return int(amount)
    st = statvfs(str(settings.recordings_dir))
    return int(st.f_blocks * st.f_frsize * amount / 100)


def quota_sweep(catalog: Catalog, settings: Settings, *, batch: int | None = None) -> QuotaResult:
    """While the catalogued recordings take more than ``disk_quota``, delete the oldest
    (never a held one or one being recorded), with tombstones saying ``quota``."""
    limit = quota_limit(settings)
    # The quota is of this node's disk: its recordings count, and go (docs/scaling.md).
    node = settings.node_name
    used = catalog.catalogued_bytes(node)
    if limit is None or used <= limit:
        return QuotaResult(limit=limit, used=used)
    root = settings.recordings_dir.resolve()
    events = webhook_events(settings)
    deleted = freed = 0
    while used > limit:
        tombs = catalog.retire_oldest(used - limit, limit=batch, events=events, node=node)
        if not tombs:
            logger.warning(
                "disk quota: %d bytes over %d, and nothing left that may be deleted "
                "(held or being recorded)",
                used - limit,
                limit,
            )
            break
        size = sum(t.size_bytes or 0 for t in tombs)
        _remove(catalog, root, tombs, node)
        deleted += len(tombs)
        freed += size
        used = catalog.catalogued_bytes(node)
    logger.warning("disk quota: deleted the %d oldest recordings (%d bytes)", deleted, freed)
    return QuotaResult(limit=limit, used=used, deleted=deleted, freed=freed)
