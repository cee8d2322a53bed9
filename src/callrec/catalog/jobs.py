"""Jobs (issue 16 part 3): rows of work done after a call, and the queries that claim them.

A job is one row of ``jobs``: a ``kind`` (``recording.completed``, a webhook URL's deliveries,
the ``on_complete_command``...), a ``key`` unique within its kind, a JSON ``payload`` and a
state (:data:`QUEUED` -> :data:`RUNNING` -> :data:`DONE`, or back to :data:`QUEUED` for a
retry, or :data:`DEAD` once its kind gives up). Enqueueing a (kind, key) that exists is a
no-op: that is what makes "once per recording" hold across restarts and processes.

Claiming takes due rows and gives them a lease: on PostgreSQL with ``FOR UPDATE SKIP LOCKED``
(two runners never wait for each other nor get one row), on SQLite in one ``BEGIN IMMEDIATE``
transaction (the catalogue's write lock; ``callrec serve`` runs it on the catalogue writer
thread). A running job whose lease has passed (its process was killed) is due again. Every
attempt's outcome goes to ``job_attempts``, the history admins see. Migration ``0007``
creates both tables. :mod:`callrec.jobs` runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import (
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from callrec.catalog.models import Base, CleanJSON, CleanText, Recording, UTCDateTime
from callrec.catalog.records import FINAL_STATUSES, utcnow
from callrec.catalog.store import Catalog
from callrec.exceptions import CatalogError

QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
DEAD: Final = "dead"
JOB_STATES: Final = (QUEUED, RUNNING, DONE, DEAD)

#: Outcomes of one attempt, in ``job_attempts`` and ``callrec_job_runs_total``.
OUTCOME_DONE: Final = "done"
OUTCOME_RETRY: Final = "retry"
OUTCOME_DEAD: Final = "dead"
OUTCOME_DEFERRED: Final = "deferred"
OUTCOMES: Final = (OUTCOME_DONE, OUTCOME_RETRY, OUTCOME_DEAD, OUTCOME_DEFERRED)

#: The row the migration writes: when jobs began (recordings finished before are not caught up).
INSTALLED_KIND: Final = "jobs.installed"

#: The kind of a recording's transcription (issue 18; run by callrec.jobs.transcription,
#: requested by the web and the command line too).
TRANSCRIBE_KIND: Final = "transcribe"

#: Longest stored error or attempt detail (the end of a program's output, an HTTP answer).
MAX_DETAIL: Final = 2000


class Job(Base):
    """One piece of work after a call; see the module docstring."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(CleanText())
    payload: Mapped[dict[str, Any]] = mapped_column(CleanJSON(), default=dict)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: ``host:pid:token`` of the runner holding it, until ``lease_until``.
    claimed_by: Mapped[str | None] = mapped_column(CleanText())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(CleanText())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("kind", "key"),
        # What claiming looks for: due rows of a state.
        Index(None, "state", "run_after"),
    )


