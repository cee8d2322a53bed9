"""The journal between the engine and the catalogue: its file, its replay, its idempotence.

A real SQLite catalogue and real files; the catalogue's failures are the real
:class:`CatalogError` of a real cause where one can be had as root (the database file
replaced), else a catalogue call made to fail or block.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from callrec.catalog import Catalog, FinishRecording, StreamCounters
from callrec.catalog.replay import JournalCheckpoint, JournalFinish, JournalStart
from callrec.engine import CatalogWriter, Journal, journalfile
from callrec.engine.journal import DEGRADED, HUNG, OK, replay_orphans
from callrec.engine.recovery import recover_unfinished
from callrec.exceptions import CatalogError
from tests.support.catalog import T0, finish_values, new_recording
from tests.support.waiting import wait_event, wait_for


def start(n: int, uid: str | None = None) -> JournalStart:
    return JournalStart(new_recording(n, uid=uid or f"{n:032x}"))


def finish(n: int, **overrides: Any) -> JournalFinish:
    values = finish_values(**overrides)
    return JournalFinish(f"{n:032x}", FinishRecording(rec_id=0, **values))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'callrec.db'}") as cat:
        cat.migrate()
        yield cat


@pytest.fixture
async def journal(tmp_path: Path, catalog: Catalog) -> AsyncIterator[Journal]:
    writer = CatalogWriter(catalog)
    journal = Journal(tmp_path / "journal", writer, name="test")
    journal.open()
    journal.ready.set()
    task = asyncio.create_task(journal.run())
    yield journal
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    journal.close()
    await writer.close()


# -- the format -------------------------------------------------------------------------------


def test_every_entry_survives_the_file() -> None:
    counters = StreamCounters(received=500, lost=2, late=1, foreign=7)
    entries = [
        JournalStart(new_recording(1, uid="a" * 32, extra={"start": {"x_é": "1\u2028"}})),
        JournalCheckpoint({"a" * 32: counters, "b" * 32: StreamCounters()}),
        finish(1, counters=counters, phone_stop_reason="hangup", stop_fields={"reason": "hangup"}),
        finish(2, status="failed", stop_reason="disk_full", sha256=None, size_bytes=0),
    ]
    data = b"".join(journalfile.encode(e) for e in entries)
    assert data.count(b"\n") == 4  # one line each, whatever the text holds
    assert list(journalfile.decode_lines(data, "test")) == entries


def test_a_line_cut_by_a_crash_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    whole = journalfile.encode(start(1)) + journalfile.encode(finish(1))
    cut = whole + journalfile.encode(start(2))[:-20]
    assert list(journalfile.decode_lines(cut, "test")) == [start(1), finish(1)]
    assert "line 3 unreadable" in caplog.text


def test_sidecars_hold_start_and_finish(tmp_path: Path) -> None:
    path = journalfile.sidecar_path(tmp_path / "call.wav")
    assert path.name == "call.wav.json"
    journalfile.create_sidecar(path, start(1))
    assert journalfile.read_sidecar(path) == (start(1), None)
    with pytest.raises(FileExistsError):
        journalfile.create_sidecar(path, start(2))  # never another recording's
    journalfile.replace_sidecar(path, start(1), finish(1))
    assert journalfile.read_sidecar(path) == (start(1), finish(1))
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match="not a callrec sidecar"):
        journalfile.read_sidecar(path)


# -- applying ---------------------------------------------------------------------------------


def test_applying_twice_changes_nothing(catalog: Catalog) -> None:
    batch = [start(1), start(2), JournalCheckpoint({f"{1:032x}": StreamCounters(received=9)})]
    batch += [finish(2)]
    ids = catalog.apply_journal(batch)

    def rows() -> dict[int, Any]:
        # All but the time of the last write (a checkpoint applied again sets it again).
        return {r.id: dataclasses.replace(r, updated_at=T0) for r in catalog.find()}

    before = rows()
    assert set(ids) == {f"{1:032x}", f"{2:032x}"} and len(before) == 2
    assert catalog.apply_journal(batch) == ids
    assert rows() == before
    assert before[ids[f"{1:032x}"]].packets_received == 9
    assert before[ids[f"{2:032x}"]].status == "complete"


def test_a_journaled_finish_replaces_recoverys_guess(catalog: Catalog, tmp_path: Path) -> None:
    """The catalogue was down when the call ended; a restart's recovery finished the row from
    the file (``crash``); the journal's finish, applied later, is what happened."""
    catalog.apply_journal([start(1)])
    recover_unfinished(catalog, tmp_path / "nothing")
    (row,) = catalog.find()
    assert (row.status, row.stop_reason) == ("failed", "crash")
    catalog.apply_journal([finish(1, phone_stop_reason="hangup")])
    (row,) = catalog.find()
    assert (row.status, row.stop_reason, row.phone_stop_reason) == (
        "complete",
        "phone_stop",
        "hangup",
    )
    # A row finished for real is never finished twice.
    catalog.apply_journal([finish(1, stop_reason="shutdown")])
    assert catalog.find()[0].stop_reason == "phone_stop"


