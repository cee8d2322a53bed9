"""Legal holds through the web: the API (`/api/v1/holds`), the pages (a recording's page,
the list's selection and its current search), and every web delete path refusing a held
recording (issue 16 part R), on a real server with calls recorded by the phone simulator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.web import USERS, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")

_n = 0


async def _call(site: Site, remote: str = "555") -> int:
    global _n
    _n += 1
    return await site.record(
        codec="PCMA",
        seconds=0.3,
        session_id=f"{61000 + _n}",
        local_number="3041",
        remote_number=remote,
    )


@contextlib.asynccontextmanager
async def signed_in(site: Site, who: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A browser-like client signed in as ``who``, and its CSRF token."""
    name, password = USERS[who][0], USERS[who][1]
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post(
            "/login", data={"username": name, "password": password, "csrf": token}
        )
        assert r.status_code == 303, r.text
        page = await client.get("/account")
        csrf = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
        yield client, csrf


async def _delete_by_api(site: Site, rec_id: int) -> httpx.Response:
    async with site.client("admin") as c:
        return await c.delete(f"/api/v1/recordings/{rec_id}")


async def _delete_by_page(site: Site, rec_id: int) -> httpx.Response:
    async with signed_in(site, "admin") as (c, csrf):
        return await c.post(f"/recordings/{rec_id}/delete", data={"csrf": csrf})


#: Every web path that deletes one recording. The bulk delete (POST
#: /api/v1/recordings/bulk-delete, built in parallel) joins here once merged.
DELETE_PATHS = {"api": _delete_by_api, "page": _delete_by_page}


@pytest.mark.parametrize("path", sorted(DELETE_PATHS))
@pytest.mark.parametrize("kind", ["recording", "search", "number", "tag"])
async def test_every_web_delete_path_refuses_a_held_recording(
    site: Site, path: str, kind: str
) -> None:
    remote = f"77{_n + 1:04d}"
    rec_id = await _call(site, remote=remote)
    body: dict[str, object] = {"kind": kind, "reason": f"case {kind}"}
    if kind == "recording":
        body["ids"] = [rec_id]
    elif kind == "search":
        body["search"] = {"q": remote}
    elif kind == "number":
        body["value"] = remote
    else:
        body["value"] = f"lit{remote}"
    async with site.client("admin") as c:
        if kind == "tag":
            await c.put(f"/api/v1/recordings/{rec_id}/tags/lit{remote}")
        r = await c.post("/api/v1/holds", json=body)
        assert r.status_code == 201, r.text
        hold = r.json()
        assert (hold["kind"], hold["created_by"], hold["active"]) == (kind, "admin", True)
        if kind in ("recording", "search"):
            assert hold["recordings"] == 1
        assert (await c.get(f"/api/v1/recordings/{rec_id}")).json()["held"] is True
    refused = await DELETE_PATHS[path](site, rec_id)
    assert refused.status_code == 409
    assert f"cannot delete recording {rec_id}: it is under legal hold (hold {hold['id']}" in (
        refused.text
    )
    rec = site.catalog.get(rec_id)
    assert rec is not None and (site.server.root / rec.path).is_file()
    async with site.client("admin") as c:
        assert (await c.delete(f"/api/v1/holds/{hold['id']}")).status_code == 204
        assert (await c.delete(f"/api/v1/holds/{hold['id']}")).status_code == 409
        assert (await c.get(f"/api/v1/recordings/{rec_id}")).json()["held"] is False
    done = await DELETE_PATHS[path](site, rec_id)
    assert done.status_code in (204, 303)
    assert not (site.server.root / rec.path).exists()
    # Newest first: SQLite hands a deleted highest id out again, so an earlier test's
    # recording may have had this id too.
    tomb = site.catalog.tombstones(recording_id=rec_id)[0]
    assert (tomb.deleted_by, tomb.sha256, tomb.files_removed_at is not None) == (
        "admin",
        rec.sha256,
        True,
    )
    actions = [
        (e.action, e.detail.get("hold"))
        for e in site.catalog.audit_entries(limit=200)
        if e.action in ("hold_add", "hold_remove") and e.detail.get("hold") == hold["id"]
    ]
    assert sorted(actions) == [("hold_add", hold["id"]), ("hold_remove", hold["id"])]