class JobAttempt(Base):
    """One run of a job and what came of it (an HTTP answer, an exit status...)."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    runner: Mapped[str] = mapped_column(CleanText())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(CleanText(), default="")


JOBS = cast(Table, Job.__table__)
ATTEMPTS = cast(Table, JobAttempt.__table__)
RECORDINGS = cast(Table, Recording.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInfo:
    """One job row as plain values."""

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    state: str
    attempts: int
    run_after: datetime
    claimed_by: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptInfo:
    """One attempt of a job as plain values."""

    job_id: int
    attempt: int
    runner: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """How many jobs of a kind a runner may take now, and for how long."""

    kind: str
    limit: int
    lease: timedelta
    #: Only the jobs whose key ends so (a node's own work: ``@node``), and those whose key
    #: names no node at all (no ``@``: jobs from before nodes, recordings of no node).
    key_suffix: str | None = None


def clip(text: str, size: int = MAX_DETAIL) -> str:
    """The end of ``text`` when it is too long (a program's last lines say most)."""
    return text if len(text) <= size else "..." + text[-(size - 3) :]


def enqueue_in(
    connection: Connection,
    kind: str,
    key: str,
    payload: Mapping[str, Any],
    *,
    run_after: datetime | None = None,
) -> bool:
    """Add a queued job inside the caller's transaction (a delete's, a hold's); a no-op when
    ``(kind, key)`` exists. Whether a row was added."""
    now = utcnow()
    values = {
        "kind": kind,
        "key": key,
        "payload": dict(payload),
        "state": QUEUED,
        "attempts": 0,
        "run_after": run_after or now,
        "created_at": now,
    }
    if connection.dialect.name == "postgresql":
        statement: Any = pg_insert(JOBS).values(values).on_conflict_do_nothing()
    elif connection.dialect.name == "sqlite":
        statement = sqlite_insert(JOBS).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the catalogue runs on these two
        statement = insert(JOBS).values(values)
    # RETURNING, not rowcount: psycopg counts a row skipped by ON CONFLICT as inserted.
    return connection.execute(statement.returning(JOBS.c.id)).first() is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """How one claimed attempt ended (:meth:`JobStore.settle`'s arguments)."""

    job: JobInfo
    outcome: str
    started_at: datetime
    detail: str = ""
    run_after: datetime | None = None


class JobStore:
    """The job queries over a :class:`Catalog`; blocking, each call one transaction."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- writes ----------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        run_after: datetime | None = None,
    ) -> bool:
        """:func:`enqueue_in` in a transaction of its own."""
        return self.enqueue_many([(kind, key, payload)], run_after=run_after) == 1

    def enqueue_many(
        self,
        jobs: Iterable[tuple[str, str, Mapping[str, Any]]],
        *,
        run_after: datetime | None = None,
    ) -> int:
        """Several jobs in one transaction; how many were new."""
        with self.catalog.transaction("enqueue jobs", write=True) as session:
            connection = session.connection()
            return sum(
                enqueue_in(connection, kind, key, payload, run_after=run_after)
                for kind, key, payload in jobs
            )

    def request(self, kind: str, key: str, payload: Mapping[str, Any]) -> tuple[int, bool]:
        """Have the job ``(kind, key)`` run soon: added, or queued again if it ran (done or
        dead). (its id, False when it was already queued or running: nothing changed)."""
        now = utcnow()
        with self.catalog.transaction(f"request a {kind} job", write=True) as session:
            connection = session.connection()
            added = enqueue_in(connection, kind, key, payload)
            row = connection.execute(
                select(JOBS.c.id, JOBS.c.state).where(JOBS.c.kind == kind, JOBS.c.key == key)
            ).one()
            if added:
                return int(row.id), True
            if row.state in (QUEUED, RUNNING):
                return int(row.id), False
            connection.execute(
                update(JOBS)
                .where(JOBS.c.id == row.id)
                .values(
                    state=QUEUED,
                    attempts=0,
                    run_after=now,
                    finished_at=None,
                    payload=dict(payload),
                )
            )
            return int(row.id), True

    def claim(
        self, runner: str, claims: Sequence[Claim], *, due_by: datetime | None = None
    ) -> list[JobInfo]:
        """Take up to ``limit`` due jobs of each kind for ``runner``: queued ones whose time
        has come and running ones whose lease has passed (by ``due_by``, default now),
        oldest first. Each claimed job's ``attempts`` counts this run."""
        now = utcnow()
        due_by = due_by or now
        claimed: list[JobInfo] = []
        with self.catalog.transaction("claim jobs", write=True) as session:
            connection = session.connection()
            for claim in claims:
                if claim.limit <= 0:
                    continue
                due = (
                    select(JOBS.c.id)
                    .where(JOBS.c.kind == claim.kind)
                    .where(_due(due_by))
                    .where(
                        or_(
                            JOBS.c.key.endswith(claim.key_suffix, autoescape=True),
                            ~JOBS.c.key.contains("@", autoescape=True),
                        )
                        if claim.key_suffix
                        else true()
                    )
                    .order_by(JOBS.c.run_after, JOBS.c.id)
                    .limit(claim.limit)
                    .with_for_update(skip_locked=True)
                )
                ids = list(connection.scalars(due))
                if not ids:
                    continue
                connection.execute(
                    update(JOBS)
                    .where(JOBS.c.id.in_(ids))
                    .values(
                        state=RUNNING,
                        attempts=JOBS.c.attempts + 1,
                        claimed_by=runner,
                        lease_until=now + claim.lease,
                    )
                )
                rows = connection.execute(
                    select(JOBS).where(JOBS.c.id.in_(ids)).order_by(JOBS.c.run_after, JOBS.c.id)
                )
                claimed.extend(_info(row._mapping) for row in rows)
        return claimed

    def renew(self, runner: str, ids: Sequence[int], lease: timedelta) -> None:
        """Extend the leases ``runner`` holds on ``ids`` (jobs still running)."""
        if not ids:
            return
        with self.catalog.transaction("renew job leases", write=True) as session:
            session.connection().execute(
                update(JOBS)
                .where(JOBS.c.id.in_(list(ids)))
                .where(JOBS.c.claimed_by == runner)
                .where(JOBS.c.state == RUNNING)
                .values(lease_until=utcnow() + lease)
            )

    def settle(
        self,
        job: JobInfo,
        *,
        outcome: str,
        started_at: datetime,
        detail: str = "",
        run_after: datetime | None = None,
    ) -> bool:
        """Record how the attempt ``job`` (as claimed) ended: :data:`OUTCOME_DONE`,
        :data:`OUTCOME_DEAD`, :data:`OUTCOME_RETRY` (queued again at ``run_after``) or
        :data:`OUTCOME_DEFERRED` (the same, and the attempt does not count). False when the
        job was no longer this runner's (its lease passed and another runner took it): then
        nothing is changed, not even the history."""
        return self.settle_many(
            [
                Settlement(
                    job=job,
                    outcome=outcome,
                    started_at=started_at,
                    detail=detail,
                    run_after=run_after,
                )
            ]
        )[0]

    def settle_many(self, settlements: Sequence[Settlement]) -> list[bool]:
        """:meth:`settle` for several attempts in one transaction, answered in order: the
        runner settles the jobs that end meanwhile together (one commit, not one each: at
        1,000 recordings a minute, two jobs each; issue 17)."""
        for one in settlements:
            if one.outcome not in OUTCOMES:
                raise CatalogError(f"unknown job outcome {one.outcome!r}")
        if not settlements:
            return []
        now = utcnow()
        answers: list[bool] = []
        with self.catalog.transaction("settle jobs", write=True) as session:
            connection = session.connection()
            for one in settlements:
                answers.append(self._settle(connection, one, now))
        return answers

    @staticmethod
    def _settle(connection: Any, one: Settlement, now: datetime) -> bool:
        job, outcome = one.job, one.outcome
        detail = clip(one.detail)
        values: dict[str, Any] = {"claimed_by": None, "lease_until": None}
        if outcome == OUTCOME_DONE:
            values.update(state=DONE, finished_at=now)
        elif outcome == OUTCOME_DEAD:
            values.update(state=DEAD, finished_at=now, last_error=detail)
        else:
            values.update(state=QUEUED, run_after=one.run_after or now)
            if outcome == OUTCOME_RETRY:
                values.update(last_error=detail)
            else:
                values.update(attempts=JOBS.c.attempts - 1)
        mine = connection.execute(
            update(JOBS)
            .where(JOBS.c.id == job.id)
            .where(JOBS.c.state == RUNNING)
            .where(JOBS.c.claimed_by == job.claimed_by)
            .where(JOBS.c.attempts == job.attempts)
            .values(**values)
        ).rowcount
        if not mine:
            return False
        connection.execute(
            insert(ATTEMPTS).values(
                job_id=job.id,
                attempt=job.attempts,
                runner=job.claimed_by or "",
                started_at=one.started_at,
                finished_at=now,
                outcome=outcome,
                detail=detail,
            )
        )
        return True

    def runners(self, prefix: str) -> set[str]:
        """The runners named ``prefix...`` (one host's) that hold running jobs."""
        statement = (
            select(JOBS.c.claimed_by)
            .where(JOBS.c.state == RUNNING)
            .where(JOBS.c.claimed_by.startswith(prefix, autoescape=True))
            .distinct()
        )
        with self.catalog.transaction("look for job runners") as session:
            return {str(r) for r in session.connection().scalars(statement) if r is not None}

    def release(self, runners: Sequence[str]) -> int:
        """Make the running jobs of ``runners`` (whose processes are gone) due at once,
        without waiting for their leases; how many."""
        if not runners:
            return 0
        with self.catalog.transaction("release jobs of dead runners", write=True) as session:
            statement = (
                update(JOBS)
                .where(JOBS.c.state == RUNNING)
                .where(JOBS.c.claimed_by.in_(list(runners)))
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
            return int(session.connection().execute(statement).rowcount)

    def retry(self, job_id: int) -> bool:
        """Queue a dead (or done, or waiting) job to run now, with a fresh count of attempts.
        False when there is no such job or it is running."""
        with self.catalog.transaction(f"retry job {job_id}", write=True) as session:
            return bool(
                session.connection()
                .execute(
                    update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .where(JOBS.c.state != RUNNING)
                    .values(
                        state=QUEUED,
                        attempts=0,
                        run_after=utcnow(),
                        finished_at=None,
                    )
                )
                .rowcount
            )

    def purge(self, before: datetime) -> int:
        """Remove done jobs finished before ``before`` (and their history); dead ones stay
        until an admin retries them, and the ``jobs.installed`` mark stays."""
        with self.catalog.transaction("purge old jobs", write=True) as session:
            connection = session.connection()
            old = (
                select(JOBS.c.id)
                .where(JOBS.c.state == DONE)
                .where(JOBS.c.finished_at < before)
                .where(JOBS.c.kind != INSTALLED_KIND)
            )
            ids = list(connection.scalars(old))
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                connection.execute(delete(ATTEMPTS).where(ATTEMPTS.c.job_id.in_(chunk)))
                connection.execute(delete(JOBS).where(JOBS.c.id.in_(chunk)))
            return len(ids)

    # -- reads -----------------------------------------------------------------------------

    def get(self, job_id: int) -> JobInfo | None:
        with self.catalog.transaction(f"read job {job_id}") as session:
            row = session.connection().execute(select(JOBS).where(JOBS.c.id == job_id)).first()
            return None if row is None else _info(row._mapping)

    def find(self, kind: str, key: str) -> JobInfo | None:
        with self.catalog.transaction("read a job") as session:
            row = (
                session.connection()
                .execute(select(JOBS).where(JOBS.c.kind == kind).where(JOBS.c.key == key))
                .first()
            )
            return None if row is None else _info(row._mapping)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
        before_id: int | None = None,
    ) -> list[JobInfo]:
        """Jobs newest first, optionally of one state or kind (a kind ending in ``*``: a
        prefix), older than job ``before_id`` (the next page: stable while jobs are added);
        the ``jobs.installed`` mark is left out."""
        statement = select(JOBS).where(JOBS.c.kind != INSTALLED_KIND)
        if before_id is not None:
            statement = statement.where(JOBS.c.id < before_id)
        if state is not None:
            statement = statement.where(JOBS.c.state == state)
        if kind is not None:
            if kind.endswith("*"):
                statement = statement.where(JOBS.c.kind.startswith(kind[:-1], autoescape=True))
            else:
                statement = statement.where(JOBS.c.kind == kind)
        statement = statement.order_by(JOBS.c.id.desc()).limit(limit).offset(offset)
        with self.catalog.transaction("list jobs") as session:
            return [_info(row._mapping) for row in session.connection().execute(statement)]

    def attempts(self, job_id: int) -> list[AttemptInfo]:
        """The history of a job, first attempt first."""
        statement = select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.id)
        with self.catalog.transaction(f"read the history of job {job_id}") as session:
            return [
                AttemptInfo(
                    job_id=row.job_id,
                    attempt=row.attempt,
                    runner=row.runner,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    outcome=row.outcome,
                    detail=row.detail,
                )
                for row in session.connection().execute(statement)
            ]

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> number of jobs."""
        statement = (
            select(JOBS.c.kind, JOBS.c.state, func.count())
            .where(JOBS.c.kind != INSTALLED_KIND)
            .group_by(JOBS.c.kind, JOBS.c.state)
        )
        with self.catalog.transaction("count jobs") as session:
            return {(k, s): int(n) for k, s, n in session.connection().execute(statement)}

    def oldest_queued(self) -> dict[str, datetime]:
        """kind -> creation time of its oldest queued job."""
        statement = (
            select(JOBS.c.kind, func.min(JOBS.c.created_at))
            .where(JOBS.c.state == QUEUED)
            .group_by(JOBS.c.kind)
        )
        with self.catalog.transaction("read the job queue") as session:
            return {
                kind: when
                for kind, when in session.connection().execute(statement)
                if when is not None
            }

    def due_kinds(self, due_by: datetime | None = None) -> set[str]:
        """The kinds with a job that could be claimed (by ``due_by``, default now): a cheap
        look before claiming."""
        statement = select(JOBS.c.kind).where(_due(due_by or utcnow())).distinct()
        with self.catalog.transaction("look for due jobs") as session:
            return set(session.connection().scalars(statement))

    def installed_at(self) -> datetime | None:
        """When migration ``0007`` ran (jobs began)."""
        job = self.find(INSTALLED_KIND, "")
        return None if job is None else job.created_at

    def finished_without_job(
        self, kind: str, since: datetime, *, limit: int = 1000
    ) -> list[tuple[int, str]]:
        """(id, uid) of final recordings last changed at or after ``since`` that have no
        ``kind`` job keyed by their uid: the ones a crash kept from being enqueued."""
        has_job = (
            select(JOBS.c.id)
            .where(JOBS.c.kind == kind)
            .where(JOBS.c.key == RECORDINGS.c.uid)
            .exists()
        )
        statement = (
            select(RECORDINGS.c.id, RECORDINGS.c.uid)
            .where(RECORDINGS.c.updated_at >= since)
            .where(RECORDINGS.c.status.in_(FINAL_STATUSES))
            .where(RECORDINGS.c.uid.is_not(None))
            .where(~has_job)
            .order_by(RECORDINGS.c.id)
            .limit(limit)
        )
        with self.catalog.transaction("look for recordings without jobs") as session:
            return [(int(i), str(u)) for i, u in session.connection().execute(statement)]


def _due(when: datetime) -> Any:
    return or_(
        and_(JOBS.c.state == QUEUED, JOBS.c.run_after <= when),
        and_(JOBS.c.state == RUNNING, JOBS.c.lease_until < when),
    )


def _info(row: Any) -> JobInfo:
    return JobInfo(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        payload=dict(row["payload"] or {}),
        state=row["state"],
        attempts=row["attempts"],
        run_after=row["run_after"],
        claimed_by=row["claimed_by"],
        lease_until=row["lease_until"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )
