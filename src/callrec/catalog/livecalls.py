"""The calls every node is recording now (``live_calls``): several nodes on one catalogue.

Each node publishes its own calls every few seconds (:meth:`LiveCallStore.publish`): one
transaction upserts them with the time they were seen, deletes its rows of calls that ended,
deletes every node's rows not seen for a while (a node killed ``-9`` leaves its rows behind;
they go once stale), and reads the other nodes' rows. The rows hold what the live page shows
as JSON; this module knows nothing of the engine that makes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from callrec.catalog.models import LiveCall
from callrec.catalog.records import require_aware
from callrec.catalog.store import Catalog

LIVE_CALLS = cast(Table, LiveCall.__table__)


@dataclass(frozen=True, slots=True)
class LiveCallRow:
    """Another node's call, as it published it."""

    uid: str
    node: str
    data: dict[str, Any]
    seen_at: datetime


class LiveCallStore:
    """The ``live_calls`` queries over a :class:`Catalog`; blocking, each call one
    transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def publish(
        self,
        node: str,
        calls: Mapping[str, Mapping[str, Any]],
        *,
        now: datetime,
        stale_before: datetime,
    ) -> list[LiveCallRow]:
        """Make ``calls`` (uid -> what the live page shows) this node's rows, seen ``now``;
        remove every row seen before ``stale_before``; the other nodes' rows that remain."""
        require_aware("now", now)
        require_aware("stale_before", stale_before)
        with self.catalog.transaction("publish live calls", write=True) as session:
            connection = session.connection()
            mine = delete(LIVE_CALLS).where(LIVE_CALLS.c.node == node)
            if calls:
                mine = mine.where(LIVE_CALLS.c.uid.not_in(sorted(calls)))
            connection.execute(mine)
            connection.execute(delete(LIVE_CALLS).where(LIVE_CALLS.c.seen_at < stale_before))
            if calls:
                rows = [
                    {"uid": uid, "node": node, "data": dict(data), "seen_at": now}
                    for uid, data in sorted(calls.items())
                ]
                connection.execute(_upsert(connection.dialect.name), rows)
            others = (
                select(LIVE_CALLS)
                .where(LIVE_CALLS.c.node != node)
                .order_by(LIVE_CALLS.c.node, LIVE_CALLS.c.uid)
            )
            return [
                LiveCallRow(uid=r.uid, node=r.node, data=dict(r.data), seen_at=r.seen_at)
                for r in connection.execute(others)
            ]

    def withdraw(self, node: str) -> int:
        """Remove this node's rows (a clean stop); how many."""
        with self.catalog.transaction("withdraw live calls", write=True) as session:
            result = session.connection().execute(
                delete(LIVE_CALLS).where(LIVE_CALLS.c.node == node)
            )
            return int(result.rowcount)

    def all(self) -> Sequence[LiveCallRow]:
        """Every row (tests, ``callrec`` tools)."""
        with self.catalog.transaction("read live calls") as session:
            rows = session.connection().execute(select(LIVE_CALLS).order_by(LIVE_CALLS.c.uid))
            return [
                LiveCallRow(uid=r.uid, node=r.node, data=dict(r.data), seen_at=r.seen_at)
                for r in rows
            ]


def _upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (uid) DO UPDATE: a call seen again is refreshed."""
    if dialect == "postgresql":
        statement: Any = pg_insert(LIVE_CALLS)
    elif dialect == "sqlite":
        statement = sqlite_insert(LIVE_CALLS)
    else:  # pragma: no cover - the catalogue runs on these two
        return insert(LIVE_CALLS)
    return statement.on_conflict_do_update(
        index_elements=[LIVE_CALLS.c.uid],
        set_={
            "node": statement.excluded.node,
            "data": statement.excluded.data,
            "seen_at": statement.excluded.seen_at,
        },
    )
