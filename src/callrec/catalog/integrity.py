"""The recordings' hash chain: an append-only log of what each finished recording is.

Each entry describes one event of one recording (``recorded``: it was catalogued as finished,
``updated``: its file changed afterwards, e.g. a crash guess replaced by the journal's finish,
``deleted``: it was removed) with the SHA-256 of its file, and hashes the previous entry's
hash, so changing any entry breaks every later one. The exact bytes hashed are stored
(``body``): a third party re-verifies the chain from the table alone (docs/integrity.md).

Appending takes the chain's head (the one row of ``integrity_head``) under a lock: SQLite's
write lock (the writes here run in a ``BEGIN IMMEDIATE`` transaction) or ``SELECT ... FOR
UPDATE`` on PostgreSQL, so two processes finishing recordings at once never fork the chain.
Appending happens in the transaction that catalogues the finish (:func:`chain_finished`), or
in :func:`catch_up` for rows catalogued before the chain existed. Migration ``0008`` makes
``integrity_chain`` and ``integrity_signatures`` append-only with triggers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import BigInteger, Connection, Integer, String, Table, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from callrec.catalog.models import Base, CleanText, Recording, UTCDateTime, clean_text
from callrec.catalog.records import STATUS_COMPLETE, STATUS_RECOVERED, RecordingInfo, utcnow

#: Version of the canonical form (the ``v`` of every body).
FORMAT: Final = 1
#: The ``prev`` of the first entry.
GENESIS: Final = "0" * 64
#: The statuses whose recordings go into the chain (a file that holds what was recorded).
CHAINED_STATUSES: Final = (STATUS_COMPLETE, STATUS_RECOVERED)

KIND_RECORDED: Final = "recorded"
KIND_UPDATED: Final = "updated"
KIND_DELETED: Final = "deleted"

APPEND_ONLY_MESSAGE: Final = "the integrity chain is append-only"

#: Rows appended per statement by the catch-up.
CATCH_UP_BATCH: Final = 500


class ChainEntry(Base):
    """One entry of the hash chain (never updated nor deleted: triggers refuse it)."""

    __tablename__ = "integrity_chain"

    #: 1, 2, 3 ... without gaps.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    recording_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(CleanText())
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The canonical JSON that :attr:`hash` is the SHA-256 of (UTF-8).
    body: Mapped[str] = mapped_column(CleanText())
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ChainHead(Base):
    """The chain's last entry (one row, ``id`` 1): what appending locks."""

    __tablename__ = "integrity_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class ChainSignature(Base):
    """An Ed25519 signature of the chain's head at one moment (append-only)."""

    __tablename__ = "integrity_signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: SHA-256 (hex) of the raw public key that verifies it.
    key_id: Mapped[str] = mapped_column(String(64))
    #: The canonical JSON signed (UTF-8).
    body: Mapped[str] = mapped_column(CleanText())
    #: The 64-byte signature, hex.
    signature: Mapped[str] = mapped_column(String(128))


class IntegrityCheck(Base):
    """The last verification of one recording's file (by ``callrec verify`` or the web)."""

    __tablename__ = "integrity_checks"

    recording_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: ``ok`` or the finding's kind (``altered``, ``missing`` ...).
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(CleanText(), default="")


CHAIN = cast(Table, ChainEntry.__table__)
HEAD = cast(Table, ChainHead.__table__)
SIGNATURES = cast(Table, ChainSignature.__table__)
CHECKS = cast(Table, IntegrityCheck.__table__)
RECORDINGS = cast(Table, Recording.__table__)


def canonical(value: dict[str, Any]) -> str:
    """The canonical JSON of ``value``: keys sorted, no spaces, UTF-8 text kept as is."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def time_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    # The text of strftime("%Y-%m-%dT%H:%M:%S.%fZ"), made faster (a sweep makes a million).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One entry as plain values, its body parsed."""

    seq: int
    recording_id: int
    kind: str
    path: str
    sha256: str | None
    body: str
    hash: str

    @property
    def fields(self) -> dict[str, Any]:
        value = json.loads(self.body)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class SignatureRecord:
    id: int
    seq: int
    hash: str
    signed_at: datetime
    key_id: str
    body: str
    signature: str


