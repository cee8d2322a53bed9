"""Journal entries and how one batch of them is applied to the catalogue, idempotently.

The recording engine records first and catalogues afterwards (:mod:`callrec.engine.journal`):
what it would have written (a new row, a checkpoint of counters, a finish) is an entry here,
named by the recording's ``uid`` rather than a row id the catalogue has not given yet. A batch
is applied in one transaction, and applying it again (a crash between the commit and the
journal's truncation, a rebuild from the sidecars) changes nothing: a start whose uid has a
row is skipped, a checkpoint touches only rows still ``recording``, a finish of a row that is
already final is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from callrec.catalog.batch import IN_CHUNK, RECORDINGS, FinishRecording, chunks, insert_new
from callrec.catalog.models import clean_text
from callrec.catalog.records import NewRecording
from callrec.rtp.counters import StreamCounters

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JournalStart:
    """A recording began: its row (``rec.uid`` is set)."""

    rec: NewRecording


@dataclass(frozen=True, slots=True)
class JournalCheckpoint:
    """The counters of the recordings open at one moment, by uid."""

    counters: Mapping[str, StreamCounters]


@dataclass(frozen=True, slots=True)
class JournalFinish:
    """A recording ended; ``finish.rec_id`` is ignored (the row is found by ``uid``)."""

    uid: str
    finish: FinishRecording


JournalEntry = JournalStart | JournalCheckpoint | JournalFinish


def entry_uids(entries: Sequence[JournalEntry]) -> set[str]:
    uids: set[str] = set()
    for entry in entries:
        if isinstance(entry, JournalStart):
            assert entry.rec.uid is not None
            uids.add(entry.rec.uid)
        elif isinstance(entry, JournalFinish):
            uids.add(entry.uid)
        else:
            uids.update(entry.counters)
    return uids


def row_ids(connection: Connection, uids: set[str]) -> dict[str, int]:
    """uid -> row id of the rows that have one of ``uids``."""
    found: dict[str, int] = {}
    for chunk in chunks(sorted(uids), IN_CHUNK):
        query = select(RECORDINGS.c.uid, RECORDINGS.c.id).where(RECORDINGS.c.uid.in_(chunk))
        found.update((uid, rec_id) for uid, rec_id in connection.execute(query))
    return found


def insert_starts(
    connection: Connection, starts: Sequence[NewRecording], known: dict[str, int]
) -> None:
    """Insert the rows of ``starts`` whose uid has none yet; ``known`` gains their ids."""
    news: dict[str, NewRecording] = {}
    by_path: dict[str, str] = {}
    for rec in starts:
        assert rec.uid is not None
        if rec.uid in known or rec.uid in news:
            continue
        key = clean_text(rec.path)
        earlier = by_path.get(key)
        if earlier is not None:
            # The same name twice in one batch: the earlier recording's file was never made
            # (a refused start) or is gone, or the later one's exclusive creation would have
            # failed. The later row keeps the name.
            news[earlier] = _renamed(news[earlier], earlier)
        by_path[key] = rec.uid
        news[rec.uid] = rec
    if not news:
        return
    ordered = _free_paths(connection, list(news.values()))
    for rec, result in zip(ordered, insert_new(connection, ordered), strict=True):
        if isinstance(result, Exception):  # pragma: no cover - paths were made unique above
            logger.error("journal: %s; recording %s is not catalogued", result, rec.uid)
            continue
        assert rec.uid is not None
        known[rec.uid] = result


def _renamed(rec: NewRecording, uid: str) -> NewRecording:
    logger.warning("journal: recording %s named %s has no file there; renamed", uid, rec.path)
    return replace(rec, path=f"{rec.path}#missing-{uid[:12]}")


def _free_paths(connection: Connection, news: list[NewRecording]) -> list[NewRecording]:
    """Rename the stale rows that hold the paths of ``news``; ``news`` as they go in.

    The engine creates a recording's file exclusively before it journals the row, so a row
    of the same node that already has the path names a file that did not exist at that
    moment (deleted behind the catalogue's back, or never written): the new recording's row
    is the true one. A row of another node (several nodes on one catalogue, each with its
    own recordings directory) is that node's recording: it is left alone, and the new row's
    path is marked instead (its file and sidecar stay on this node's disk; docs/scaling.md
    says to put ``{node}`` in ``filename_template``)."""
    keys = sorted({clean_text(rec.path) for rec in news})
    stale: list[dict[str, Any]] = []
    by_path = {clean_text(rec.path): rec for rec in news}
    taken: set[str] = set()
    for chunk in chunks(keys, IN_CHUNK):
        query = select(RECORDINGS.c.id, RECORDINGS.c.path, RECORDINGS.c.node).where(
            RECORDINGS.c.path.in_(chunk)
        )
        for rec_id, path, node in connection.execute(query):
            new = by_path[path]
            if node is not None and new.node is not None and node != new.node:
                taken.add(path)
                logger.error(
                    "journal: recording %s is named %s, a recording of node %s; catalogued "
                    "with a marked path (put {node} in filename_template: docs/scaling.md)",
                    new.uid,
                    path,
                    node,
                )
                continue
            stale.append({"b_id": rec_id, "b_path": f"{path}#missing-{rec_id}"})
            logger.warning(
                "journal: recording %d named %s, whose file is not there; renamed", rec_id, path
            )
    if stale:
        rename = (
            update(RECORDINGS)
            .where(RECORDINGS.c.id == bindparam("b_id"))
            .values(path=bindparam("b_path"))
        )
        connection.execute(rename, stale)
    return [
        replace(rec, path=f"{rec.path}#node-{(rec.uid or '')[:12]}")
        if clean_text(rec.path) in taken
        else rec
        for rec in news
    ]


def merged_checkpoints(
    entries: Sequence[JournalEntry], known: Mapping[str, int]
) -> dict[int, StreamCounters]:
    """Row id -> the latest counters of the batch's checkpoints."""
    latest: dict[int, StreamCounters] = {}
    for entry in entries:
        if isinstance(entry, JournalCheckpoint):
            for uid, counters in entry.counters.items():
                rec_id = known.get(uid)
                if rec_id is not None:
                    latest[rec_id] = counters
    return latest


def finishes(entries: Sequence[JournalEntry], known: Mapping[str, int]) -> list[FinishRecording]:
    """The batch's finishes with their row ids (a uid without a row is logged and left)."""
    items: list[FinishRecording] = []
    for entry in entries:
        if not isinstance(entry, JournalFinish):
            continue
        rec_id = known.get(entry.uid)
        if rec_id is None:
            logger.error("journal: the end of recording %s has no row to go to", entry.uid)
            continue
        items.append(replace(entry.finish, rec_id=rec_id))
    return items
