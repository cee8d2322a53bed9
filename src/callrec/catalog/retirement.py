"""Deleting recordings for retention and quota, with tombstones: mixed into
:class:`callrec.catalog.Catalog`.

Every delete, a person's or a sweep's, goes through :func:`retire_rows` inside one
transaction: the hold check has already run on the locked rows (:mod:`.holds`), a tombstone
and (for sweeps) an audit row are written, and the row with its notes and tags is removed.
The files go only after that commits (the caller's part, :mod:`callrec.retention`), and the
tombstone is then marked ``files_removed_at``; a crash in between leaves a pending tombstone
that the next sweep finishes (:meth:`RetirementQueries.pending_tombstones`).

Two sweeps at once delete each recording once: on PostgreSQL each claims its batch with
``FOR UPDATE SKIP LOCKED``, on SQLite the write lock (``BEGIN IMMEDIATE``) runs them one
after the other and the second finds the rows gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Engine,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.orm import Session

from callrec.catalog.holds import held_where, lock_for_delete
from callrec.catalog.hooks import RecordingEvents
from callrec.catalog.integrity import FIELD_COLUMNS, chain_deleted_rows
from callrec.catalog.mappers import recording_info
from callrec.catalog.models import Recording, UTCDateTime, clean_text
from callrec.catalog.policy import RetentionPolicy, RetentionRule, TombstoneInfo
from callrec.catalog.records import STATUS_RECORDING, RecordingInfo, require_aware, utcnow
from callrec.catalog.retention import Tombstone
from callrec.catalog.webmodels import AuditEntry, Note, RecordingTag

#: Rows one sweep transaction deletes on SQLite: short enough that the journal's writes and
#: the web's wait well under a second for its one write lock (about 3,500 rows/s at a million
#: rows, docs/retention.md).
SQLITE_BATCH = 2000
#: On PostgreSQL, where a sweep holds only the rows it deletes, large enough that the
#: per-batch costs (planning, round trips, commit) do not dominate a sweep of a million.
SERVER_BATCH = 10_000
#: Tombstones read or marked at once.
BATCH = 5000

#: Who deletes, in tombstones and the audit log, when it is not a person.
BY_RETENTION = "retention"
BY_QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class RuleCoverage:
    """A line of ``callrec retention show``: a rule, the recordings it matches, and how many
    of them it decides (no longer-kept rule matches too) and are past it now."""

    label: str
    matching: int
    expired: int


#: The columns a delete reads of each row (not the whole row: a sweep reads a million):
#: what the tombstone and the hash chain's ``deleted`` entry need, read once for both.
_COLUMNS = (*FIELD_COLUMNS, Recording.node)


def tombstone_files(row: Any) -> list[str]:
    """The row's other files, relative to the recordings directory: its companions (the SIP
    mono mix) and an import's original. (The sidecar's name is the engine's business.)"""
    files: list[str] = []
    companions = (row.extra or {}).get("companions", [])
    if isinstance(companions, list):
        files += [
            c["path"] for c in companions if isinstance(c, dict) and isinstance(c.get("path"), str)
        ]
    if row.original_path:
        files.append(row.original_path)
    # An archived recording's WAV and its sidecar, should a crash have left them between the
    # switch to the archive and their removal (docs/archive.md).
    archive = (row.extra or {}).get("archive")
    original = archive.get("original_path") if isinstance(archive, dict) else None
    if isinstance(original, str) and original:
        files += [original, original + ".json"]
    return files