def _companions(extra: Any) -> list[str]:
    items = extra.get("companions") if isinstance(extra, dict) else None
    if not isinstance(items, list):
        return []
    return sorted(
        item["path"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("path"), str)
    )


def _recording_fields(row: Any) -> dict[str, Any]:
    """What an entry says of the recording ``row`` (a ``recordings`` row)."""
    duration = row.duration
    return {
        "recording_id": row.id,
        "uid": row.uid,
        "path": row.path,
        "sha256": row.sha256,
        "size": row.size_bytes,
        "source": row.source,
        "device": row.device,
        "direction": row.direction,
        "local_number": row.local_number,
        "remote_number": row.remote_number,
        "codec": row.codec,
        "start_time": time_text(row.start_time),
        "end_time": time_text(row.end_time),
        # Milliseconds, an integer: a float's text form differs between languages.
        "duration_ms": None if duration is None else round(duration * 1000),
        "status": row.status,
        "companions": _companions(row.extra),
        "original_path": row.original_path,
        "original_sha256": row.original_sha256,
    }


#: The columns an entry describes (:func:`_recording_fields`).
#: The columns of a ``recordings`` row an entry is made from (a delete reads them once, for
#: its tombstone and its entry).
FIELD_COLUMNS = tuple(
    RECORDINGS.c[name]
    for name in (
        "id",
        "uid",
        "path",
        "sha256",
        "size_bytes",
        "source",
        "device",
        "direction",
        "local_number",
        "remote_number",
        "codec",
        "start_time",
        "end_time",
        "duration",
        "status",
        "extra",
        "original_path",
        "original_sha256",
    )
)


def lock_head(connection: Connection) -> tuple[int, str]:
    """The head (seq, hash), locked until the transaction ends (PostgreSQL; SQLite's write
    transaction already excludes every other writer)."""
    statement = select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update()
    row = connection.execute(statement).one()
    return int(row.seq), str(row.hash)


def _append(connection: Connection, items: Sequence[tuple[str, dict[str, Any]]]) -> int:
    """Append one entry per (kind, fields) after the locked head; how many."""
    if not items:
        return 0
    seq, prev = lock_head(connection)
    now = time_text(utcnow())
    rows = []
    for kind, fields in items:
        seq += 1
        body = canonical(
            {"v": FORMAT, "seq": seq, "kind": kind, "prev": prev, "time": now, **fields}
        )
        prev = body_hash(body)
        rows.append(
            {
                "seq": seq,
                "recording_id": fields["recording_id"],
                "kind": kind,
                "path": fields["path"],
                "sha256": fields["sha256"],
                "body": body,
                "hash": prev,
            }
        )
    if connection.dialect.name == "postgresql":
        _copy_entries(connection, rows)
    else:
        connection.execute(insert(CHAIN), rows)
    connection.execute(update(HEAD).where(HEAD.c.id == 1).values(seq=seq, hash=prev))
    return len(rows)


