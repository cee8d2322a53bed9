"""The list's API: pages with previous cursors, offsets and a jump to a date; the CSV
export of a search; bulk delete for admins. Over a real HTTP server, on recordings the phone
simulator made."""

from __future__ import annotations

import csv
import io

import pytest

from tests.support.web import CALLS, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")

FORMULA_NAME = '=HYPERLINK("http://evil.example/","click me")'


def ids(page: dict) -> list[int]:
    return [item["id"] for item in page["items"]]


async def get_page(site: Site, who: str = "admin", **params: object) -> dict:
    async with site.client(who) as c:
        r = await c.get("/api/v1/recordings", params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def export(site: Site, who: str = "admin", **params: object) -> list[dict[str, str]]:
    async with site.client(who) as c:
        r = await c.get("/api/v1/recordings.csv", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="callrec-recordings-')
    return list(csv.DictReader(io.StringIO(r.text)))


async def test_pages_go_back_and_say_where_they_are(site: Site) -> None:
    everything = ids(await get_page(site))
    assert len(everything) == len(CALLS)
    first = await get_page(site, limit=1)
    assert first["prev_cursor"] is None and first["offset"] == 0
    second = await get_page(site, limit=1, cursor=first["next_cursor"])
    third = await get_page(site, limit=1, cursor=second["next_cursor"])
    assert (second["offset"], third["offset"]) == (1, 2)
    assert ids(second) + ids(third) == everything[1:3]
    back = await get_page(site, limit=1, cursor=third["prev_cursor"])
    assert ids(back) == ids(second) and back["offset"] == 1
    assert ids(await get_page(site, limit=1, cursor=back["prev_cursor"])) == ids(first)
    uncounted = await get_page(site, limit=1, cursor=first["next_cursor"], count="false")
    assert uncounted["offset"] is None and uncounted["total"] is None


async def test_at_jumps_to_a_date(site: Site) -> None:
    rec = site.catalog.get(site.recs["alice"])
    assert rec is not None
    day = rec.start_time.date()  # every call was made today (UTC)
    today = await get_page(site, at=day.isoformat())
    assert ids(today) == ids(await get_page(site)) and today["prev_cursor"] is None
    # Long before them: nothing, with the way back to them.
    before = await get_page(site, at="2000-01-01")
    assert before["items"] == [] and before["next_cursor"] is None
    newer = await get_page(site, limit=2, cursor=before["prev_cursor"])
    assert ids(newer) == ids(today)[-2:] and newer["offset"] == len(CALLS) - 2
    async with site.client("admin") as c:
        r = await c.get("/api/v1/recordings", params={"at": "2026-13-01"})
        assert r.status_code == 400 and "is not a date" in r.json()["detail"]
        r = await c.get("/api/v1/recordings", params={"at": "2026-11-01", "sort": "duration"})
        assert r.status_code == 400 and "needs a sort by start_time" in r.json()["detail"]
        r = await c.get("/api/v1/recordings", params={"at": "2026-11-01", "page": 2})
        assert r.status_code == 400 and "one of cursor, page and at" in r.json()["detail"]


async def test_csv_export_has_every_match_safely(site: Site) -> None:
    formula = await site.record(
        codec="PCMA",
        seconds=0.5,
        session_id="40001",
        device="0c383e0e7def",
        local_number="3002",
        remote_number="-1+2",
        remote_name=FORMULA_NAME,
    )
    try:
        rows = await export(site)
        assert [int(r["id"]) for r in rows] == ids(await get_page(site))
        row = next(r for r in rows if int(r["id"]) == formula)
        # Spreadsheets read these as text, not as a formula.
        assert row["remote_name"] == "'" + FORMULA_NAME
        assert row["remote_number"] == "'-1+2"
        assert row["local_number"] == "3002" and row["codec"] == "PCMA"
        assert row["quality"] in ("good", "fair", "poor", "unknown")
        alice = next(r for r in rows if int(r["id"]) == site.recs["alice"])
        assert alice["remote_name"] == "Alice Example" and alice["direction"] == "out"
        assert alice["start_time"].endswith("+00:00")
        # The same filters as the list, in the list's order, times in the given zone.
        filtered = await export(site, direction="in", sort="start_time", tz="Europe/Berlin")
        listed = await get_page(site, direction="in", sort="start_time")
        assert [int(r["id"]) for r in filtered] == ids(listed)
        assert all(r["start_time"].endswith(("+01:00", "+02:00")) for r in filtered)
        # Every page, not only the first; the position of a page is no filter.
        assert len(await export(site, limit=1, at="2000-01-01")) == len(rows)
        # A restricted user exports only their calls.
        restricted = await export(site, "ext3002")
        assert {int(r["id"]) for r in restricted} == {site.recs["bob"], formula}
        async with site.client("admin") as c:
            bad = await c.get("/api/v1/recordings.csv", params={"since": "soon"})
            assert bad.status_code == 400
            log = (await c.get("/api/v1/audit", params={"action": "export"})).json()
        assert log[0]["username"] == "ext3002"
        assert log[1]["detail"]["filters"] == {}  # limit and at place a page: no filters
        assert any(e["detail"]["filters"].get("direction") == "in" for e in log)
    finally:
        async with site.client("admin") as c:
            assert (await c.delete(f"/api/v1/recordings/{formula}")).status_code == 204


async def test_bulk_delete_for_admins_only(site: Site) -> None:
    made = [
        await site.record(
            codec="PCMA",
            seconds=0.5,
            session_id=f"4100{n}",
            local_number="3099",
            remote_number=f"99{n}",
        )
        for n in range(3)
    ]
    files = []
    for rec_id in made:
        rec = site.catalog.get(rec_id)
        assert rec is not None
        files.append(site.server.root / rec.path)
    assert all(f.is_file() for f in files)
    async with site.client("listener") as c:
        r = await c.post("/api/v1/recordings/bulk-delete", json={"ids": made})
        assert r.status_code == 403
    async with site.client("admin") as c:
        r = await c.post("/api/v1/recordings/bulk-delete", json={"ids": [*made[:2], 987654]})
        assert r.status_code == 200, r.text
        assert r.json() == {"deleted": made[:2], "missing": [987654], "refused": []}
        assert (await c.post("/api/v1/recordings/bulk-delete", json={"ids": []})).status_code == 422
        huge = await c.post("/api/v1/recordings/bulk-delete", json={"ids": [2**64]})
        assert huge.status_code == 422
        deletes = (await c.get("/api/v1/audit", params={"action": "delete"})).json()
        summary = (await c.get("/api/v1/audit", params={"action": "bulk_delete"})).json()
    assert not files[0].exists() and not files[1].exists() and files[2].is_file()
    # Each deletion is audited as a single delete is, and one entry sums them up.
    by_id = {e["recording_id"]: e for e in reversed(deletes)}  # newest last: ids come back
    for rec_id, path in zip(made[:2], files[:2], strict=True):
        assert by_id[rec_id]["detail"]["files_removed"][0] == str(
            path.relative_to(site.server.root)
        )
    assert summary[0]["detail"] == {
        "count": 2,
        "deleted": made[:2],
        "missing": [987654],
        "refused": [],
    }
    assert site.catalog.get(made[2]) is not None
    async with site.client("admin") as c:
        await c.delete(f"/api/v1/recordings/{made[2]}")


async def test_bulk_delete_page_form_needs_admin_and_csrf(site: Site) -> None:
    rec_id = await site.record(
        codec="PCMA", seconds=0.5, session_id="42001", local_number="3098", remote_number="1"
    )
    import httpx

    async def signed_in(name: str, password: str) -> tuple[httpx.AsyncClient, str]:
        client = httpx.AsyncClient(base_url=site.base, timeout=30)
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post(
            "/login", data={"username": name, "password": password, "csrf": token}
        )
        assert r.status_code == 303
        page = await client.get("/recordings")
        return client, page.text.split('data-csrf="', 1)[1].split('"', 1)[0]

    lisa, lisa_csrf = await signed_in("lisa", "listener-password-1")
    try:
        listing = (await lisa.get("/recordings")).text
        assert "Delete selected" not in listing
        # Without JavaScript the ZIP of the ticked rows is a plain form that works.
        zip_button = listing.split('id="zip"', 1)[1].split(">", 1)[0]
        assert "disabled" not in zip_button
        r = await lisa.post("/recordings/zip", data={"id": str(rec_id), "csrf": lisa_csrf})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        r = await lisa.post("/recordings/delete", data={"id": str(rec_id), "csrf": lisa_csrf})
        assert r.status_code == 403
    finally:
        await lisa.aclose()
    admin, csrf = await signed_in("admin", "admin-password-1")
    try:
        assert "Delete selected" in (await admin.get("/recordings")).text
        r = await admin.post("/recordings/delete", data={"id": str(rec_id)})
        assert r.status_code == 403 and site.catalog.get(rec_id) is not None
        r = await admin.post(
            "/recordings/delete",
            data={"id": str(rec_id), "csrf": csrf, "back": "/recordings?q=3098"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/recordings?q=3098"
        assert "Deleted 1 recording." in (await admin.get(r.headers["location"])).text
        assert site.catalog.get(rec_id) is None
        r = await admin.post(
            "/recordings/delete", data={"id": "1", "csrf": csrf, "back": "//evil.example/"}
        )
        assert r.headers["location"] == "/recordings"
    finally:
        await admin.aclose()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/recordings.csv"), ("POST", "/api/v1/recordings/bulk-delete")],
)
async def test_anonymous_gets_401(site: Site, method: str, path: str) -> None:
    async with site.client() as c:
        r = await c.request(method, path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


async def test_openapi_describes_the_new_routes(site: Site) -> None:
    async with site.client("listener") as c:
        spec = (await c.get("/api/openapi.json")).json()
    paths = spec["paths"]
    assert "text/csv" in paths["/api/v1/recordings.csv"]["get"]["responses"]["200"]["content"]
    assert "bulk_delete" in paths["/api/v1/recordings/bulk-delete"]["post"]["description"]
    listed = paths["/api/v1/recordings"]["get"]
    assert "at" in {p["name"] for p in listed["parameters"]}
    page = spec["components"]["schemas"]["RecordingPage"]["properties"]
    assert {"prev_cursor", "offset"} <= set(page)


async def test_list_page_bad_page_and_date_are_shown(site: Site) -> None:
    async with site.client("listener") as c:
        for params, message in [
            ({"page": "0"}, "page must be a number from 1 to"),
            ({"page": str(2**64)}, "page must be a number from 1 to"),
            ({"at": "someday"}, "is not a date"),
        ]:
            r = await c.get("/recordings", params=params)
            assert r.status_code == 200 and message in r.text, params