def retire_rows(
    session: Session,
    rows: Sequence[Any],
    *,
    by: str,
    reasons: dict[int, str],
    audit: bool,
    events: RecordingEvents | None = None,
) -> list[TombstoneInfo]:
    """Tombstone and delete ``rows`` (locked, finished, not held; a :class:`Recording` or a
    row of :data:`_COLUMNS`) in the caller's transaction.
    ``audit``: write an audit row per recording here (sweeps; the web writes its own, with
    the user's address, once the files are gone).
    ``events``: told of the deletes in this transaction (``recording.deleted`` webhooks,
    :mod:`.hooks`), while the rows and their tombstones are both there."""
    if not rows:
        return []
    now = utcnow()
    ids = [r.id for r in rows]
    files = {r.id: tombstone_files(r) for r in rows}
    # The hash chain says who deleted what and why before the rows go (docs/integrity.md),
    # from the rows already read.
    chain_deleted_rows(session.connection(), rows, reasons, by)
    if session.get_bind().dialect.name == "postgresql":
        tomb_of = _tombstones_from_rows(session, rows, files, by=by, reasons=reasons, now=now)
    else:
        tomb_of = _tombstones_from_values(session, rows, files, by=by, reasons=reasons, now=now)
    if audit:
        _audit_from_tombstones(session, ids, now)
    if events is not None:
        events.deleted(session.connection(), [(r.id, r.uid) for r in rows], now)
    # Explicit, so it does not depend on the backend enforcing ON DELETE CASCADE. On the
    # connection, not the session: the ORM would fetch every deleted id back to update an
    # identity map the rows are not in.
    connection = session.connection()
    connection.execute(delete(Note).where(_in(session, Note.recording_id, ids)))
    connection.execute(delete(RecordingTag).where(_in(session, RecordingTag.recording_id, ids)))
    connection.execute(delete(Recording).where(_in(session, Recording.id, ids)))
    return [
        TombstoneInfo(
            id=tomb_of[r.id],
            recording_id=r.id,
            uid=r.uid,
            path=r.path,
            files=tuple(files[r.id]),
            sha256=r.sha256,
            size_bytes=r.size_bytes,
            source=r.source,
            device=r.device,
            local_number=r.local_number,
            remote_number=r.remote_number,
            start_time=r.start_time,
            deleted_at=now,
            deleted_by=by,
            reason=reasons.get(r.id, ""),
            files_removed_at=None,
            node=r.node,
        )
        for r in rows
    ]


def _tombstones_from_rows(
    session: Session,
    rows: Sequence[Any],
    files: dict[int, list[str]],
    *,
    by: str,
    reasons: dict[int, str],
    now: datetime,
) -> dict[int, int]:
    """PostgreSQL: the tombstones made by the database from the rows (``INSERT ...
    SELECT``), with only what is not in them (why, and the other files) sent as arrays;
    recording id -> tombstone id."""
    # Who and why are given by the caller: cleaned here once per distinct text, not per row.
    cleaned: dict[str, str] = {}
    why = [cleaned.setdefault(t, clean_text(t)) for t in (reasons.get(r.id, "") for r in rows)]
    made = session.execute(
        text(
            "INSERT INTO tombstones (recording_id, uid, path, files, sha256, size_bytes,"
            " source, device, local_number, remote_number, start_time, deleted_at,"
            " deleted_by, reason, node)"
            " SELECT r.id, r.uid, r.path, CAST(e.files AS jsonb), r.sha256, r.size_bytes,"
            " r.source, r.device, r.local_number, r.remote_number, r.start_time, :now, :by,"
            " e.reason, r.node"
            " FROM unnest(CAST(:ids AS integer[]), CAST(:reasons AS text[]),"
            " CAST(:files AS text[])) AS e(id, reason, files)"
            " JOIN recordings r ON r.id = e.id"
            " RETURNING recording_id, id"
        ).bindparams(
            bindparam("now", type_=UTCDateTime()),
            bindparam("by", type_=String()),
            bindparam("ids", type_=String()),
            bindparam("reasons", type_=String()),
            bindparam("files", type_=String()),
        ),
        {
            "now": now,
            "by": clean_text(by),
            "ids": int_array(r.id for r in rows),
            "reasons": text_array(why),
            "files": text_array(json.dumps(files[r.id]) if files[r.id] else "[]" for r in rows),
        },
    )
    return {rec_id: tomb_id for rec_id, tomb_id in made}