async def test_holds_api_lists_and_refuses_listeners(site: Site) -> None:
    rec_id = await _call(site)
    async with site.client("admin") as c:
        r = await c.post(
            "/api/v1/holds", json={"kind": "recording", "ids": [rec_id], "reason": "audit 5"}
        )
        hold_id = r.json()["id"]
        listed = (await c.get("/api/v1/holds")).json()
        assert hold_id in [h["id"] for h in listed]
        bad = await c.post("/api/v1/holds", json={"kind": "number", "value": "x", "reason": "y"})
        assert bad.status_code == 400 and "a number hold needs a number" in bad.text
        none = await c.post(
            "/api/v1/holds",
            json={"kind": "search", "search": {"q": "nothing-like-it"}, "reason": "y"},
        )
        assert none.status_code == 400 and "finds no recordings" in none.text
        await c.delete(f"/api/v1/holds/{hold_id}")
        assert hold_id not in [h["id"] for h in (await c.get("/api/v1/holds")).json()]
        everything = (await c.get("/api/v1/holds", params={"released": "true"})).json()
        assert next(h for h in everything if h["id"] == hold_id)["released_by"] == "admin"
    async with site.client("listener") as c:
        assert (await c.get("/api/v1/holds")).status_code == 403
        r = await c.post(
            "/api/v1/holds", json={"kind": "recording", "ids": [rec_id], "reason": "x"}
        )
        assert r.status_code == 403


async def test_pages_hold_release_and_mark(site: Site) -> None:
    rec_id = await _call(site, remote="880001")
    other = await _call(site, remote="880002")
    async with signed_in(site, "admin") as (c, csrf):
        r = await c.post(f"/recordings/{rec_id}/hold", data={"csrf": csrf, "reason": "case 12"})
        assert r.status_code == 303
        page = (await c.get(f"/recordings/{rec_id}")).text
        assert "case 12" in page and 'class="held"' in page
        assert "Delete recording" not in page and "cannot be deleted until" in page
        listing = (await c.get("/recordings", params={"q": "88000"})).text
        row = listing.split(f'data-id="{rec_id}"', 1)[1].split("</tr>", 1)[0]
        assert 'class="held"' in row
        other_row = listing.split(f'data-id="{other}"', 1)[1].split("</tr>", 1)[0]
        assert 'class="held"' not in other_row
        # An empty reason is refused on the page, with the form kept.
        r = await c.post(f"/recordings/{other}/hold", data={"csrf": csrf, "reason": " "})
        assert r.status_code == 400 and "a legal hold needs a reason" in r.text
        # The list's current search, held.
        r = await c.post(
            "/recordings/hold-search", data={"csrf": csrf, "q": "880002", "reason": "subpoena"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/recordings?q=880002"
        # The list's selection, held.
        r = await c.post(
            "/recordings/hold",
            data={"csrf": csrf, "id": [str(rec_id), str(other)], "reason": "sel", "back": "/x"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/recordings"
        holds = {h.reason: h for h in site.catalog.holds()}
        assert holds["subpoena"].recordings == 1 and holds["subpoena"].query == {"q": "880002"}
        assert holds["sel"].recordings == 2
        for h in (holds["case 12"], holds["subpoena"], holds["sel"]):
            r = await c.post(f"/recordings/{rec_id}/holds/{h.id}/release", data={"csrf": csrf})
            assert r.status_code == 303
        page = (await c.get(f"/recordings/{rec_id}")).text
        assert "Delete recording" in page
    async with signed_in(site, "listener") as (c, csrf):
        r = await c.post(f"/recordings/{rec_id}/hold", data={"csrf": csrf, "reason": "x"})
        assert r.status_code == 403
        page = (await c.get("/recordings")).text
        assert "Hold selected" not in page


async def test_the_bulk_delete_refuses_a_held_recording_and_deletes_the_rest(site: Site) -> None:
    held_id = await _call(site, remote="780001")
    free_id = await _call(site, remote="780002")
    async with site.client("admin") as c:
        r = await c.post(
            "/api/v1/holds", json={"kind": "recording", "ids": [held_id], "reason": "case bulk"}
        )
        assert r.status_code == 201, r.text
        r = await c.post("/api/v1/recordings/bulk-delete", json={"ids": [held_id, free_id]})
    assert r.status_code == 200, r.text
    outcome = r.json()
    assert outcome["deleted"] == [free_id]
    assert [x["id"] for x in outcome["refused"]] == [held_id]
    assert "legal hold" in outcome["refused"][0]["reason"]
    rec = site.catalog.get(held_id)
    assert rec is not None and (site.server.root / rec.path).is_file()
    assert site.catalog.get(free_id) is None
