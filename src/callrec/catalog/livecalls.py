"""The calls every node is recording now (``live_calls``): several nodes on one catalogue.

Each node publishes its own calls every few seconds (:meth:`LiveCallStore.publish`): one
transaction upserts them with the time they were seen, deletes its rows of calls that ended,
deletes every node's rows not seen for a while (a node killed ``-9`` leaves its rows behind;
they go once stale), and reads the other nodes' rows. The rows hold what the live page shows
as JSON; this module knows nothing of the engine that makes them.

The same transaction claims the node's name (``node_names``) for the server publishing: a
name another server has refreshed since ``stale_before`` is refused with
:class:`NodeNameInUse`, and nothing is published (two servers given one ``node_name``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from callrec.catalog.models import LiveCall, NodeName
from callrec.catalog.records import require_aware
from callrec.catalog.store import Catalog
from callrec.exceptions import CallrecError

LIVE_CALLS = cast(Table, LiveCall.__table__)
NODE_NAMES = cast(Table, NodeName.__table__)


@dataclass(frozen=True, slots=True)
class NodeHolder:
    """A running server as it claims its node name: one ``instance`` per run."""

    instance: str
    host: str
    pid: int
    started_at: datetime


class NodeNameInUse(CallrecError):
    """Another running server holds this node's name."""

    def __init__(self, node: str, holder: NodeHolder, seen_at: datetime) -> None:
        self.node = node
        self.holder = holder
        self.seen_at = seen_at
        super().__init__(
            f"node_name {node!r} is also used by another running server (host {holder.host},"
            f" pid {holder.pid}, running since {holder.started_at:%Y-%m-%d %H:%M:%S} UTC);"
            " give each server its own node_name (docs/scaling.md)"
        )


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
        holder: NodeHolder | None = None,
    ) -> list[LiveCallRow]:
        """Make ``calls`` (uid -> what the live page shows) this node's rows, seen ``now``;
        remove every row seen before ``stale_before``; the other nodes' rows that remain.
        With ``holder``, first claim the node's name for it (:class:`NodeNameInUse`)."""
        require_aware("now", now)
        require_aware("stale_before", stale_before)
        with self.catalog.transaction("publish live calls", write=True) as session:
            connection = session.connection()
            if holder is not None:
                _claim(connection, node, holder, now=now, stale_before=stale_before)
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

    def withdraw(self, node: str, holder: NodeHolder | None = None) -> int:
        """Remove this node's rows (a clean stop); how many. With ``holder``, only if it
        holds the name, which it then gives up."""
        with self.catalog.transaction("withdraw live calls", write=True) as session:
            connection = session.connection()
            if holder is not None:
                mine = NODE_NAMES.c.name == node
                released = connection.execute(
                    delete(NODE_NAMES).where(mine, NODE_NAMES.c.instance == holder.instance)
                )
                held = connection.execute(select(NODE_NAMES.c.name).where(mine)).first()
                if released.rowcount == 0 and held is not None:
                    return 0
            result = connection.execute(delete(LIVE_CALLS).where(LIVE_CALLS.c.node == node))
            return int(result.rowcount)

    def all(self) -> Sequence[LiveCallRow]:
        """Every row (tests, ``callrec`` tools)."""
        with self.catalog.transaction("read live calls") as session:
            rows = session.connection().execute(select(LIVE_CALLS).order_by(LIVE_CALLS.c.uid))
            return [
                LiveCallRow(uid=r.uid, node=r.node, data=dict(r.data), seen_at=r.seen_at)
                for r in rows
            ]


def _claim(
    connection: Connection,
    node: str,
    holder: NodeHolder,
    *,
    now: datetime,
    stale_before: datetime,
) -> None:
    """Take or refresh ``node``'s name for ``holder``; :class:`NodeNameInUse` when another
    run refreshed it since ``stale_before``."""
    current = connection.execute(
        select(NODE_NAMES).where(NODE_NAMES.c.name == node).with_for_update()
    ).first()
    values = {
        "instance": holder.instance,
        "host": holder.host,
        "pid": holder.pid,
        "started_at": holder.started_at,
        "seen_at": now,
    }
    if current is None:
        connection.execute(insert(NODE_NAMES).values(name=node, **values))
        return
    if current.instance != holder.instance and current.seen_at >= stale_before:
        other = NodeHolder(current.instance, current.host, current.pid, current.started_at)
        raise NodeNameInUse(node, other, current.seen_at)
    connection.execute(update(NODE_NAMES).where(NODE_NAMES.c.name == node).values(**values))


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