def _tombstones_from_values(
    session: Session,
    rows: Sequence[Any],
    files: dict[int, list[str]],
    *,
    by: str,
    reasons: dict[int, str],
    now: datetime,
) -> dict[int, int]:
    """Other backends (SQLite): one executemany of the values; recording id -> tombstone."""
    values: list[dict[str, Any]] = [
        {
            "recording_id": r.id,
            "uid": r.uid,
            "path": r.path,
            "files": files[r.id],
            "sha256": r.sha256,
            "size_bytes": r.size_bytes,
            "source": r.source,
            "device": r.device,
            "local_number": r.local_number,
            "remote_number": r.remote_number,
            "start_time": r.start_time,
            "deleted_at": now,
            "deleted_by": by,
            "reason": reasons.get(r.id, ""),
            "node": r.node,
        }
        for r in rows
    ]
    # No RETURNING: with the ids in order, SQLite would insert one row per statement.
    session.execute(insert(cast(Table, Tombstone.__table__)), values)
    made = session.execute(
        select(Tombstone.recording_id, Tombstone.id).where(
            _in(session, Tombstone.recording_id, [r.id for r in rows]),
            Tombstone.deleted_at == now,
        )
    )
    return {rec_id: tomb_id for rec_id, tomb_id in made}


def _audit_from_tombstones(session: Session, ids: list[int], now: datetime) -> None:
    """One ``delete`` audit row per tombstone just written, made by the database from the
    tombstones (no value per row goes through Python: a sweep writes a million)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    build = func.jsonb_build_object if postgres else func.json_object
    detail = build(
        "path",
        Tombstone.path,
        "sha256",
        Tombstone.sha256,
        "local_number",
        Tombstone.local_number,
        "remote_number",
        Tombstone.remote_number,
        "reason",
        Tombstone.reason,
        "tombstone",
        Tombstone.id,
    )
    made = select(
        Tombstone.deleted_at,
        Tombstone.deleted_by,
        literal("delete"),
        Tombstone.recording_id,
        literal(""),
        detail,
    ).where(_in(session, Tombstone.recording_id, ids), Tombstone.deleted_at == now)
    audit_log = cast(Table, AuditEntry.__table__)
    columns = ["at", "username", "action", "recording_id", "client_address", "detail"]
    session.execute(insert(audit_log).from_select(columns, made))


def _in(session: Session, column: Any, ids: list[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL one array parameter (``= ANY``), which a driver
    sends at once, not thousands of parameters compiled into each statement."""
    if session.get_bind().dialect.name == "postgresql":
        # In a subquery: PostgreSQL evaluates it once, where "= ANY(CAST(...))" would cast
        # the text again for every row a plan filters.
        ids_array = sql_cast(literal(int_array(ids)), ARRAY(Integer))
        return cast(ColumnElement[bool], column.in_(select(func.unnest(ids_array))))
    return cast(ColumnElement[bool], column.in_(ids))