def _copy_entries(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: the entries with ``COPY`` (a sweep appends a million; an executemany
    costs a round of parameter handling per row). Their texts are clean: made from stored
    rows and cleaned who and why."""
    names = ("seq", "recording_id", "kind", "path", "sha256", "body", "hash")
    driver = connection.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {CHAIN.name} ({', '.join(names)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row([row[n] for n in names])


def _latest(
    connection: Connection, rec_ids: Sequence[int]
) -> dict[int, tuple[str, str, str | None]]:
    """Recording id -> (kind, path, sha256) of its last entry."""
    latest: dict[int, tuple[str, str, str | None]] = {}
    statement = (
        select(CHAIN.c.recording_id, CHAIN.c.kind, CHAIN.c.path, CHAIN.c.sha256)
        .where(CHAIN.c.recording_id.in_(rec_ids))
        .order_by(CHAIN.c.seq)
    )
    for rec_id, kind, path, sha in connection.execute(statement):
        latest[rec_id] = (kind, path, sha)
    return latest


def chain_finished(connection: Connection, rec_ids: Iterable[int]) -> int:
    """Append an entry for each of ``rec_ids`` that is finished with a file (complete or
    recovered, with a SHA-256) and whose last entry does not already say what it is now;
    in the caller's transaction. Idempotent. How many entries were appended."""
    ids = sorted(set(rec_ids))
    if not ids:
        return 0
    appended = 0
    for start in range(0, len(ids), CATCH_UP_BATCH):
        chunk = ids[start : start + CATCH_UP_BATCH]
        # The head first: whoever holds it sees every entry committed before.
        lock_head(connection)
        statement = (
            select(*FIELD_COLUMNS)
            .where(RECORDINGS.c.id.in_(chunk))
            .where(RECORDINGS.c.status.in_(CHAINED_STATUSES))
            .where(RECORDINGS.c.sha256.is_not(None))
            .order_by(RECORDINGS.c.id)
        )
        rows = list(connection.execute(statement))
        latest = _latest(connection, [row.id for row in rows])
        items: list[tuple[str, dict[str, Any]]] = []
        for row in rows:
            last = latest.get(row.id)
            if last is not None and last[0] != KIND_DELETED and last[1:] == (row.path, row.sha256):
                continue
            # After a deleted entry the id names a new recording (SQLite reuses the highest
            # rowid once its row is gone).
            kind = KIND_RECORDED if last is None or last[0] == KIND_DELETED else KIND_UPDATED
            items.append((kind, _recording_fields(row)))
        appended += _append(connection, items)
    return appended


def chain_deleted(session: Session, rec: RecordingInfo, reason: str, actor: str) -> None:
    """Append the ``deleted`` entry of ``rec`` (who and why), in ``session``'s transaction:
    the delete path calls it before the row goes."""
    chain_deleted_many(session.connection(), [rec.id], {rec.id: reason}, actor)


def chain_deleted_many(
    connection: Connection, rec_ids: Sequence[int], reasons: dict[int, str], actor: str
) -> int:
    """The ``deleted`` entries of many recordings at once, in the caller's transaction,
    before the rows go; how many."""
    rows: list[Any] = []
    for start in range(0, len(rec_ids), CATCH_UP_BATCH):
        chunk = sorted(rec_ids[start : start + CATCH_UP_BATCH])
        rows += connection.execute(select(*FIELD_COLUMNS).where(RECORDINGS.c.id.in_(chunk)))
    return chain_deleted_rows(connection, rows, reasons, actor)


def chain_deleted_rows(
    connection: Connection, rows: Sequence[Any], reasons: dict[int, str], actor: str
) -> int:
    """:func:`chain_deleted_many` of rows already read (of :data:`FIELD_COLUMNS`: a retention
    sweep's batch, which has just selected them), in recording id order; how many."""
    who = clean_text(actor)
    # Cleaned before hashing (the stored body must be the very text hashed): once per
    # distinct reason, not per row.
    cleaned: dict[str, str] = {}
    items: list[tuple[str, dict[str, Any]]] = []
    for row in sorted(rows, key=lambda r: r.id):
        fields = _recording_fields(row)
        why = reasons.get(row.id, "")
        fields.update(reason=cleaned.setdefault(why, clean_text(why)), actor=who)
        items.append((KIND_DELETED, fields))
    return _append(connection, items)


def catch_up(connection: Connection) -> int:
    """Append every finished recording that has no entry yet (rows from before the chain,
    or after a failure between two transactions); idempotent. How many were appended."""
    lock_head(connection)
    chained = select(CHAIN.c.recording_id)
    statement = (
        select(RECORDINGS.c.id)
        .where(RECORDINGS.c.status.in_(CHAINED_STATUSES))
        .where(RECORDINGS.c.sha256.is_not(None))
        .where(RECORDINGS.c.id.not_in(chained))
        .order_by(RECORDINGS.c.id)
    )
    return chain_finished(connection, list(connection.scalars(statement)))


# -- reads ------------------------------------------------------------------------------------


def _chain_record(row: Any) -> ChainRecord:
    return ChainRecord(
        seq=int(row.seq),
        recording_id=int(row.recording_id),
        kind=row.kind,
        path=row.path,
        sha256=row.sha256,
        body=row.body,
        hash=row.hash,
    )


def iter_chain(connection: Connection, *, batch: int = 5000) -> Iterator[ChainRecord]:
    """Every entry in ``seq`` order, read in batches (bounded memory)."""
    after = -1
    while True:
        statement = select(CHAIN).where(CHAIN.c.seq > after).order_by(CHAIN.c.seq).limit(batch)
        rows = [_chain_record(row) for row in connection.execute(statement)]
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


def entries_of(connection: Connection, rec_id: int) -> list[ChainRecord]:
    statement = select(CHAIN).where(CHAIN.c.recording_id == rec_id).order_by(CHAIN.c.seq)
    return [_chain_record(row) for row in connection.execute(statement)]


def entry_at(connection: Connection, seq: int) -> ChainRecord | None:
    row = connection.execute(select(CHAIN).where(CHAIN.c.seq == seq)).one_or_none()
    return None if row is None else _chain_record(row)


def head(connection: Connection) -> tuple[int, str]:
    row = connection.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).one()
    return int(row.seq), str(row.hash)


