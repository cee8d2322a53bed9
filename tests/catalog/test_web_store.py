"""The catalogue's web queries on SQLite and PostgreSQL: users, tokens, sessions, the
append-only audit log, notes, tags, and scoped searches with cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from callrec.catalog import Catalog, NewAuditEntry, Scope, SearchQuery, StreamCounters
from callrec.exceptions import CatalogError
from tests.support.catalog import T0, new_recording


def finish(catalog: Catalog, rec_id: int, duration: float) -> None:
    catalog.finish_recording(
        rec_id,
        status="complete",
        stop_reason="phone_stop",
        end_time=T0 + timedelta(hours=1),
        duration=duration,
        size_bytes=100,
        sha256=None,
        counters=StreamCounters(received=10),
    )


@pytest.fixture
def filled(catalog: Catalog) -> Catalog:
    """30 recordings: 3 devices, local numbers 201-203, remote 0301234nnn, durations n s."""
    for n in range(30):
        rec_id = catalog.create_recording(
            new_recording(
                n,
                device=f"0c383e0e70{n % 3}a",
                local_number=f"20{n % 3 + 1}",
                direction="in" if n % 2 else "out",
                codec="G722" if n % 5 == 0 else "PCMA",
                remote_name="Иван" if n == 7 else "Caller",
            )
        )
        if n != 29:  # the newest is still recording
            finish(catalog, rec_id, float(n))
    return catalog


def search_ids(catalog: Catalog, scope: Scope | None = None, **kw: object) -> list[int]:
    return [r.id for r in catalog.search(SearchQuery(limit=500, **kw), scope).items]  # type: ignore[arg-type]


def test_users_and_the_last_admin(catalog: Catalog) -> None:
    admin = catalog.create_user("Root", password_hash="h1", role="admin")
    assert admin.username == "root" and admin.is_admin and admin.scope.unrestricted
    with pytest.raises(CatalogError, match="'root' already exists"):
        catalog.create_user("ROOT", password_hash="h", role="listener")
    with pytest.raises(CatalogError, match="user name 'a b'"):
        catalog.create_user("a b", password_hash="h", role="listener")
    with pytest.raises(CatalogError, match="role must be one of admin, listener"):
        catalog.create_user("x", password_hash="h", role="god")
    bob = catalog.create_user(
        "bob", password_hash="h2", role="listener", extensions=[" 201", "202", "201"]
    )
    assert bob.extensions == ("201", "202") and not bob.scope.unrestricted
    assert catalog.user_credentials("BOB") == (bob, "h2")
    assert catalog.user_credentials("nobody") is None
    with pytest.raises(CatalogError, match="the last admin"):
        catalog.update_user(admin.id, role="listener")
    with pytest.raises(CatalogError, match="the last admin"):
        catalog.delete_user(admin.id)
    bob = catalog.update_user(bob.id, role="admin", devices=["0C383E0E700A"])
    assert bob.devices == ("0c383e0e700a",) and bob.extensions == ("201", "202")
    catalog.update_user(admin.id, role="listener")  # bob is an admin now
    assert [u.username for u in catalog.list_users()] == ["bob", "root"]
    assert catalog.count_users() == 2
    catalog.record_login(bob.id)
    assert catalog.get_user(bob.id).last_login_at is not None  # type: ignore[union-attr]


def test_tokens(catalog: Catalog) -> None:
    user = catalog.create_user("bob", password_hash="h", role="listener")
    now = datetime.now(UTC)
    token = catalog.create_token(user.id, name="cron", token_hash="a" * 64, prefix="crt_aaaaaa")
    short = catalog.create_token(
        user.id, name="", token_hash="b" * 64, prefix="crt_bbbbbb", expires_at=now
    )
    assert catalog.user_for_token("a" * 64, now) == user
    assert catalog.user_for_token("b" * 64, now) is None  # expired
    assert catalog.user_for_token("c" * 64, now) is None
    listed = catalog.list_tokens(user.id)
    assert [t.id for t in listed] == [token.id, short.id]
    assert listed[0].last_used_at is not None and listed[0].username == "bob"
    assert not catalog.delete_token(token.id, user_id=user.id + 1)
    assert catalog.delete_token(token.id, user_id=user.id)
    assert catalog.user_for_token("a" * 64, now) is None
    catalog.create_user("root", password_hash="h", role="admin")
    catalog.delete_user(user.id)
    assert catalog.list_tokens() == []


def test_web_sessions(catalog: Catalog) -> None:
    user = catalog.create_user("bob", password_hash="h", role="listener")
    now = datetime.now(UTC)
    catalog.create_web_session(
        "s" * 64, user_id=user.id, csrf_token="c1", expires_at=now + timedelta(hours=1)
    )
    catalog.create_web_session("t" * 64, user_id=user.id, csrf_token="c2", expires_at=now)
    assert catalog.web_session_user("s" * 64, now, extend_to=now) == (user, "c1")
    assert catalog.web_session_user("t" * 64, now, extend_to=now) is None
    # A new password ends every session but the one that changed it.
    catalog.create_web_session(
        "u" * 64, user_id=user.id, csrf_token="c3", expires_at=now + timedelta(hours=1)
    )
    change = catalog.set_password(
        user.id, password_hash="new", must_change_password=False, keep_session="u" * 64
    )
    assert change.sessions_ended == 1 and change.tokens_revoked == ()
    assert catalog.web_session_user("s" * 64, now, extend_to=now) is None
    assert catalog.web_session_user("u" * 64, now, extend_to=now) is not None
    catalog.delete_web_session("u" * 64)
    assert catalog.web_session_user("u" * 64, now, extend_to=now) is None


def test_audit_log_is_append_only(catalog: Catalog) -> None:
    catalog.audit(
        NewAuditEntry(action="sign_in", user_id=1, username="bob", client_address="192.0.2.1"),
        NewAuditEntry(action="play", user_id=1, username="bob", recording_id=7),
    )
    entries = catalog.audit_entries()
    assert [e.action for e in entries] == ["play", "sign_in"]
    assert entries[0].recording_id == 7 and entries[1].client_address == "192.0.2.1"
    assert [e.action for e in catalog.audit_entries(recording_id=7)] == ["play"]
    assert [e.action for e in catalog.audit_entries(before_id=entries[0].id)] == ["sign_in"]
    with pytest.raises(CatalogError, match="unknown audit action"):
        catalog.audit_entries(action="nap")
    with pytest.raises(CatalogError, match="action must be one of"):
        NewAuditEntry(action="nap")
    for statement in (
        "UPDATE audit_log SET username = 'mallory'",
        "DELETE FROM audit_log",
    ):
        with (
            pytest.raises(SQLAlchemyError, match="audit_log is append-only"),
            catalog._engine.begin() as connection,
        ):
            connection.execute(text(statement))
    assert [e.username for e in catalog.audit_entries()] == ["bob", "bob"]


def test_notes_and_tags_go_with_their_recording(catalog: Catalog) -> None:
    user = catalog.create_user("bob", password_hash="h", role="listener")
    rec_id = catalog.create_recording(new_recording())
    other = catalog.create_recording(new_recording(1))
    note = catalog.add_note(rec_id, user=user, text="  hello  ")
    assert note.text == "hello" and note.username == "bob"
    with pytest.raises(CatalogError, match="1-10000 characters"):
        catalog.add_note(rec_id, user=user, text="   ")
    with pytest.raises(CatalogError, match="no recording 999"):
        catalog.add_note(999, user=user, text="x")
    assert catalog.add_tag(rec_id, "Complaint") and not catalog.add_tag(rec_id, "complaint")
    assert catalog.add_tag(rec_id, "vip") and catalog.add_tag(other, "vip")
    with pytest.raises(CatalogError, match="must be one word"):
        catalog.add_tag(rec_id, "two words")
    assert catalog.tags_of([rec_id, other]) == {rec_id: ["complaint", "vip"], other: ["vip"]}
    assert catalog.tag_counts() == [("vip", 2), ("complaint", 1)]
    with pytest.raises(CatalogError, match="still recording"):
        catalog.delete_recording(rec_id)
    finish(catalog, rec_id, 1.0)
    gone = catalog.delete_recording(rec_id)
    assert gone.id == rec_id and catalog.get(rec_id) is None
    assert catalog.notes(rec_id) == [] and catalog.get_note(note.id) is None
    assert catalog.tag_counts() == [("vip", 1)]
    with pytest.raises(CatalogError, match="no such recording"):
        catalog.delete_recording(rec_id)


def test_search_filters(filled: Catalog) -> None:
    c = filled
    all_ids = search_ids(c)
    assert len(all_ids) == 30 and all_ids == sorted(all_ids, reverse=True)
    assert search_ids(c, q="0301234007") == [8]
    assert search_ids(c, q="иван") in ([], [8])  # SQLite's lower() is ASCII-only
    assert search_ids(c, q="Иван") == [8]
    assert search_ids(c, q="1234 00") == search_ids(c, q="0301234 00")
    assert search_ids(c, q="01234_") == []  # '_' matches itself
    assert len(search_ids(c, direction="in")) == 15
    assert search_ids(c, codec="g722") == [26, 21, 16, 11, 6, 1]
    assert search_ids(c, status="recording") == [30]
    assert search_ids(c, min_duration=27) == [29, 28]
    assert search_ids(c, max_duration=1) == [2, 1]
    assert search_ids(c, since=T0 + timedelta(minutes=28)) == [30, 29]
    assert search_ids(c, until=T0 + timedelta(minutes=2)) == [2, 1]
    assert search_ids(c, device="0C383E0E700A")[:3] == [28, 25, 22]
    c.add_tag(5, "vip")
    assert search_ids(c, tag="VIP") == [5]
    assert search_ids(c, sort="duration")[:3] == [30, 1, 2]  # still recording: no duration
    assert search_ids(c, sort="-duration")[:2] == [29, 28]
    with pytest.raises(CatalogError, match="limit must be 1-500"):
        SearchQuery(limit=501)


def test_scope_is_applied_in_the_query(filled: Catalog) -> None:
    c = filled
    only_201 = Scope(extensions=("201",))
    ids = search_ids(c, only_201)
    assert len(ids) == 10 and all(c.get(i).local_number == "201" for i in ids)  # type: ignore[union-attr]
    page = c.search(SearchQuery(limit=3), only_201)
    assert page.total == 10 and len(page.items) == 3
    assert c.get_visible(2, only_201) is None and c.get_visible(1, only_201) is not None
    assert [r.id for r in c.get_many_visible([1, 2, 3, 4], only_201)] == [4, 1]
    by_device = Scope(devices=("0C383E0E701A",))
    assert search_ids(c, by_device) == search_ids(c, device="0c383e0e701a")
    either = Scope(extensions=("0301234000",), devices=("0c383e0e701a",))
    assert search_ids(c, either) == [*search_ids(c, device="0c383e0e701a"), 1]
    c.add_tag(2, "vip")
    c.add_tag(1, "mine")
    assert c.tag_counts(only_201) == [("mine", 1)]
    assert c.devices_seen(only_201) == ["0c383e0e700a"]
    assert search_ids(c, Scope()) == search_ids(c)


@pytest.mark.parametrize("sort", ["-start_time", "start_time", "duration", "-remote_number"])
def test_cursor_pages_cover_everything_once_while_rows_arrive(filled: Catalog, sort: str) -> None:
    expected = search_ids(filled, sort=sort)
    seen: list[int] = []
    cursor = None
    while True:
        page = filled.search(SearchQuery(limit=7, sort=sort, cursor=cursor))
        seen += [r.id for r in page.items]
        assert page.total in (30, 31)  # 31 once the new call has arrived
        cursor = page.next_cursor
        if cursor is None:
            break
        if len(seen) == 7 and sort == "-start_time":
            # A new call arrives meanwhile: newest-first paging is not disturbed by it.
            filled.create_recording(new_recording(99, start_time=T0 + timedelta(days=1)))
            expected = [i for i in search_ids(filled, sort=sort) if i != 31]
    assert seen == expected
    with pytest.raises(CatalogError, match="belongs to sort"):
        other = "-duration" if sort != "-duration" else "duration"
        filled.search(
            SearchQuery(
                sort=other,
                cursor=filled.search(SearchQuery(limit=1, sort=sort)).next_cursor,
            )
        )


def test_counts_are_capped(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import callrec.catalog.browsing as webstore

    monkeypatch.setattr(webstore, "COUNT_CAP", 5)
    for n in range(8):
        catalog.create_recording(new_recording(n))
    page = catalog.search(SearchQuery(limit=2))
    assert (page.total, page.total_exact) == (5, False)
    assert catalog.search(SearchQuery(limit=2, with_total=False)).total is None
    assert catalog.status_counts() == {"recording": 8}


@pytest.mark.parametrize("sort", ["-start_time", "start_time", "duration"])
def test_previous_cursors_walk_back_and_offsets_number_the_pages(
    filled: Catalog, sort: str
) -> None:
    expected = search_ids(filled, sort=sort)
    pages: list[list[int]] = []
    offsets: list[int | None] = []
    cursor = None
    while True:
        page = filled.search(SearchQuery(limit=7, sort=sort, cursor=cursor))
        pages.append([r.id for r in page.items])
        offsets.append(page.offset)
        assert (page.prev_cursor is None) == (len(pages) == 1)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert offsets == [0, 7, 14, 21, 28]
    # Back from the last page, page by page, to the first.
    back: list[list[int]] = []
    cursor = page.prev_cursor
    while cursor is not None:
        page = filled.search(SearchQuery(limit=7, sort=sort, cursor=cursor))
        back.insert(0, [r.id for r in page.items])
        assert page.offset == 7 * (len(pages) - 1 - len(back))
        assert page.next_cursor is not None
        cursor = page.prev_cursor
    assert back == pages[:-1]
    assert [i for p in pages for i in p] == expected
    # Page numbers by offset agree with the cursors.
    assert [r.id for r in filled.search(SearchQuery(limit=7, sort=sort, page=3)).items] == pages[2]
    assert filled.search(SearchQuery(limit=7, sort=sort, page=3)).offset == 14


def test_at_starts_the_page_at_a_moment(filled: Catalog) -> None:
    # Recording n (id n + 1) starts n minutes after T0.
    at = T0 + timedelta(minutes=10)
    newest = filled.search(SearchQuery(limit=5, at=at))
    assert [r.id for r in newest.items] == [10, 9, 8, 7, 6]
    assert newest.offset == 20 and newest.prev_cursor is not None
    newer = filled.search(SearchQuery(limit=5, cursor=newest.prev_cursor))
    assert [r.id for r in newer.items] == [15, 14, 13, 12, 11]
    oldest = filled.search(SearchQuery(limit=5, sort="start_time", at=at))
    assert [r.id for r in oldest.items] == [11, 12, 13, 14, 15] and oldest.offset == 10
    before_all = filled.search(SearchQuery(limit=5, at=T0))
    assert before_all.items == [] and before_all.next_cursor is None
    assert [
        r.id for r in filled.search(SearchQuery(limit=5, cursor=before_all.prev_cursor)).items
    ] == [5, 4, 3, 2, 1]
    with pytest.raises(CatalogError, match="needs a sort by start_time"):
        SearchQuery(at=at, sort="duration")
    with pytest.raises(CatalogError, match="one of cursor, page and at"):
        SearchQuery(at=at, page=2)