def int_array(ids: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (``{1,2,3}``), to send as text and ``CAST``:
    the driver's array adapter costs a Python call per element, ten times this."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def text_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of texts, each quoted (see :func:`int_array`); repeated
    values (a batch's few reasons) are quoted once."""
    quoted: dict[str, str] = {}
    return (
        "{"
        + ",".join(
            quoted.get(v)
            or quoted.setdefault(v, '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
            for v in values
        )
        + "}"
    )


def _rule_where(rule: RetentionRule) -> ColumnElement[bool]:
    if rule.kind == "source":
        return Recording.source == rule.value
    if rule.kind == "extension":
        return or_(Recording.local_number == rule.value, Recording.remote_number == rule.value)
    if rule.kind == "device":
        return func.lower(Recording.device) == rule.value
    tagged = select(RecordingTag.recording_id).where(RecordingTag.tag == rule.value)
    return Recording.id.in_(tagged)


def expired_where(policy: RetentionPolicy, now: datetime) -> ColumnElement[bool]:
    """SQL true for a row past its retention (see :mod:`callrec.catalog.policy`): past every
    matching rule (none of them forever), or past the default when no rule matches."""
    require_aware("now", now)
    cutoffs = policy.cutoffs(now)
    if not cutoffs:
        return false()
    conditions: list[ColumnElement[bool]] = [Recording.start_time < cutoffs[min(cutoffs)]]
    matches = []
    for rule in policy.rules:
        matched = _rule_where(rule)
        matches.append(matched)
        if rule.days == 0:
            conditions.append(not_(matched))
        else:
            conditions.append(or_(not_(matched), Recording.start_time < cutoffs[rule.days]))
    default = (
        Recording.start_time < cutoffs[policy.default_days] if policy.default_days else false()
    )
    conditions.append(or_(default, *matches))
    return and_(*conditions)


def _deletable(session: Session) -> list[ColumnElement[bool]]:
    return [Recording.status != STATUS_RECORDING, not_(held_where(session))]


def _claim(session: Session, statement: Select[Any]) -> list[Any]:
    """Lock the selected rows; on PostgreSQL skip those another sweep holds. (Plain rows
    from the connection: the ORM's loading costs more than the query at 10,000 a batch.)"""
    return list(session.connection().execute(statement.with_for_update(skip_locked=True)))


def _after(key: tuple[datetime, int] | None) -> list[ColumnElement[bool]]:
    """Rows after ``key`` in (start_time, id) order: a sweep goes on where its last batch
    ended, instead of stepping again over the old rows it keeps (held, longer rules)."""
    if key is None:
        return []
    start, rec_id = key
    return [
        or_(
            Recording.start_time > start,
            and_(Recording.start_time == start, Recording.id > rec_id),
        )
    ]


class RetirementQueries:
    """Sweeps (retention, ``--before``, quota), their previews, and tombstones."""

    if TYPE_CHECKING:

        def _session(self, *, write: bool = False) -> AbstractContextManager[Session]: ...

        def _guard(self, action: str) -> AbstractContextManager[None]: ...

        _engine: Engine

    @property
    def sweep_batch(self) -> int:
        """Recordings one sweep transaction deletes on this backend."""
        return SQLITE_BATCH if self._engine.dialect.name == "sqlite" else SERVER_BATCH

    def retire_expired(
        self,
        policy: RetentionPolicy,
        now: datetime,
        *,
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
        events: RecordingEvents | None = None,
    ) -> list[TombstoneInfo]:
        """Delete up to ``limit`` recordings past their retention, oldest first (one
        transaction); their tombstones, pending file removal. Empty when none is left.
        ``after``: the (start_time, id) of the last one of the previous batch.
        ``events``: told of the deletes (:func:`retire_rows`)."""
        where = expired_where(policy, now)
        with self._guard("delete expired recordings"), self._session(write=True) as session:
            lock_for_delete(session)
            statement = (
                select(*_COLUMNS)
                .where(where, *_after(after), *_deletable(session))
                .order_by(Recording.start_time, Recording.id)
                .limit(limit or self.sweep_batch)
            )
            rows = _claim(session, statement)
            tag_rules = any(rule.kind == "tag" for rule in policy.rules)
            tags = _tags(session, [r.id for r in rows]) if tag_rules else {}
            reasons = {
                r.id: policy.decide(
                    source=r.source,
                    local=r.local_number,
                    remote=r.remote_number,
                    device=r.device,
                    tags=tags.get(r.id, ()),
                )[1]
                for r in rows
            }
            return retire_rows(
                session, rows, by=BY_RETENTION, reasons=reasons, audit=True, events=events
            )

    def retire_before(
        self,
        before: datetime,
        *,
        by: str,
        limit: int | None = None,
        after: tuple[datetime, int] | None = None,
        events: RecordingEvents | None = None,
    ) -> list[TombstoneInfo]:
        """Delete up to ``limit`` unheld recordings that started before ``before``."""
        require_aware("before", before)
        reason = f"before {before.isoformat(timespec='seconds')}"
        with self._guard("delete old recordings"), self._session(write=True) as session:
            lock_for_delete(session)
            statement = (
                select(*_COLUMNS)
                .where(Recording.start_time < before, *_after(after), *_deletable(session))
                .order_by(Recording.start_time, Recording.id)
                .limit(limit or self.sweep_batch)
            )
            rows = _claim(session, statement)
            return retire_rows(
                session,
                rows,
                by=by,
                reasons=dict.fromkeys((r.id for r in rows), reason),
                audit=True,
                events=events,
            )

    def retire_oldest(
        self,
        free_bytes: int,
        *,
        limit: int | None = None,
        events: RecordingEvents | None = None,
        node: str | None = None,
    ) -> list[TombstoneInfo]:
        """Delete the oldest unheld, finished recordings until their sizes add up to
        ``free_bytes`` (at most ``limit`` of them): the disk quota's sweep. ``node``: only
        that node's (and those of no node): the quota is of its disk."""
        with self._guard("delete the oldest recordings"), self._session(write=True) as session:
            lock_for_delete(session)
            statement = (
                select(*_COLUMNS)
                .where(Recording.size_bytes > 0, *_deletable(session), *_of_node(node))
                .order_by(Recording.start_time, Recording.id)
                .limit(limit or self.sweep_batch)
            )
            rows = _claim(session, statement)
            chosen: list[Any] = []
            freed = 0
            for row in rows:
                if freed >= free_bytes:
                    break
                chosen.append(row)
                freed += row.size_bytes or 0
            reasons = dict.fromkeys((r.id for r in chosen), BY_QUOTA)
            return retire_rows(
                session, chosen, by=BY_QUOTA, reasons=reasons, audit=True, events=events
            )

    def expired(
        self,
        policy: RetentionPolicy | None,
        now: datetime,
        *,
        before: datetime | None = None,
        limit: int = 50,
    ) -> tuple[int, list[tuple[RecordingInfo, str]]]:
        """What a sweep would delete now: how many, and the oldest ``limit`` with the rule
        that expires each (a dry run). ``before`` instead of ``policy``: ``--before``."""
        with self._guard("preview expired recordings"), self._session() as session:
            where = (
                Recording.start_time < before
                if before is not None
                else (expired_where(policy, now) if policy is not None else false())
            )
            conditions = [where, *_deletable(session)]
            total = session.scalar(select(func.count()).select_from(Recording).where(*conditions))
            statement = (
                select(Recording)
                .where(*conditions)
                .order_by(Recording.start_time, Recording.id)
                .limit(limit)
            )
            rows = list(session.scalars(statement))
            tags = _tags(session, [r.id for r in rows])
            out: list[tuple[RecordingInfo, str]] = []
            for r in rows:
                if before is not None or policy is None:
                    label = f"before {before.isoformat(timespec='seconds')}" if before else ""
                else:
                    label = policy.decide(
                        source=r.source,
                        local=r.local_number,
                        remote=r.remote_number,
                        device=r.device,
                        tags=tags.get(r.id, ()),
                    )[1]
                out.append((recording_info(r), label))
            return int(total or 0), out

    def rule_coverage(self, policy: RetentionPolicy, now: datetime) -> list[RuleCoverage]:
        """Per rule (and the default): recordings it matches, and how many of those are past
        their retention now and decided by it."""
        out: list[RuleCoverage] = []
        expired = expired_where(policy, now)
        with self._guard("count what the retention rules cover"), self._session() as session:
            deletable = _deletable(session)
            for index, rule in enumerate(policy.rules):
                matched = _rule_where(rule)
                # Decided by this rule: no other matching rule keeps longer (or forever).
                longer = [
                    _rule_where(other)
                    for j, other in enumerate(policy.rules)
                    if j != index
                    and (other.days == 0 or (rule.days != 0 and other.days > rule.days))
                ]
                decided = and_(matched, *(not_(m) for m in longer)) if longer else matched
                out.append(
                    RuleCoverage(
                        label=rule.label,
                        matching=_count(session, matched),
                        expired=_count(session, decided, expired, *deletable),
                    )
                )
            none_match = (
                and_(*(not_(_rule_where(r)) for r in policy.rules)) if policy.rules else true()
            )
            out.append(
                RuleCoverage(
                    label=policy.default_label,
                    matching=_count(session, none_match),
                    expired=_count(session, none_match, expired, *deletable),
                )
            )
        return out

    def pending_tombstones(
        self, *, limit: int = BATCH, after_id: int = 0, node: str | None = None
    ) -> list[TombstoneInfo]:
        """Tombstones whose files may still be on disk (a delete that crashed, or is under
        way, or another node's recording whose files are that node's to remove), oldest
        first, from id ``after_id`` on; with ``node``, only that node's (and no node's)."""
        mine = [] if node is None else [or_(Tombstone.node == node, Tombstone.node.is_(None))]
        statement = (
            select(Tombstone)
            .where(Tombstone.files_removed_at.is_(None), Tombstone.id > after_id, *mine)
            .order_by(Tombstone.id)
            .limit(limit)
        )
        with self._guard("read pending tombstones"), self._session() as session:
            return [_tombstone_info(t) for t in session.scalars(statement)]

    def pending_tombstone_paths(self) -> set[str]:
        """Paths of deleted recordings whose files may still be on disk (for a rebuild,
        which must not bring them back from their sidecars)."""
        statement = select(Tombstone.path).where(Tombstone.files_removed_at.is_(None))
        with self._guard("read pending tombstones"), self._session() as session:
            return set(session.scalars(statement))

    def mark_files_removed(self, tombstone_ids: Iterable[int]) -> None:
        ids = sorted(set(tombstone_ids))
        if not ids:
            return
        with self._guard("mark tombstones done"), self._session(write=True) as session:
            for start in range(0, len(ids), BATCH):
                # On the connection: no ORM fetching the ids back (see retire_rows).
                session.connection().execute(
                    update(Tombstone)
                    .where(_in(session, Tombstone.id, ids[start : start + BATCH]))
                    .where(Tombstone.files_removed_at.is_(None))
                    .values(files_removed_at=utcnow())
                )

    def tombstone(self, tombstone_id: int) -> TombstoneInfo | None:
        with self._guard(f"read tombstone {tombstone_id}"), self._session() as session:
            row = session.get(Tombstone, tombstone_id)
            return None if row is None else _tombstone_info(row)

    def tombstones(
        self, *, recording_id: int | None = None, limit: int = 100
    ) -> list[TombstoneInfo]:
        """Tombstones, newest first."""
        statement = select(Tombstone).order_by(Tombstone.id.desc()).limit(limit)
        if recording_id is not None:
            statement = statement.where(Tombstone.recording_id == recording_id)
        with self._guard("read tombstones"), self._session() as session:
            return [_tombstone_info(t) for t in session.scalars(statement)]

    def catalogued_bytes(self, node: str | None = None) -> int:
        """The sizes of every catalogued recording's file, added up (the quota's measure);
        with ``node``, that node's (and no node's) only."""
        statement = select(func.coalesce(func.sum(Recording.size_bytes), 0)).where(*_of_node(node))
        with self._guard("add up recording sizes"), self._session() as session:
            return int(session.scalar(statement) or 0)


def _of_node(node: str | None) -> list[ColumnElement[bool]]:
    """The rows of ``node`` and those from before nodes; no condition for None."""
    if node is None:
        return []
    return [or_(Recording.node == node, Recording.node.is_(None))]


def _count(session: Session, *where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(Recording).where(*where)) or 0)


def _tags(session: Session, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    # One statement on PostgreSQL (an array parameter), chunks of parameters elsewhere.
    step = (len(ids) or 1) if session.get_bind().dialect.name == "postgresql" else 1000
    for start in range(0, len(ids), step):
        statement = select(RecordingTag.recording_id, RecordingTag.tag).where(
            _in(session, RecordingTag.recording_id, ids[start : start + step])
        )
        for rec_id, tag in session.execute(statement):
            out.setdefault(rec_id, []).append(tag)
    return out


def _tombstone_info(t: Tombstone) -> TombstoneInfo:
    return TombstoneInfo(
        id=t.id,
        recording_id=t.recording_id,
        uid=t.uid,
        path=t.path,
        files=tuple(t.files or ()),
        sha256=t.sha256,
        size_bytes=t.size_bytes,
        source=t.source,
        device=t.device,
        local_number=t.local_number,
        remote_number=t.remote_number,
        start_time=t.start_time,
        deleted_at=t.deleted_at,
        deleted_by=t.deleted_by,
        reason=t.reason,
        files_removed_at=t.files_removed_at,
        node=t.node,
    )