def _signature_record(row: Any) -> SignatureRecord:
    return SignatureRecord(
        id=row.id,
        seq=int(row.seq),
        hash=row.hash,
        signed_at=row.signed_at,
        key_id=row.key_id,
        body=row.body,
        signature=row.signature,
    )


def signatures(connection: Connection) -> list[SignatureRecord]:
    """Every signature, oldest first (one per sign interval: few)."""
    statement = select(SIGNATURES).order_by(SIGNATURES.c.id)
    return [_signature_record(row) for row in connection.execute(statement)]


def last_signature(connection: Connection, *, at_least: int = 0) -> SignatureRecord | None:
    """The newest signature (of a head at ``at_least`` or beyond)."""
    statement = (
        select(SIGNATURES)
        .where(SIGNATURES.c.seq >= at_least)
        .order_by(SIGNATURES.c.id.desc())
        .limit(1)
    )
    row = connection.execute(statement).one_or_none()
    return None if row is None else _signature_record(row)


def add_signature(
    connection: Connection,
    *,
    seq: int,
    hash_: str,
    signed_at: datetime,
    key_id: str,
    body: str,
    signature: str,
) -> None:
    connection.execute(
        insert(SIGNATURES).values(
            seq=seq, hash=hash_, signed_at=signed_at, key_id=key_id, body=body, signature=signature
        )
    )


def record_checks(connection: Connection, results: Sequence[tuple[int, str, str]]) -> None:
    """Store (recording id, result, detail) as each recording's last verification."""
    if not results:
        return
    now = utcnow()
    ids = sorted({rec_id for rec_id, _, _ in results})
    for start in range(0, len(ids), CATCH_UP_BATCH):
        connection.execute(
            CHECKS.delete().where(CHECKS.c.recording_id.in_(ids[start : start + CATCH_UP_BATCH]))
        )
    rows = {rec_id: (result, detail) for rec_id, result, detail in results}
    connection.execute(
        insert(CHECKS),
        [
            {"recording_id": rec_id, "checked_at": now, "result": r, "detail": d}
            for rec_id, (r, d) in sorted(rows.items())
        ],
    )


def last_check(connection: Connection, rec_id: int) -> tuple[datetime, str, str] | None:
    row = connection.execute(
        select(CHECKS.c.checked_at, CHECKS.c.result, CHECKS.c.detail).where(
            CHECKS.c.recording_id == rec_id
        )
    ).one_or_none()
    return None if row is None else (row.checked_at, row.result, row.detail)


def catalogue_rows(connection: Connection, *, batch: int = 5000) -> Iterator[Any]:
    """(id, path, sha256, status) of every recording, in id order, in batches."""
    after: int | None = None
    columns = (RECORDINGS.c.id, RECORDINGS.c.path, RECORDINGS.c.sha256, RECORDINGS.c.status)
    while True:
        statement = select(*columns).order_by(RECORDINGS.c.id).limit(batch)
        if after is not None:
            statement = statement.where(RECORDINGS.c.id > after)
        rows = list(connection.execute(statement))
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].id
