"""Every node's live calls: this process's live view plus the other nodes' calls.

Several ``callrec serve`` nodes share one PostgreSQL catalogue (docs/scaling.md). Each main
process runs a :class:`NodesLive`: every :data:`HEARTBEAT` seconds, and at once when one of
its own calls starts or ends, it publishes its calls to the catalogue's ``live_calls`` and
reads the other nodes' (:class:`~callrec.catalog.livecalls.LiveCallStore`). A node that dies
stops refreshing its rows; they are deleted once :data:`STALE_AFTER` has passed, so its calls
leave every live page then. The web UI is given this view instead of the process's own: the
live page, ``/api/v1/live`` and its event feed show every node's calls, each with its node.

Each publication also claims the node's name for this run (``node_names``): a second server
started with a name that a running one holds publishes nothing, logs an error and reports it
on ``/health`` (:attr:`NodesLive.clash`) until the name is free again.

Observers of this view hear of the other nodes' calls too, one heartbeat late; the job
runner's completions keep observing the process's own registry (another node's calls are its
own runner's to enqueue).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

from callrec.catalog.livecalls import LiveCallRow, LiveCallStore, NodeHolder, NodeNameInUse
from callrec.catalog.records import utcnow
from callrec.engine.live import FINISHED, STARTED, LiveRegistry, LiveSession, Observer
from callrec.exceptions import CatalogError

logger = logging.getLogger(__name__)

#: Seconds between two publications of a node's calls.
HEARTBEAT: Final = 2.0
#: Seconds after which a node's unrefreshed rows are taken for a dead node's and deleted.
STALE_AFTER: Final = 15.0
#: Seconds a stop gives the withdrawal of this node's rows (a hung database must not hold
#: the stop up: the rows then expire as a dead node's).
WITHDRAW_WAIT: Final = 2.0


def session_data(live: LiveSession) -> dict[str, Any]:
    """What a node publishes of one call (JSON)."""
    data = dataclasses.asdict(live)
    data["started_at"] = live.started_at.isoformat()
    data.pop("remote", None)
    return data


def remote_session(row: LiveCallRow) -> LiveSession | None:
    """Another node's call as a :class:`LiveSession`; None for a row this version cannot
    read (a newer node's)."""
    data = dict(row.data)
    fields = {f.name for f in dataclasses.fields(LiveSession)}
    try:
        data["started_at"] = datetime.fromisoformat(str(data["started_at"]))
        data = {k: v for k, v in data.items() if k in fields}
        data.update(node=row.node, remote=True)
        return LiveSession(**data)
    except (KeyError, TypeError, ValueError):
        return None


class NodesLive:
    """A :class:`~callrec.engine.LiveView` of every node's calls; see the module docstring."""

    def __init__(
        self,
        local: LiveRegistry,
        store: LiveCallStore,
        *,
        node: str,
        node_url: str = "",
        heartbeat: float = HEARTBEAT,
        stale_after: float = STALE_AFTER,
        healthy: Callable[[], bool] = lambda: True,
        run: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.local = local
        #: Where the catalogue calls run: the process's catalogue writer thread (so a stop
        #: that interrupts a hung database ends them too, and none outlives the catalogue),
        #: or a thread of their own.
        self._run = run or asyncio.to_thread
        #: Whether the catalogue answers (the journal's state): while it does not, nothing is
        #: published (a thread would wait on a hung database), and the other nodes' calls
        #: are kept as last seen until it answers again.
        self.healthy = healthy
        self.store = store
        self.node = node
        self.node_url = node_url
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self._others: dict[str, LiveSession] = {}
        self._observers: list[Observer] = []
        self._wake = asyncio.Event()
        self._failing = False
        self.holder = NodeHolder(
            instance=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=utcnow(),
        )
        #: Why this node publishes nothing: another running server holds its name.
        self.clash: str | None = None
        local.add_observer(self._on_local)

    # -- LiveView ------------------------------------------------------------------------

    @property
    def total_sessions(self) -> int:
        """Calls recorded since this node started (its own: the others count theirs)."""
        return self.local.total_sessions

    def live_sessions(self) -> list[LiveSession]:
        return sorted(
            [*self.local.live_sessions(), *self._others.values()],
            key=lambda live: (live.started_at, live.uid),
        )

    def add_observer(self, observer: Observer) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    # -- the heartbeat -------------------------------------------------------------------

    def _on_local(self, event: str, live: LiveSession) -> None:
        self._wake.set()  # the other nodes hear of it at once, not a heartbeat later
        self._emit(event, live)

    async def run(self) -> None:
        """Publish and read every heartbeat until cancelled (then this node's rows go)."""
        try:
            while True:
                self._wake.clear()
                await self.publish_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat)
        finally:
            # Not while the catalogue is hung: the rows then expire as a dead node's.
            if self.healthy():
                with contextlib.suppress(CatalogError, TimeoutError):
                    await asyncio.wait_for(
                        self._run(self.store.withdraw, self.node, self.holder), WITHDRAW_WAIT
                    )

    async def publish_once(self) -> None:
        """One publication: this node's calls out, the other nodes' in (and their starts
        and ends told to the observers)."""
        if not self.healthy():
            return
        calls = {
            live.uid: {**session_data(live), "node": self.node, "node_url": self.node_url}
            for live in self.local.live_sessions()
        }
        now = utcnow()
        try:
            rows = await self._run(
                self.store.publish,
                self.node,
                calls,
                now=now,
                stale_before=now - timedelta(seconds=self.stale_after),
                holder=self.holder,
            )
        except NodeNameInUse as exc:
            if self.clash is None:
                logger.error("%s; this server's calls are not shown on the other nodes", exc)
            self.clash = str(exc)
            return
        except CatalogError as exc:
            if not self._failing:
                logger.warning("cannot share the live calls with the other nodes: %s", exc)
            self._failing = True
            return
        self._failing = False
        if self.clash is not None:
            logger.warning("node_name %r is this server's now", self.node)
            self.clash = None
        others = {s.uid: s for s in filter(None, map(remote_session, rows))}
        gone = [live for uid, live in self._others.items() if uid not in others]
        new = [live for uid, live in others.items() if uid not in self._others]
        self._others = others
        for live in gone:
            self._emit(FINISHED, live)
        for live in new:
            self._emit(STARTED, live)

    def _emit(self, event: str, live: LiveSession) -> None:
        for observer in list(self._observers):
            try:
                observer(event, live)
            except Exception:
                logger.exception("live observer failed")
