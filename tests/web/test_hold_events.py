"""``recording.deleted`` and ``recording.held`` from every web path, on SQLite and PostgreSQL:
a real server (its own job runner delivering) with calls recorded by the phone simulator, a
real HTTP receiver, signatures checked with the docs' code. Each path sends exactly one event
per recording; a refused delete (held) sends none."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from callrec.jobs.events import DELETED, HELD
from tests.jobs.test_webhooks import docs_verify
from tests.support.receiver import Receiver, webhook_receiver
from tests.support.web import Site, start_site, stop_site
from tests.web.test_holds import signed_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "web hooks secret"


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def hooked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Site, Receiver]]:
    overrides: dict[str, Any] = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("catalog_pg_database")
    with webhook_receiver() as receiver:
        s = await start_site(
            tmp_path_factory.mktemp("hooked"),
            webhook_url=(receiver.url,),
            webhook_secret=SECRET,
            web_public_url="https://rec.example.com",
            job_poll_interval=0.05,
            **overrides,
        )
        try:
            yield s, receiver
        finally:
            await stop_site(s)


_n = 0


async def _call(site: Site, remote: str) -> int:
    global _n
    _n += 1
    return await site.record(
        codec="PCMA",
        seconds=0.3,
        session_id=f"{64000 + _n}",
        local_number="3051",
        remote_number=remote,
    )


async def _events(
    receiver: Receiver, kind: str, rec_ids: list[int], count: int
) -> list[dict[str, Any]]:
    """Waits (on the event loop: the server's job runner runs on it) until ``count`` events
    of ``kind`` about ``rec_ids`` came, then a little more (a second event for a recording
    would be a failure); their bodies, each signature checked."""
    verify = docs_verify()

    def mine() -> list[dict[str, Any]]:
        out = []
        for got in list(receiver.received):
            body = json.loads(got.body)
            if body["type"] == kind and body["data"]["recording"]["id"] in rec_ids:
                assert verify(SECRET, got.headers["Callrec-Signature"], got.body)
                assert got.headers["Callrec-Event-Id"] == body["id"]
                out.append(body)
        return out

    deadline = time.monotonic() + 60
    while len(mine()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    return mine()


async def test_every_web_delete_path_sends_one_deleted_event_per_recording(
    hooked: tuple[Site, Receiver],
) -> None:
    site, receiver = hooked
    by_api, by_page, bulk_a, bulk_b, page_a, page_b, held = [
        await _call(site, f"5810{i}") for i in range(7)
    ]
    infos = {i: site.catalog.get(i) for i in (by_api, by_page, bulk_a, bulk_b, page_a)}
    async with site.client("admin") as c:
        r = await c.post(
            "/api/v1/holds", json={"kind": "recording", "ids": [held], "reason": "case w"}
        )
        assert r.status_code == 201, r.text
        assert (await c.delete(f"/api/v1/recordings/{by_api}")).status_code == 204
        assert (await c.delete(f"/api/v1/recordings/{held}")).status_code == 409
        r = await c.post("/api/v1/recordings/bulk-delete", json={"ids": [bulk_a, bulk_b, held]})
        assert r.status_code == 200 and r.json()["deleted"] == [bulk_a, bulk_b]
    async with signed_in(site, "admin") as (c, csrf):
        r = await c.post(f"/recordings/{by_page}/delete", data={"csrf": csrf})
        assert r.status_code == 303
        r = await c.post(
            "/recordings/delete", data={"csrf": csrf, "id": [str(page_a), str(page_b)]}
        )
        assert r.status_code == 303
    deleted = [by_api, by_page, bulk_a, bulk_b, page_a, page_b]
    events = await _events(receiver, DELETED, [*deleted, held], len(deleted))
    assert sorted(e["data"]["recording"]["id"] for e in events) == sorted(deleted)
    for e in events:
        rec = e["data"]["recording"]
        info = infos.get(rec["id"])
        if info is not None:
            assert (rec["uid"], rec["sha256"]) == (info.uid, info.sha256)
        assert "download_url" not in rec
        assert (e["data"]["deleted_by"], e["data"]["reason"]) == ("admin", "deleted in the web UI")
    assert site.catalog.get(held) is not None


async def test_every_web_hold_path_sends_one_held_event_per_recording_newly_held(
    hooked: tuple[Site, Receiver],
) -> None:
    site, receiver = hooked
    recs = [await _call(site, f"5920{i}") for i in range(7)]
    one, two, three, four, five, six, seven = recs
    async with site.client("admin") as c:
        await c.put(f"/api/v1/recordings/{four}/tags/webcase")
        holds = [
            {"kind": "recording", "ids": [one], "reason": "api ids"},
            {"kind": "search", "search": {"q": "59201"}, "reason": "api search"},
            {"kind": "number", "value": "59202", "reason": "api number"},
            {"kind": "tag", "value": "webcase", "reason": "api tag"},
            # Held already by the first: no second event for it.
            {"kind": "recording", "ids": [one], "reason": "again"},
        ]
        for body in holds:
            r = await c.post("/api/v1/holds", json=body)
            assert r.status_code == 201, r.text
    async with signed_in(site, "admin") as (c, csrf):
        r = await c.post(f"/recordings/{five}/hold", data={"csrf": csrf, "reason": "page"})
        assert r.status_code == 303
        r = await c.post(
            "/recordings/hold",
            data={"csrf": csrf, "reason": "selection", "id": [str(six), str(one)]},
        )
        assert r.status_code == 303
        r = await c.post(
            "/recordings/hold-search", data={"csrf": csrf, "reason": "search", "q": "59206"}
        )
        assert r.status_code == 303
    events = await _events(receiver, HELD, recs, 7)
    reasons = {e["data"]["recording"]["id"]: e["data"]["reason"] for e in events}
    assert sorted(reasons) == sorted(recs)
    assert len(events) == 7
    assert reasons == {
        one: "api ids",
        two: "api search",
        three: "api number",
        four: "api tag",
        five: "page",
        six: "selection",
        seven: "search",
    }
    for e in events:
        rec = e["data"]["recording"]
        assert e["data"]["held_by"] == "admin"
        assert rec["download_url"] == (
            f"https://rec.example.com/api/v1/recordings/{rec['id']}/download"
        )