def test_a_stale_row_gives_up_its_name(catalog: Catalog) -> None:
    """The name was free on disk when the engine claimed it, so a row holding it names a file
    that is not there: the new recording's row takes the name."""
    old = catalog.create_recording(new_recording(1))
    ids = catalog.apply_journal([start(1, uid="c" * 32)])
    rows = {r.id: r for r in catalog.find()}
    assert rows[ids["c" * 32]].path == "2026-03-01/in_1.wav"
    assert rows[old].path == f"2026-03-01/in_1.wav#missing-{old}"


# -- the journal ------------------------------------------------------------------------------


async def test_the_journal_catalogues_and_empties_its_file(
    journal: Journal, catalog: Catalog
) -> None:
    seq = journal.append(start(1))
    journal.append(finish(1))
    await journal.wait_applied(seq, 10)
    await wait_event(journal.applied, what="the journal applied")
    (row,) = catalog.find()
    assert row.uid == f"{1:032x}" and row.status == "complete"
    assert journal.path.stat().st_size == 0  # everything in it is in the catalogue
    assert journal.status() == journal.status().__class__(
        state=OK, backlog=0, oldest_age=None, unwritten=0, failures=0, last_error=None, applied=2
    )


async def test_a_failing_catalogue_is_retried_until_it_works(
    journal: Journal, catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real failure: the SQLite file is replaced behind the catalogue's back (what a restore
    # or a removed directory does), so writing would go to a file nobody sees.
    catalog.check_file()
    db = tmp_path / "callrec.db"
    os.replace(db, tmp_path / "aside.db")
    db.write_bytes((tmp_path / "aside.db").read_bytes())
    for n in range(5):
        journal.append(start(n))
        journal.append(finish(n))
    await wait_for(lambda: journal.status().failures >= 2, what="two failed attempts")
    status = journal.status()
    assert status.state == DEGRADED and status.backlog == 10
    assert "was replaced" in (status.last_error or "")
    assert journal.path.stat().st_size > 0  # kept on disk meanwhile
    # Logged once for the episode, not once per attempt.
    assert caplog.text.count("catalogue write failed") == 1
    os.replace(tmp_path / "aside.db", db)  # the original file is back
    await wait_event(journal.applied, what="the journal applied", timeout=30)
    assert journal.status().state == OK
    assert [r.status for r in catalog.find()] == ["complete"] * 5


async def test_a_hung_catalogue_is_reported_and_then_caught_up(
    journal: Journal, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callrec.engine import journal as journal_module

    monkeypatch.setattr(journal_module, "WRITE_TIMEOUT", 0.05)
    release = threading.Event()
    real = catalog.apply_journal

    def hung(entries: Any) -> Any:
        release.wait(10)
        return real(entries)

    monkeypatch.setattr(catalog, "apply_journal", hung)
    journal.append(start(1))
    await wait_for(lambda: journal.status().state == HUNG, what="the catalogue reported hung")
    journal.append(finish(1))  # appending never waits
    release.set()
    await wait_event(journal.applied, what="the journal applied")
    assert journal.status().state == OK
    assert catalog.find()[0].status == "complete"


async def test_a_full_disk_keeps_entries_in_memory(
    journal: Journal, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = journal._file
    assert file is not None
    real = file.append
    full = True

    def append(data: bytes) -> None:
        if full:
            raise OSError(28, "No space left on device")
        real(data)

    monkeypatch.setattr(file, "append", append)
    journal.append(start(1))
    journal.append(finish(1))
    assert journal.status().unwritten == 2
    await wait_event(journal.applied, what="the journal applied")  # memory is enough
    assert catalog.find()[0].status == "complete"
    full = False
    journal.append(start(2))
    await wait_event(journal.applied, what="the journal applied")
    assert journal.status().unwritten == 0 and len(catalog.find()) == 2


async def test_an_ended_processs_journal_is_replayed_once(tmp_path: Path, catalog: Catalog) -> None:
    directory = tmp_path / "journal"
    dead = journalfile.JournalFile(directory / "worker-1.journal")
    dead.append(journalfile.encode(start(1)) + journalfile.encode(start(2)))
    dead.append(journalfile.encode(finish(1)))
    alive = journalfile.JournalFile(directory / "worker-2.journal")
    alive.append(journalfile.encode(start(3)))  # held by a live process: left alone
    os.close(dead._fd)  # the process died: its lock went with it
    assert replay_orphans(catalog, directory, None) == 3
    assert not (directory / "worker-1.journal").exists()
    assert (directory / "worker-2.journal").exists()
    rows = {r.uid: r for r in catalog.find()}
    assert rows[f"{1:032x}"].status == "complete" and rows[f"{2:032x}"].status == "recording"
    assert f"{3:032x}" not in rows
    assert replay_orphans(catalog, directory, None) == 0
    alive.close(remove=False)
    assert replay_orphans(catalog, directory, None) == 1
    assert {r.start_time for r in catalog.find()} == {T0 + timedelta(minutes=n) for n in (1, 2, 3)}


async def test_a_journal_left_with_entries_is_not_removed(tmp_path: Path, catalog: Catalog) -> None:
    writer = CatalogWriter(catalog)
    journal = Journal(tmp_path / "journal", writer, name="test")
    journal.open()  # never ready: the catalogue was never reached
    journal.append(start(1))
    journal.close()
    await writer.close()
    (left,) = (tmp_path / "journal").iterdir()
    assert replay_orphans(catalog, tmp_path / "journal", None) == 1
    assert not left.exists() and catalog.find()[0].uid == f"{1:032x}"


def test_a_catalogue_that_never_opened_raises_on_use(tmp_path: Path) -> None:
    catalog = Catalog("postgresql://nobody@127.0.0.1:9/none", check=False)
    with pytest.raises(CatalogError, match="cannot"):
        catalog.apply_journal([start(1)])
    catalog.close()


async def test_a_node_replays_only_its_own_journals(tmp_path: Path, catalog: Catalog) -> None:
    """Nodes sharing a recordings directory: another node's journal is its own to replay
    (its lock may not say across machines whether it still runs)."""
    directory = tmp_path / "journal"
    names = {
        node: journalfile.journal_name("main", 1, "abc", node) for node in ("alpha", "beta", None)
    }
    assert names == {
        "alpha": "main-1-abc@alpha.journal",
        "beta": "main-1-abc@beta.journal",
        None: "main-1-abc.journal",
    }
    for n, name in enumerate(names.values(), 1):
        dead = journalfile.JournalFile(directory / name)
        dead.append(journalfile.encode(start(n)))
        os.close(dead._fd)
    assert journalfile.journal_node(directory / names["beta"]) == "beta"
    assert replay_orphans(catalog, directory, None, node="alpha") == 2
    assert sorted(p.name for p in directory.iterdir()) == ["main-1-abc@beta.journal"]
    assert replay_orphans(catalog, directory, None, node="beta") == 1
    assert len(catalog.find()) == 3
