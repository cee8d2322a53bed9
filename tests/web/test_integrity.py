"""A recording's tamper evidence in the web: its state on the recording page and in
``GET /api/v1/recordings/{id}/integrity``, and "Verify now" (admins) finding a flipped byte.
A real server records the calls through the phone simulator; the chain is signed every 0.2 s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from callrec.integrity.verify import state
from tests.support.waiting import wait_for
from tests.support.web import CALLS, Site, start_site, stop_site


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = await start_site(tmp_path, integrity_sign_interval=0.2)
    try:
        for name in ("alice", "bob"):
            s.recs[name] = await s.record(**CALLS[name])
        yield s
    finally:
        await stop_site(s)


async def _signed(site: Site, rec_id: int) -> None:
    await wait_for(
        lambda: state(site.catalog, rec_id).covered, what="a signature covering the recording"
    )


async def _sign_in(site: Site, username: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=site.base, timeout=30)
    form = await client.get("/login")
    token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = await client.post(
        "/login", data={"username": username, "password": password, "csrf": token}
    )
    assert r.status_code == 303, r.text
    return client


def _flip_byte(site: Site, rec_id: int) -> None:
    rec = site.catalog.get(rec_id)
    assert rec is not None
    with (site.server.root / rec.path).open("r+b") as file:
        file.seek(200)
        byte = file.read(1)
        file.seek(200)
        file.write(bytes([byte[0] ^ 0x80]))


async def test_api_shows_the_chain_and_verify_now_finds_a_flipped_byte(site: Site) -> None:
    alice, bob = site.recs["alice"], site.recs["bob"]
    await _signed(site, bob)
    async with site.client("listener") as client:
        r = await client.get(f"/api/v1/recordings/{alice}/integrity")
        assert r.status_code == 200
        body = r.json()
        assert (body["in_chain"], body["seq"], body["kind"], body["signed"]) == (
            True,
            1,
            "recorded",
            True,
        )
        assert body["signed_seq"] == 2 and body["checked_at"] is None
        # Only admins re-hash files.
        assert (
            await client.post(f"/api/v1/recordings/{alice}/integrity/verify")
        ).status_code == 403
    async with site.client("ext3002") as client:  # alice's call is not 3002's
        assert (await client.get(f"/api/v1/recordings/{alice}/integrity")).status_code == 404
    async with site.client("admin") as client:
        r = await client.post(f"/api/v1/recordings/{alice}/integrity/verify")
        assert r.status_code == 200
        assert (r.json()["result"], r.json()["detail"]) == ("ok", "matches chain entry #1")
        _flip_byte(site, alice)
        r = await client.post(f"/api/v1/recordings/{alice}/integrity/verify")
        assert (r.json()["result"], r.json()["detail"]) == (
            "altered",
            "its SHA-256 is not the chain's",
        )
        audit = await client.get("/api/v1/audit", params={"action": "verify"})
        assert [e["detail"]["result"] for e in audit.json()] == ["altered", "ok"]


async def test_recording_page_shows_the_state_and_admins_verify_now(site: Site) -> None:
    bob = site.recs["bob"]
    await _signed(site, bob)
    listener = await _sign_in(site, "lisa", "listener-password-1")
    try:
        page = (await listener.get(f"/recordings/{bob}")).text
        assert 'id="integrity"' in page and "entry #2" in page and "up to #2" in page
        assert "Verify now" not in page and "never" in page
    finally:
        await listener.aclose()
    admin = await _sign_in(site, "admin", "admin-password-1")
    try:
        page = (await admin.get(f"/recordings/{bob}")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert "Verify now" in page
        _flip_byte(site, bob)
        r = await admin.post(f"/recordings/{bob}/verify", data={"csrf": csrf})
        assert r.status_code == 303
        page = (await admin.get(f"/recordings/{bob}")).text
        assert 'data-integrity="altered"' in page
        assert "its SHA-256 is not the chain&#39;s" in page
    finally:
        await admin.aclose()
