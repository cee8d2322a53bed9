"""Writing and reading recording rows, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from callrec.catalog import Catalog, RecordingInfo, StreamCounters
from callrec.exceptions import CatalogError
from tests.support.catalog import SHA, T0, finish_values, get_row, new_recording

PLUS_TWO = timezone(timedelta(hours=2))


def _finish(catalog: Catalog, rec_id: int, **overrides: object) -> None:
    catalog.finish_recording(rec_id, **finish_values(**overrides))


def _is_utc(value: datetime | None) -> bool:
    return value is not None and value.tzinfo is UTC


# -- create / finish / get ----------------------------------------------------------------


def test_round_trip_of_every_field(catalog: Catalog) -> None:
    start = datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=PLUS_TWO)
    extra = {
        "start": {"x_vendor": "Fanvil", "line": "2", "empty": ""},
        "nested": {"list": [1, 2.5, True, None, "ü"], "n": -7},
    }
    rec = new_recording(
        source="usb",
        session_id="15082",
        device="0c383e0e709a",
        direction="out",
        local_number="201",
        local_name="Front desk",
        remote_number="+49 30 1234567",
        remote_name="Müller, Jörg",
        codec="G722",
        peer_address="2001:db8::10",
        peer_port=51234,
        media_port=41002,
        start_time=start,
        sample_rate=16000,
        channels=2,
        path="2026-03-01/out_201_+49301234567.wav",
        extra=extra,
    )
    rec_id = catalog.create_recording(rec)
    assert isinstance(rec_id, int)

    info = get_row(catalog, rec_id)
    assert info.id == rec_id
    for name in (f.name for f in dataclasses.fields(rec)):
        assert getattr(info, name) == getattr(rec, name), name
    assert info.start_time == datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert _is_utc(info.start_time)
    assert info.status == "recording"
    assert not info.finished
    assert (info.end_time, info.duration, info.size_bytes, info.sha256) == (None,) * 4
    assert (info.stop_reason, info.phone_stop_reason) == (None, None)
    assert info.counters == StreamCounters()
    assert _is_utc(info.created_at)
    assert _is_utc(info.updated_at)
    created_at = info.created_at

    end = datetime(2026, 3, 1, 7, 45, 0, 654321, tzinfo=timezone(timedelta(hours=-5)))
    counters = StreamCounters(
        received=9001,
        lost=12,
        late=3,
        duplicate=4,
        foreign=5,
        malformed=6,
        other=7,
        ssrc_changes=2,
    )
    catalog.finish_recording(
        rec_id,
        status="complete",
        stop_reason="phone_stop",
        end_time=end,
        duration=2085.530865,
        size_bytes=5_000_000_123,  # beyond 32 bits
        sha256=SHA,
        counters=counters,
        phone_stop_reason="hangup",
        stop_fields={"cmd": "RecordStopRequest", "id": "15082", "reason": "hangup"},
    )
    info = get_row(catalog, rec_id)
    assert info.status == "complete"
    assert info.finished
    assert info.stop_reason == "phone_stop"
    assert info.phone_stop_reason == "hangup"
    assert info.end_time == datetime(2026, 3, 1, 12, 45, 0, 654321, tzinfo=UTC)
    assert _is_utc(info.end_time)
    assert info.duration == 2085.530865
    assert info.size_bytes == 5_000_000_123
    assert info.sha256 == SHA
    assert info.counters == counters
    assert (info.packets_received, info.packets_other, info.ssrc_changes) == (9001, 7, 2)
    # Nothing in the stop request was new, so extra is untouched.
    assert info.extra == extra
    assert info.created_at == created_at
    assert info.updated_at >= info.created_at
    assert info.start_time == start  # unchanged by finishing


def test_defaults(catalog: Catalog) -> None:
    from callrec.catalog import NewRecording

    rec_id = catalog.create_recording(
        NewRecording(
            session_id="1",
            device="0c383e0e709a",
            codec="PCMU",
            start_time=T0,
            sample_rate=8000,
            path="a.wav",
        )
    )
    info = get_row(catalog, rec_id)
    assert info.source == "server"
    assert info.direction == ""
    assert (info.local_number, info.local_name, info.remote_number, info.remote_name) == (
        "",
        "",
        "",
        "",
    )
    assert (info.peer_address, info.peer_port, info.media_port) == ("", None, None)
    assert info.channels == 1
    assert info.extra == {}


def test_get_unknown_id_is_none(catalog: Catalog) -> None:
    assert catalog.get(12345) is None


def test_info_is_a_detached_frozen_value(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording(extra={"start": {"a": "1"}}))
    info = get_row(catalog, rec_id)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "complete"  # type: ignore[misc]
    info.extra["start"]["a"] = "changed"
    assert get_row(catalog, rec_id).extra == {"start": {"a": "1"}}


def test_session_ids_repeat_but_paths_do_not(catalog: Catalog) -> None:
    first = catalog.create_recording(new_recording(0, session_id="7"))
    second = catalog.create_recording(new_recording(1, session_id="7"))
    assert first != second
    with pytest.raises(
        CatalogError,
        match=r"cannot create recording: path '2026-03-01/in_0.wav' is already catalogued",
    ):
        catalog.create_recording(new_recording(0, session_id="8"))
    assert catalog.count() == 2


def test_finish_unknown_id(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"^cannot finish recording 4242: no such recording$"):
        _finish(catalog, 4242)


def test_finish_twice(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording())
    _finish(catalog, rec_id, status="failed", stop_reason="error")
    with pytest.raises(
        CatalogError, match=rf"^cannot finish recording {rec_id}: it is already failed$"
    ):
        _finish(catalog, rec_id)
    assert get_row(catalog, rec_id).stop_reason == "error"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "recording"}, "status must be one of 'complete', 'failed', 'recovered'"),
        ({"status": "done"}, "status must be one of"),
        ({"stop_reason": ""}, "stop_reason must not be empty"),
        ({"end_time": datetime(2026, 3, 1, 13)}, "end_time must be timezone-aware"),
        ({"duration": -1.0}, "duration must be >= 0"),
        ({"size_bytes": -1}, "size_bytes must be >= 0"),
        ({"sha256": "ABC"}, "sha256 must be 64 lowercase hex digits"),
    ],
)
def test_finish_refuses_bad_values(
    catalog: Catalog, overrides: dict[str, object], message: str
) -> None:
    rec_id = catalog.create_recording(new_recording())
    with pytest.raises(CatalogError, match=message):
        _finish(catalog, rec_id, **overrides)
    assert get_row(catalog, rec_id).status == "recording"


def test_finish_without_counters_keeps_the_last_checkpoint(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording())
    catalog.checkpoint({rec_id: StreamCounters(received=500, lost=2)})
    _finish(
        catalog,
        rec_id,
        status="recovered",
        stop_reason="crash",
        sha256=None,
        counters=None,
    )
    info = get_row(catalog, rec_id)
    assert (info.status, info.stop_reason, info.sha256) == ("recovered", "crash", None)
    assert info.counters == StreamCounters(received=500, lost=2)


def test_stop_fields_keep_what_changed(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(
        new_recording(
            local_number="201",
            local_name="Desk",
            remote_number="0301234000",
            remote_name="",
            extra={"start": {"x_line": "1"}, "stop": {"early": "yes"}},
        )
    )
    catalog.finish_recording(
        rec_id,
        status="complete",
        stop_reason="phone_stop",
        end_time=T0 + timedelta(minutes=5),
        duration=300.0,
        size_bytes=4_800_044,
        sha256=SHA,
        counters=None,
        phone_stop_reason="normal",
        stop_fields={
            "cmd": "RecordStopRequest",
            "id": "15082",  # same as start
            "local_number": "201",  # same as start
            "local_name": "Desk",  # same as start
            "remote_number": "0301234999",  # transferred: a new party
            "remote_name": "Transfer target",  # the phone learned a name
            "reason": "normal",  # stored as phone_stop_reason
            "x_quality": "4.2",  # no column for it
        },
    )
    info = get_row(catalog, rec_id)
    assert info.remote_number == "0301234000"  # the start values stay in the columns
    assert info.phone_stop_reason == "normal"
    assert info.extra == {
        "start": {"x_line": "1"},
        "stop": {
            "early": "yes",
            "remote_number": "0301234999",
            "remote_name": "Transfer target",
            "x_quality": "4.2",
        },
    }


def test_stop_reason_differing_from_phone_stop_reason_is_kept(catalog: Catalog) -> None:
    rec_id = catalog.create_recording(new_recording())
    _finish(catalog, rec_id, phone_stop_reason=None, stop_fields={"reason": "odd"})
    assert get_row(catalog, rec_id).extra == {"stop": {"reason": "odd"}}


# -- checkpoint / unfinished --------------------------------------------------------------


def test_checkpoint_updates_many_rows(catalog: Catalog) -> None:
    a = catalog.create_recording(new_recording(0))
    b = catalog.create_recording(new_recording(1))
    c = catalog.create_recording(new_recording(2))
    final = StreamCounters(received=10, lost=1)
    _finish(catalog, c, counters=final)
    before = get_row(catalog, a).updated_at

    catalog.checkpoint(
        {
            b: StreamCounters(received=200, late=1, other=3),
            a: StreamCounters(received=100, duplicate=2, ssrc_changes=1),
            c: StreamCounters(received=999),  # finished: left alone
            9999: StreamCounters(received=1),  # unknown: ignored
        }
    )
    assert get_row(catalog, a).counters == StreamCounters(received=100, duplicate=2, ssrc_changes=1)
    assert get_row(catalog, b).counters == StreamCounters(received=200, late=1, other=3)
    assert get_row(catalog, c).counters == final
    assert get_row(catalog, a).updated_at >= before
    assert catalog.get(9999) is None

    # Later checkpoints replace, not add.
    catalog.checkpoint({a: StreamCounters(received=150, duplicate=2, ssrc_changes=1)})
    assert get_row(catalog, a).packets_received == 150
    catalog.checkpoint({})
    assert get_row(catalog, b).packets_received == 200


def test_unfinished(catalog: Catalog) -> None:
    assert catalog.unfinished() == []
    ids = [catalog.create_recording(new_recording(n)) for n in range(4)]
    _finish(catalog, ids[1])
    _finish(catalog, ids[3], status="failed", stop_reason="error")
    left = catalog.unfinished()
    assert [info.id for info in left] == [ids[0], ids[2]]
    assert all(info.status == "recording" for info in left)
    assert left[1].path == "2026-03-01/in_2.wav"


def test_concurrent_writers(catalog: Catalog) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(10):
                n = worker * 100 + i
                rec_id = catalog.create_recording(new_recording(n))
                catalog.checkpoint({rec_id: StreamCounters(received=n)})
                if i % 2:
                    _finish(catalog, rec_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert catalog.count() == 60
    assert catalog.count(status="complete") == 30
    assert len(catalog.unfinished()) == 30


# -- find / count -------------------------------------------------------------------------


@pytest.fixture
def catalog_calls(catalog: Catalog) -> dict[str, int]:
    """Seven calls over two phones; c and d start at the same instant."""
    rows = {
        "a": new_recording(0, local_number="201", remote_number="0301111", direction="in"),
        "b": new_recording(1, local_number="201", remote_number="0302222", direction="out"),
        "c": new_recording(2, device="0c383e0e0002", local_number="202", remote_number="015%77_1"),
        "d": new_recording(
            3,
            device="0c383e0e0002",
            local_number="202",
            remote_number="0153333",
            start_time=T0 + timedelta(minutes=2),
        ),
        "e": new_recording(4, local_number="201", remote_number="2011", direction=""),
        "f": new_recording(5, local_number="203", remote_number="Anonymous", direction="out"),
        "g": new_recording(6, local_number="201", remote_number="0304444"),
    }
    ids = {key: catalog.create_recording(rec) for key, rec in rows.items()}
    _finish(catalog, ids["a"])
    _finish(catalog, ids["b"], status="failed", stop_reason="error")
    _finish(catalog, ids["c"])
    _finish(catalog, ids["e"], status="recovered", stop_reason="crash")
    return ids


def _keys(ids: dict[str, int], infos: list[RecordingInfo]) -> str:
    by_id = {v: k for k, v in ids.items()}
    return "".join(by_id[info.id] for info in infos)


def test_find_everything_newest_first(catalog: Catalog, catalog_calls: dict[str, int]) -> None:
    # c and d share a start time: the later id comes first.
    assert _keys(catalog_calls, catalog.find()) == "gfedcba"
    assert catalog.count() == 7


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"number": "0301111"}, "a"),
        ({"number": "030"}, "gba"),
        ({"number": "201"}, "geba"),  # local 201, and remote 2011
        ({"number": "2011"}, "e"),
        ({"number": "%"}, "c"),  # a literal percent sign, not a wildcard
        ({"number": "_"}, "c"),
        ({"number": "5%77_"}, "c"),
        ({"number": "anonymous"}, "f"),  # case-insensitive on both backends
        ({"number": "Anonym"}, "f"),
        ({"number": ""}, "gfedcba"),
        ({"device": "0c383e0e0002"}, "dc"),
        ({"device": "0c383e0e000"}, ""),  # exact, not a substring
        ({"since": T0 + timedelta(minutes=2)}, "gfedc"),  # inclusive
        ({"until": T0 + timedelta(minutes=2)}, "ba"),  # exclusive
        (
            {
                "since": datetime(2026, 3, 1, 14, 1, tzinfo=PLUS_TWO),
                "until": datetime(2026, 3, 1, 14, 4, tzinfo=PLUS_TWO),
            },
            "dcb",
        ),
        ({"status": "recording"}, "gfd"),
        ({"status": "complete"}, "ca"),
        ({"status": "recovered"}, "e"),
        ({"direction": "out"}, "fb"),
        ({"direction": ""}, "e"),
        ({"number": "201", "status": "recording", "direction": "in"}, "g"),
        ({"device": "0c383e0e709a", "since": T0 + timedelta(minutes=1), "direction": "in"}, "g"),
    ],
)
def test_find_and_count_filters(
    catalog: Catalog,
    catalog_calls: dict[str, int],
    filters: dict[str, object],
    expected: str,
) -> None:
    assert _keys(catalog_calls, catalog.find(**filters)) == expected  # type: ignore[arg-type]
    assert catalog.count(**filters) == len(expected)  # type: ignore[arg-type]


def test_find_pages(catalog: Catalog, catalog_calls: dict[str, int]) -> None:
    pages = [_keys(catalog_calls, catalog.find(limit=3, offset=o)) for o in (0, 3, 6, 9)]
    assert pages == ["gfe", "dcb", "a", ""]
    assert _keys(catalog_calls, catalog.find(number="201", limit=2, offset=1)) == "eb"
    assert catalog.find(limit=0) == []
    assert catalog.count(number="201") == 4


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "done"}, "status must be one of"),
        ({"direction": "IN"}, "direction must be one of"),
        ({"since": datetime(2026, 3, 1)}, "since must be timezone-aware"),
        ({"until": datetime(2026, 3, 1)}, "until must be timezone-aware"),
        ({"limit": -1}, "limit and offset must be >= 0"),
        ({"offset": -1}, "limit and offset must be >= 0"),
    ],
)
def test_find_refuses_bad_filters(
    catalog: Catalog, filters: dict[str, object], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        catalog.find(**filters)  # type: ignore[arg-type]


# -- text ---------------------------------------------------------------------------------

WEIRD = [
    "Zoë Ölçer-Ærøskøbing",
    "张伟 (销售部)",
    "محمد الأحمد",
    "📞☎️ 👩‍👩‍👧",
    "'; DROP TABLE recordings; --",
    "back\\slash \"double\" 'single' `tick`",
    "tab\tnewline\ncarriage\r",
    "100% _match_ [x] *?",
    "  padded  ",
    "zero\u200bwidth\ufeffbom",
    "\x01\x7f control",
    "latin-1 decoded: Ã¤Ã¶",
    "x" * 5000,
]


@pytest.mark.parametrize("text", WEIRD, ids=range(len(WEIRD)))
def test_weird_text_survives(catalog: Catalog, text: str) -> None:
    rec_id = catalog.create_recording(
        new_recording(
            session_id=text,
            device=text,
            local_number=text,
            local_name=text,
            remote_number=text,
            remote_name=text,
            codec=text,
            peer_address=text,
            path=f"dir/{text}.wav",
            extra={"start": {text: text, "list": [text]}},
        )
    )
    _finish(catalog, rec_id, stop_reason=text, phone_stop_reason=text, stop_fields={"x": text})
    info = get_row(catalog, rec_id)
    for name in (
        "session_id",
        "device",
        "local_number",
        "local_name",
        "remote_number",
        "remote_name",
        "codec",
        "peer_address",
        "stop_reason",
        "phone_stop_reason",
    ):
        assert getattr(info, name) == text, name
    assert info.path == f"dir/{text}.wav"
    assert info.extra == {"start": {text: text, "list": [text]}, "stop": {"x": text}}
    assert [i.id for i in catalog.find(number=text[:20])] == [rec_id]
    assert [i.id for i in catalog.find(device=text)] == [rec_id]


def test_unstorable_characters_become_replacement_characters(catalog: Catalog) -> None:
    # PostgreSQL cannot store NUL; nothing can encode a lone surrogate. Both backends
    # store U+FFFD instead, rather than failing the recording.
    rec_id = catalog.create_recording(
        new_recording(
            remote_name="a\x00b",
            local_name="lone \udcff surrogate",
            extra={"start": {"k\x00": ["v\x00", {"\ud800": "\udfff"}]}},
        )
    )
    _finish(catalog, rec_id, stop_fields={"remote_name": "c\x00"})
    info = get_row(catalog, rec_id)
    assert info.remote_name == "a\ufffdb"
    assert info.local_name == "lone \ufffd surrogate"
    assert info.extra == {
        "start": {"k\ufffd": ["v\ufffd", {"\ufffd": "\ufffd"}]},
        "stop": {"remote_name": "c\ufffd"},
    }
