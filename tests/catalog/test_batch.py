"""Group commit: many recordings created or finished in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event

from callrec.catalog import (
    Catalog,
    DuplicatePathError,
    FinishRecording,
    RecordingInfo,
    StreamCounters,
)
from callrec.exceptions import CatalogError
from tests.support.catalog import SHA, T0, finish_values, get_row, new_recording
from tests.support.postgres import reset_schema

#: RecordingInfo fields that differ between two rows made from the same values.
_OWN = {"id", "path", "created_at", "updated_at"}


def _id(result: int | DuplicatePathError) -> int:
    assert isinstance(result, int), result
    return result


def _same_values(a: RecordingInfo, b: RecordingInfo) -> None:
    for field in dataclasses.fields(RecordingInfo):
        if field.name not in _OWN:
            assert getattr(a, field.name) == getattr(b, field.name), field.name


def _finish_item(rec_id: int, **overrides: Any) -> FinishRecording:
    return FinishRecording(rec_id=rec_id, **finish_values(**overrides))


@contextmanager
def _transactions(catalog: Catalog) -> Iterator[list[str]]:
    """Records "begin", "commit" and "rollback" of every connection of the catalogue."""
    seen: list[str] = []
    engine = catalog._engine  # the write engine is an option view of it, sharing its events

    def on_begin(connection: Connection) -> None:
        seen.append("begin")

    def on_commit(connection: Connection) -> None:
        seen.append("commit")

    def on_rollback(connection: Connection) -> None:
        seen.append("rollback")

    listeners = [("begin", on_begin), ("commit", on_commit), ("rollback", on_rollback)]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


def _varied(n: int) -> list[Any]:
    """NewRecordings that between them set every field to something other than its default."""
    return [
        new_recording(n),
        new_recording(n + 1, direction="out", remote_name="", peer_port=None, media_port=None),
        new_recording(
            n + 2,
            source="usb",
            codec="G722",
            sample_rate=16000,
            channels=2,
            peer_address="",
            extra={"start": {"x_vendor": "Fanvil", "list": [1, 2.5, None, "ü"]}},
            original_path=f"originals/{n + 2}.wav",
            original_sha256=SHA,
        ),
        new_recording(n + 3, remote_name="a\x00b", extra={"k\x00": "\udcff"}),
    ]


# -- create_recordings --------------------------------------------------------------------


def test_create_recordings_returns_ids_in_order(catalog: Catalog) -> None:
    news = [new_recording(n) for n in (7, 3, 9, 1, 5)]  # paths deliberately unsorted
    ids = catalog.create_recordings(news)
    assert all(isinstance(rec_id, int) for rec_id in ids)
    assert len(set(ids)) == len(news)
    for rec_id, rec in zip(ids, news, strict=True):
        assert isinstance(rec_id, int)
        info = get_row(catalog, rec_id)
        assert (info.path, info.session_id, info.status) == (rec.path, rec.session_id, "recording")
    assert catalog.count() == len(news)


def test_create_recordings_stores_what_create_recording_stores(catalog: Catalog) -> None:
    news = _varied(0)
    ids = catalog.create_recordings(news)
    for rec_id, rec in zip(ids, news, strict=True):
        assert isinstance(rec_id, int)
        single_id = catalog.create_recording(dataclasses.replace(rec, path=f"single/{rec.path}"))
        batched, single = get_row(catalog, rec_id), get_row(catalog, single_id)
        _same_values(batched, single)
        assert batched.path == rec.path
        assert batched.status == "recording"
        assert batched.counters == StreamCounters()
        assert batched.end_time is None and batched.sha256 is None
        assert batched.created_at.tzinfo is not None
        assert batched.updated_at >= batched.created_at
    assert [get_row(catalog, _id(rec_id)).remote_name for rec_id in ids[2:]] == [
        "Caller",
        "a\ufffdb",
    ]


def test_duplicate_paths_fail_only_their_slot(catalog: Catalog) -> None:
    old_id = catalog.create_recording(new_recording(1))
    news = [
        new_recording(2),
        new_recording(1, session_id="other"),  # already catalogued
        new_recording(3),
        new_recording(2, session_id="repeat"),  # twice in the batch
        new_recording(4),
    ]
    results = catalog.create_recordings(news)

    assert isinstance(results[1], DuplicatePathError)
    assert "'2026-03-01/in_1.wav' is already catalogued" in str(results[1])
    assert isinstance(results[3], DuplicatePathError)
    assert "'2026-03-01/in_2.wav' is twice in the batch" in str(results[3])
    for index in (0, 2, 4):
        rec_id = results[index]
        assert isinstance(rec_id, int)
        assert get_row(catalog, rec_id).path == news[index].path
    assert catalog.count() == 4
    assert get_row(catalog, old_id).session_id == str(15082 + 1)  # the old row is untouched
    first = results[0]
    assert isinstance(first, int)
    assert get_row(catalog, first).session_id == str(15082 + 2)  # the first of the repeats


def test_paths_equal_once_stored_are_duplicates(catalog: Catalog) -> None:
    # NUL is stored as U+FFFD, so these two claim the same stored path.
    results = catalog.create_recordings(
        [new_recording(1, path="dir/a\x00.wav"), new_recording(2, path="dir/a\ufffd.wav")]
    )
    assert isinstance(results[0], int)
    assert isinstance(results[1], DuplicatePathError)
    again = catalog.create_recordings([new_recording(3, path="dir/a\ufffd.wav")])
    assert isinstance(again[0], DuplicatePathError)
    assert catalog.count() == 1


def test_only_duplicates(catalog: Catalog) -> None:
    catalog.create_recording(new_recording(1))
    results = catalog.create_recordings([new_recording(1), new_recording(1)])
    assert [type(r) for r in results] == [DuplicatePathError, DuplicatePathError]
    assert catalog.count() == 1


def test_empty_batches(catalog: Catalog) -> None:
    with _transactions(catalog) as seen:
        assert catalog.create_recordings([]) == []
        assert catalog.finish_recordings([]) == []
    assert seen == []
    assert catalog.count() == 0


def test_create_batch_is_one_transaction(catalog: Catalog) -> None:
    news = [new_recording(n) for n in range(20)]
    with _transactions(catalog) as seen:
        ids = catalog.create_recordings(news)
    assert seen == ["begin", "commit"]
    assert catalog.count() == 20
    assert sorted(i.id for i in catalog.find(limit=100)) == sorted(map(_id, ids))


def test_batch_of_many_rows(catalog: Catalog) -> None:
    # More rows than one IN (...) chunk and than one INSERT's worth of bound parameters.
    news = [new_recording(n) for n in range(1200)]
    catalog.create_recording(news[700])
    results = catalog.create_recordings(news)
    assert isinstance(results[700], DuplicatePathError)
    assert sum(isinstance(r, int) for r in results) == 1199
    assert catalog.count() == 1200
    for index in (0, 499, 500, 1001, 1199):
        rec_id = results[index]
        assert isinstance(rec_id, int)
        assert get_row(catalog, rec_id).path == news[index].path


@pytest.fixture
def pg_catalog(catalog_pg_database: str) -> Iterator[Catalog]:
    """A migrated, empty PostgreSQL catalogue (on SQLite a batch holds the write lock from
    its first statement, so no other writer can slip in: the race exists on PostgreSQL)."""
    reset_schema(catalog_pg_database)
    with Catalog(catalog_pg_database) as cat:
        cat.migrate()
        yield cat


@pytest.mark.postgres
def test_concurrent_duplicate_falls_back_to_single_rows(pg_catalog: Catalog) -> None:
    catalog = pg_catalog
    news = [new_recording(n) for n in range(5)]
    sneaked: list[int] = []

    def sneak_in(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        # Right after the batch looked for existing paths, another writer takes one.
        if statement.startswith("SELECT recordings.path") and not sneaked:
            sneaked.append(catalog.create_recording(dataclasses.replace(news[2], device="x")))

    event.listen(catalog._engine, "after_cursor_execute", sneak_in)
    try:
        with _transactions(catalog) as seen:
            results = catalog.create_recordings(news)
    finally:
        event.remove(catalog._engine, "after_cursor_execute", sneak_in)

    assert "rollback" in seen
    assert isinstance(results[2], DuplicatePathError)
    for index in (0, 1, 3, 4):
        rec_id = results[index]
        assert isinstance(rec_id, int)
        assert get_row(catalog, rec_id).path == news[index].path
    assert catalog.count() == 5
    assert get_row(catalog, sneaked[0]).device == "x"


def test_invalid_new_recording_is_refused_on_construction() -> None:
    # create_recordings relies on NewRecording's own checks, as create_recording does.
    with pytest.raises(CatalogError, match="path must not be empty"):
        new_recording(1, path="")


def test_closed_catalogue_refuses_batches(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording(1))
    catalog.close()
    with pytest.raises(CatalogError, match=r"cannot create recordings: catalogue .* is closed"):
        catalog.create_recordings([new_recording(2)])
    with pytest.raises(CatalogError, match=r"cannot finish recordings: catalogue .* is closed"):
        catalog.finish_recordings([_finish_item(rec_id), _finish_item(rec_id + 1)])


# -- finish_recordings --------------------------------------------------------------------


def test_finish_recordings_mix_of_good_and_bad(catalog: Catalog) -> None:
    a, b, c, d = (catalog.create_recording(new_recording(n)) for n in range(4))
    catalog.finish_recording(
        b,
        status="failed",
        stop_reason="error",
        end_time=T0,
        duration=1.0,
        size_bytes=44,
        sha256=None,
        counters=None,
    )
    catalog.checkpoint({a: StreamCounters(received=10), c: StreamCounters(received=20)})
    final = StreamCounters(received=1000, lost=3, late=1, ssrc_changes=2)

    results = catalog.finish_recordings(
        [
            _finish_item(a),
            _finish_item(4242),  # no such recording
            _finish_item(b),  # already failed
            _finish_item(c, status="recovered", stop_reason="crash", sha256=None, counters=final),
            _finish_item(d, duration=-1.0),  # bad value
            _finish_item(a, stop_reason="again"),  # a second time in the batch
        ]
    )

    assert results[0] is None and results[3] is None
    messages = [None if r is None else str(r) for r in results]
    assert messages[1] == "cannot finish recording 4242: no such recording"
    assert messages[2] == f"cannot finish recording {b}: it is already failed"
    assert messages[4] == "duration must be >= 0, got -1.0"
    assert messages[5] == f"cannot finish recording {a}: it is already complete"
    assert all(isinstance(r, CatalogError) for i, r in enumerate(results) if i not in (0, 3))

    info_a = get_row(catalog, a)
    assert (info_a.status, info_a.stop_reason, info_a.sha256) == ("complete", "phone_stop", SHA)
    assert (info_a.end_time, info_a.duration, info_a.size_bytes) == (
        T0 + timedelta(hours=1),
        60.0,
        960_044,
    )
    assert info_a.counters == StreamCounters(received=10)  # counters None: last checkpoint
    assert info_a.updated_at >= info_a.created_at
    info_b = get_row(catalog, b)
    assert (info_b.status, info_b.stop_reason, info_b.duration) == ("failed", "error", 1.0)
    info_c = get_row(catalog, c)
    assert (info_c.status, info_c.stop_reason, info_c.sha256) == ("recovered", "crash", None)
    assert info_c.counters == final
    info_d = get_row(catalog, d)
    assert (info_d.status, info_d.end_time) == ("recording", None)
    assert [i.id for i in catalog.unfinished()] == [d]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "recording"}, "status must be one of 'complete', 'failed', 'recovered'"),
        ({"status": "done"}, "status must be one of"),
        ({"stop_reason": ""}, "stop_reason must not be empty"),
        ({"end_time": T0.replace(tzinfo=None)}, "end_time must be timezone-aware"),
        ({"size_bytes": -1}, "size_bytes must be >= 0"),
        ({"sha256": "ABC"}, "sha256 must be 64 lowercase hex digits"),
    ],
)
def test_bad_values_fail_only_their_item(
    catalog: Catalog, overrides: dict[str, Any], message: str
) -> None:
    good, bad = (catalog.create_recording(new_recording(n)) for n in range(2))
    results = catalog.finish_recordings([_finish_item(bad, **overrides), _finish_item(good)])
    assert isinstance(results[0], CatalogError)
    assert message in str(results[0])
    assert results[1] is None
    assert get_row(catalog, bad).status == "recording"
    assert get_row(catalog, good).status == "complete"


def test_all_bad_items_touch_nothing(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording(1))
    with _transactions(catalog) as seen:
        results = catalog.finish_recordings(
            [_finish_item(rec_id, duration=-1.0), _finish_item(rec_id, status="recording")]
        )
    assert all(isinstance(r, CatalogError) for r in results)
    assert seen == []
    assert get_row(catalog, rec_id).status == "recording"


def test_ids_that_cannot_exist_are_no_such_recording(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording(1))
    results = catalog.finish_recordings(
        [_finish_item(2**63), _finish_item(-(2**70)), _finish_item(2**31), _finish_item(rec_id)]
    )
    assert [None if r is None else str(r) for r in results] == [
        f"cannot finish recording {2**63}: no such recording",
        f"cannot finish recording {-(2**70)}: no such recording",
        f"cannot finish recording {2**31}: no such recording",
        None,
    ]
    assert get_row(catalog, rec_id).status == "complete"


#: (extra at start, phone_stop_reason, stop_fields) of rows finished both ways.
_STOP_CASES: list[tuple[dict[str, Any], str | None, dict[str, str] | None]] = [
    ({}, None, None),
    ({}, "normal", {}),
    ({"start": {"x_line": "1"}}, "normal", {"cmd": "RecordStopRequest", "reason": "normal"}),
    ({"stop": {"early": "yes"}}, None, {"reason": "odd", "x_quality": "4.2"}),
    ({"stop": "not a dict"}, "normal", {"x": "1"}),
    (
        {"start": {"x_line": "1"}, "stop": {"early": "yes", "remote_name": "old"}},
        "normal",
        {
            "cmd": "RecordStopRequest",
            "id": "15082",  # same as the row
            "dir": "out",  # differs from the row's "in"
            "device": "0c383e0e709a",
            "codec": "PCMA",
            "local_number": "201",
            "local_name": "Desk",
            "remote_number": "0301234999",  # transferred: a new party
            "remote_name": "Transfer target",
            "reason": "normal",
            "x_quality": "4.2",
        },
    ),
    ({}, "normal", {"remote_name": "c\x00", "x\x00": "\udcff"}),
]


def test_stop_fields_merge_like_finish_recording(catalog: Catalog) -> None:
    items: list[FinishRecording] = []
    pairs: list[tuple[int, int]] = []
    for n, (extra, phone_reason, fields) in enumerate(_STOP_CASES):
        rec = new_recording(0, session_id="15082", extra=extra, path=f"single/{n}.wav")
        single = catalog.create_recording(rec)
        batched = catalog.create_recording(dataclasses.replace(rec, path=f"batch/{n}.wav"))
        item = _finish_item(
            batched,
            phone_stop_reason=phone_reason,
            stop_fields=fields,
            counters=StreamCounters(received=n),
        )
        catalog.finish_recording(
            single,
            status=item.status,
            stop_reason=item.stop_reason,
            end_time=item.end_time,
            duration=item.duration,
            size_bytes=item.size_bytes,
            sha256=item.sha256,
            counters=item.counters,
            phone_stop_reason=phone_reason,
            stop_fields=fields,
        )
        items.append(item)
        pairs.append((single, batched))

    assert catalog.finish_recordings(items) == [None] * len(items)
    for single, batched in pairs:
        _same_values(get_row(catalog, single), get_row(catalog, batched))
    last = get_row(catalog, pairs[5][1])
    assert last.extra == {
        "start": {"x_line": "1"},
        "stop": {
            "early": "yes",
            "remote_name": "Transfer target",
            "dir": "out",
            "remote_number": "0301234999",
            "x_quality": "4.2",
        },
    }
    assert last.phone_stop_reason == "normal"
    assert get_row(catalog, pairs[0][1]).extra == {}
    assert get_row(catalog, pairs[4][1]).extra == {"stop": {"x": "1"}}
    assert get_row(catalog, pairs[6][1]).extra == {
        "stop": {"remote_name": "c\ufffd", "x\ufffd": "\ufffd"}
    }


def test_finish_batch_is_one_transaction(catalog: Catalog) -> None:
    ids = [_id(r) for r in catalog.create_recordings([new_recording(n) for n in range(20)])]
    items = [
        _finish_item(
            rec_id,
            # Rows setting different columns: counters or not, extra["stop"] or not.
            counters=StreamCounters(received=n) if n % 2 else None,
            stop_fields={"x_n": str(n)} if n % 3 else None,
        )
        for n, rec_id in enumerate(ids)
    ]
    with _transactions(catalog) as seen:
        results = catalog.finish_recordings(items)
    assert seen == ["begin", "commit"]
    assert results == [None] * 20
    assert catalog.unfinished() == []
    for n, rec_id in enumerate(ids):
        info = get_row(catalog, rec_id)
        assert info.status == "complete"
        assert info.counters == StreamCounters(received=n if n % 2 else 0)
        assert info.extra == ({"stop": {"x_n": str(n)}} if n % 3 else {})


def test_finish_recording_is_a_batch_of_one(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording(1))
    end: dict[str, Any] = dict(
        status="complete",
        stop_reason="phone_stop",
        end_time=T0,
        duration=1.0,
        size_bytes=44,
        sha256=None,
        counters=None,
    )
    with _transactions(catalog) as seen:
        catalog.finish_recording(rec_id, **end)
    assert seen == ["begin", "commit"]
    with pytest.raises(CatalogError, match=rf"^cannot finish recording {rec_id}: it is already"):
        catalog.finish_recording(rec_id, **end)
