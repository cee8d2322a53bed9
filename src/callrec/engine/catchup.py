"""The catalogue's catch-up: what a process does with its catalogue while it records.

Recording never waits for this. In every process: migrate the schema (retried with back-off
while the database is unreachable), then let the journal apply. In the main process also:
rebuild an empty catalogue from the sidecars on disk (its database was lost), replay the
journals of processes that ended, finish the rows a crash left open, and keep replaying the
journals of processes that end later (a media worker killed, an orphaned one that exited).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from callrec.catalog import RecordingInfo
from callrec.engine.journal import RETRY_FIRST, RETRY_MAX, Journal, replay_orphans
from callrec.engine.rebuild import has_sidecars, rebuild_catalogue
from callrec.engine.recovery import recover_unfinished

logger = logging.getLogger(__name__)

#: Seconds between two looks for the journals of processes that ended.
ORPHAN_SCAN_SECONDS: Final = 10.0

T = TypeVar("T")


async def catch_up(
    journal: Journal, root: Path, *, main: bool, settled: asyncio.Event | None = None
) -> None:
    """Run forever (cancel to stop); see the module docstring. ``settled`` is set once the
    first round is done, or at the first failure (the caller need not wait any longer)."""
    settled = settled or asyncio.Event()
    catalog = journal.writer.catalog
    await _retrying(
        journal,
        "migrate the catalogue",
        settled,
        functools.partial(catalog.migrate, node=journal.node),
    )
    if main:
        await _retrying(
            journal, "rebuild an empty catalogue", settled, _rebuild_if_empty, journal, root
        )
    journal.ready.set()
    if main:
        await replay_and_recover(journal, root, settled=settled)
    settled.set()
    if not main:
        return
    while True:
        await asyncio.sleep(ORPHAN_SCAN_SECONDS)
        # Not a sign of health when it finds nothing to replay (it then asks the catalogue
        # nothing): only its failures are reported.
        await _retrying(
            journal, "replay ended processes' journals", None, _replay, journal, healthy=False
        )


async def replay_and_recover(
    journal: Journal,
    root: Path,
    only: Callable[[RecordingInfo], bool] | None = None,
    *,
    settled: asyncio.Event | None = None,
) -> None:
    """Replay the journals of the processes that ended, then finish what they left open
    (``only``: the rows to consider, e.g. one dead worker's)."""
    await _retrying(journal, "replay ended processes' journals", settled, _replay, journal)
    catalog = journal.writer.catalog
    recovered = await _retrying(
        journal,
        "recover unfinished recordings",
        settled,
        recover_unfinished,
        catalog,
        root,
        only,
        journal.node,
    )
    if recovered:
        logger.warning("recovery finished %d recordings a crash left open", len(recovered))


def _replay(journal: Journal) -> int:
    return replay_orphans(
        journal.writer.catalog, journal.directory, journal.path, node=journal.node
    )


def _rebuild_if_empty(journal: Journal, root: Path) -> None:
    catalog = journal.writer.catalog
    if catalog.count_recordings() == 0 and has_sidecars(root):
        logger.warning(
            "the catalogue %s is empty but %s holds recordings: rebuilding it from their sidecars",
            catalog.url,
            root,
        )
        rebuild_catalogue(catalog, root, journal.node)


async def _retrying(
    journal: Journal,
    what: str,
    settled: asyncio.Event | None,
    fn: Callable[..., T],
    *args: object,
    healthy: bool = True,
) -> T:
    """``fn(*args)`` on the catalogue thread until it succeeds, failures reported."""
    delay = RETRY_FIRST
    while True:
        try:
            result = await journal.writer.run(fn, *args)
        except Exception as exc:
            journal.failed(Exception(f"cannot {what}: {exc}"))
            if settled is not None:
                settled.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        if healthy:
            journal.recovered()
        return result
