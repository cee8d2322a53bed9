"""Who may still see and do what (issue 15, part A), over a real HTTP server: the live feed
asks again who is watching, one-time passwords open nothing else, a new password revokes
tokens, tokens do not outlive the token that made them, the sign-in throttle, denied
attempts in the audit log, header-only uploads and restriction inputs.

Deterministic without timing: what must not be seen is a call started *after* the viewer
lost their right to see it, so any snapshot naming it would be a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from callrec.catalog import UserInfo
from callrec.sim.phone import PhoneCall
from callrec.web.security import LoginThrottle, hash_password, new_api_token
from tests.support.data import LOCALFILE_DATA
from tests.support.web import USERS, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: A safety net for a stream that should end: never a timing assertion (the stream ends
#: within a tick or two; this only stops a broken build from hanging the suite).
STREAM_END = 60.0


# -- helpers -------------------------------------------------------------------------------


def ctx(site: Site) -> Any:
    return site.web.app.state.ctx


def add_user(
    site: Site,
    name: str,
    *,
    password: str = "password-of-a-test",
    extensions: tuple[str, ...] = (),
    role: str = "listener",
    must_change: bool = False,
) -> UserInfo:
    return site.catalog.create_user(
        name,
        password_hash=hash_password(password),
        role=role,
        extensions=extensions,
        must_change_password=must_change,
    )


def add_token(site: Site, user: UserInfo, *, expires_at: datetime | None = None) -> str:
    token, token_hash, prefix = new_api_token()
    site.catalog.create_token(
        user.id, name="test", token_hash=token_hash, prefix=prefix, expires_at=expires_at
    )
    return token


def bearer(site: Site, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=site.base, headers={"authorization": f"Bearer {token}"}, timeout=30
    )


async def login_form(client: httpx.AsyncClient) -> str:
    form = await client.get("/login")
    return form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


async def try_sign_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    token = await login_form(client)
    return await client.post(
        "/login", data={"username": username, "password": password, "csrf": token}
    )


@contextlib.asynccontextmanager
async def signed_in(site: Site, username: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in as ``username``."""
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        r = await try_sign_in(client, username, password)
        assert r.status_code == 303, r.text
        yield client


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/account")
    return page.text.split('data-csrf="', 1)[1].split('"', 1)[0]


async def sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of each event on a stream, until it ends."""
    event = "message"
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])
            event = "message"


def phone_call(site: Site, session_id: str, local_number: str) -> PhoneCall:
    return PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id=session_id,
        codec="PCMU",
        local_number=local_number,
        remote_number="0301234",
        remote_name="Secret Caller",
    )


async def hang_up(call: PhoneCall) -> None:
    await call.stop("hangup")
    await call.close()


async def rest_of_stream(events: AsyncIterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Every event until the server ends the stream."""

    async def collect() -> list[tuple[str, Any]]:
        return [e async for e in events]

    return await asyncio.wait_for(collect(), STREAM_END)


async def feed_ends_before_the_next_call(
    site: Site, client: httpx.AsyncClient, lose_access: Any, session_id: str
) -> list[tuple[str, Any]]:
    """Opens the live feed with ``client``, takes away the viewer's right to it
    (``lose_access``), then starts a call: the feed must end with an ``end`` event and never
    name that call."""
    async with client.stream("GET", "/api/v1/live/events") as stream:
        assert stream.status_code == 200
        events = sse(stream.aiter_lines())
        first = await anext(events)
        assert first[0] == "snapshot"
        await lose_access()
        call = phone_call(site, session_id, "3001")
        assert (await call.start())["result"] == "success"
        try:
            rest = await rest_of_stream(events)
        finally:
            await hang_up(call)
    assert rest, "the stream ended without saying why"
    assert rest[-1][0] == "end" and "no longer valid" in rest[-1][1]["reason"]
    for event, data in rest:
        if event == "snapshot":
            assert session_id not in [s["session_id"] for s in data]
    return rest


# -- 1. the live feed asks again -----------------------------------------------------------


async def test_live_feed_ends_when_its_token_is_revoked(site: Site) -> None:
    user = add_user(site, "watcher1")
    token = add_token(site, user)
    token_id = site.catalog.list_tokens(user.id)[0].id

    async def revoke() -> None:
        async with site.client("admin") as admin:
            assert (await admin.delete(f"/api/v1/tokens/{token_id}")).status_code == 204

    async with bearer(site, token) as client:
        await feed_ends_before_the_next_call(site, client, revoke, "61001")
        # Reconnecting (what EventSource does) is refused.
        assert (await client.get("/api/v1/live/events")).status_code == 401


async def test_live_feed_ends_when_its_user_is_deleted(site: Site) -> None:
    user = add_user(site, "watcher2")
    token = add_token(site, user)

    async def delete() -> None:
        async with site.client("admin") as admin:
            assert (await admin.delete(f"/api/v1/users/{user.id}")).status_code == 204

    async with bearer(site, token) as client:
        await feed_ends_before_the_next_call(site, client, delete, "61002")


async def test_live_feed_ends_when_its_session_signs_out(site: Site) -> None:
    add_user(site, "watcher3", password="watcher-password")
    async with signed_in(site, "watcher3", "watcher-password") as client:
        csrf = await csrf_of(client)

        async def sign_out() -> None:
            # The same browser signs out in another tab: its cookie, on another request.
            assert (await client.post("/logout", data={"csrf": csrf})).status_code == 303

        await feed_ends_before_the_next_call(site, client, sign_out, "61003")


async def test_live_feed_ends_when_its_user_gets_a_one_time_password(site: Site) -> None:
    user = add_user(site, "watcher4", password="watcher-password")

    async def reset() -> None:
        async with site.client("admin") as admin:
            r = await admin.post(f"/admin/users/{user.id}/password")
            assert r.status_code == 303  # POST-redirect-GET: the password is shown after it
            r = await admin.get(r.headers["location"])
            assert r.status_code == 200 and 'id="one-time"' in r.text

    async with signed_in(site, "watcher4", "watcher-password") as client:
        await feed_ends_before_the_next_call(site, client, reset, "61004")


async def test_live_feed_ends_when_its_token_expires(site: Site) -> None:
    user = add_user(site, "watcher5")
    token = add_token(site, user, expires_at=datetime.now(UTC) + timedelta(seconds=2))
    async with bearer(site, token) as client, client.stream("GET", "/api/v1/live/events") as s:
        assert s.status_code == 200
        rest = await rest_of_stream(sse(s.aiter_lines()))
    assert rest[0][0] == "snapshot" and rest[-1][0] == "end"


async def test_a_changed_restriction_applies_to_the_next_snapshot(site: Site) -> None:
    user = add_user(site, "watcher6", extensions=("3101",))
    token = add_token(site, user)
    first = phone_call(site, "61005", "3101")
    second = phone_call(site, "61006", "3102")
    async with bearer(site, token) as client, client.stream("GET", "/api/v1/live/events") as s:
        events = sse(s.aiter_lines())
        assert (await first.start())["result"] == "success"
        try:
            async for event, data in events:
                if event == "snapshot" and [x["session_id"] for x in data] == ["61005"]:
                    break
            async with site.client("admin") as admin:
                r = await admin.patch(f"/api/v1/users/{user.id}", json={"extensions": ["3102"]})
                assert r.status_code == 200
            assert (await second.start())["result"] == "success"
            try:
                async for event, data in events:
                    seen = [x["session_id"] for x in data] if event == "snapshot" else []
                    if "61006" in seen:
                        # Made after the change: the call of 3101 is gone from it.
                        assert seen == ["61006"]
                        break
            finally:
                await hang_up(second)
        finally:
            await hang_up(first)


# -- 2. one-time passwords, and what a new password takes with it --------------------------


async def test_a_one_time_password_opens_nothing_but_the_account_page(site: Site) -> None:
    user = add_user(site, "fresh", password="one-time-pw-1", must_change=True)
    # A token made before (say, by `callrec user token` or before an admin reset).
    old_token = add_token(site, user)
    rec = site.recs["alice"]
    async with (
        signed_in(site, "fresh", "one-time-pw-1") as client,
        signed_in(site, "fresh", "one-time-pw-1") as other,
        bearer(site, old_token) as script,
    ):
        csrf = await csrf_of(client)
        for c, headers in ((client, {"x-csrf-token": csrf}), (script, {})):
            for method, url, body in [
                ("GET", "/api/v1/recordings", None),
                ("GET", f"/api/v1/recordings/{rec}", None),
                ("GET", f"/api/v1/recordings/{rec}/audio", None),
                ("GET", f"/api/v1/recordings/{rec}/download", None),
                ("POST", "/api/v1/recordings/bulk-download", {"ids": [rec]}),
                ("GET", "/api/v1/live", None),
                ("GET", "/api/v1/live/events", None),
                ("GET", "/api/v1/tokens", None),
                ("POST", "/api/v1/tokens", {"name": "x", "password": "one-time-pw-1"}),
                ("POST", "/api/v1/tokens", {"name": "x", "expires_in_days": 1}),
            ]:
                r = await c.request(method, url, json=body, headers=headers)
                assert r.status_code == 403, (method, url)
                assert "one-time password" in r.json()["detail"]
                assert "/account" in r.json()["detail"]
            assert (await c.get("/api/v1/me")).json()["must_change_password"] is True
        # Pages lead to the account page; its token form is not reachable either.
        for url in ("/recordings", f"/recordings/{rec}", "/live"):
            r = await client.get(url)
            assert r.status_code == 303 and r.headers["location"] == "/account"
        r = await client.post("/account/tokens", data={"csrf": csrf, "name": "x", "days": "1"})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        assert [t.name for t in site.catalog.list_tokens(user.id)] == ["test"]

        # The new password: every token goes, and every other session.
        r = await client.post(
            "/account/password",
            data={
                "csrf": csrf,
                "current": "one-time-pw-1",
                "new": "my-own-password",
                "confirm": "my-own-password",
            },
        )
        assert r.status_code == 303
        assert (await script.get("/api/v1/me")).status_code == 401
        assert (await other.get("/api/v1/me")).status_code == 401
        assert (await client.get("/api/v1/recordings")).status_code == 200
        assert site.catalog.list_tokens(user.id) == []
    entry = site.catalog.audit_entries(action="password_change", username="fresh", limit=1)[0]
    token_id = entry.detail["tokens_revoked"][0]
    assert entry.detail == {
        "target": "fresh",
        "tokens_revoked": [token_id],
        "sessions_ended": 1,
    }


async def test_a_one_time_admin_cannot_administer(site: Site) -> None:
    add_user(site, "newboss", password="one-time-pw-2", role="admin", must_change=True)
    async with signed_in(site, "newboss", "one-time-pw-2") as client:
        csrf = await csrf_of(client)
        for url in ("/admin/users", "/admin/audit"):
            r = await client.get(url)
            assert r.status_code == 303 and r.headers["location"] == "/account"
        r = await client.post("/admin/users", data={"csrf": csrf, "username": "sneaky"})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        r = await client.get("/api/v1/users")
        assert r.status_code == 403
    assert site.catalog.get_user_by_name("sneaky") is None


@pytest.mark.parametrize("how", ["page reset", "api password"])
async def test_an_admin_reset_revokes_the_users_tokens_and_sessions(site: Site, how: str) -> None:
    name = "victim1" if how == "page reset" else "victim2"
    user = add_user(site, name, password="victim-password")
    token = add_token(site, user)
    async with (
        site.client("admin") as admin,
        signed_in(site, name, "victim-password") as session,
        bearer(site, token) as script,
    ):
        assert (await script.get("/api/v1/recordings")).status_code == 200
        if how == "page reset":
            r = await admin.post(f"/admin/users/{user.id}/password")
            assert r.status_code == 303
        else:
            r = await admin.patch(f"/api/v1/users/{user.id}", json={"password": "chosen-by-admin"})
            assert r.status_code == 200
        assert (await script.get("/api/v1/recordings")).status_code == 401
        assert (await session.get("/api/v1/me")).status_code == 401
        log = (await admin.get("/api/v1/audit", params={"action": "user_update"})).json()
    entry = next(e for e in log if e["detail"].get("target") == name)
    assert entry["detail"]["password_changed"] is True
    assert len(entry["detail"]["tokens_revoked"]) == 1 and entry["detail"]["sessions_ended"] == 1


# -- 3. a token never outlives the token that made it --------------------------------------


async def test_a_token_cannot_outlive_the_token_that_mints_it(site: Site) -> None:
    user = add_user(site, "minter")
    parent_expiry = datetime.now(UTC) + timedelta(days=2)
    short = add_token(site, user, expires_at=parent_expiry)
    forever = add_token(site, user)
    async with bearer(site, short) as c:
        for body in ({"expires_in_days": 30}, {}):
            r = await c.post("/api/v1/tokens", json={"name": "child", **body})
            assert r.status_code == 201, r.text
            child = datetime.fromisoformat(r.json()["expires_at"])
            assert abs(child - parent_expiry) < timedelta(seconds=1)
        r = await c.post("/api/v1/tokens", json={"name": "short child", "expires_in_days": 1})
        child = datetime.fromisoformat(r.json()["expires_at"])
        assert child < parent_expiry - timedelta(hours=23)
    async with bearer(site, forever) as c:
        r = await c.post("/api/v1/tokens", json={"name": "eternal"})
        assert r.status_code == 403 and "never expires" in r.json()["detail"]
        # Not even with the password: only a browser session (or the CLI) makes one.
        r = await c.post("/api/v1/tokens", json={"password": "password-of-a-test"})
        assert r.status_code == 403
        r = await c.post("/api/v1/tokens", json={"name": "weekly", "expires_in_days": 7})
        assert r.status_code == 201 and r.json()["expires_at"] is not None
    created = site.catalog.audit_entries(action="token_create", username="minter", limit=10)
    assert [e.detail["capped_by"] for e in created][-2:] == ["minting_token", "minting_token"]
    assert all(t.expires_at is not None for t in site.catalog.list_tokens(user.id)[2:])


async def test_a_token_that_never_expires_needs_the_password_again(site: Site) -> None:
    add_user(site, "keeper", password="keeper-password")
    async with signed_in(site, "keeper", "keeper-password") as client:
        csrf = await csrf_of(client)
        headers = {"x-csrf-token": csrf}
        r = await client.post("/api/v1/tokens", json={"name": "cron"}, headers=headers)
        assert r.status_code == 403 and "needs your password" in r.json()["detail"]
        r = await client.post(
            "/api/v1/tokens", json={"name": "cron", "password": "wrong-password"}, headers=headers
        )
        assert r.status_code == 403 and "wrong password" in r.json()["detail"]
        r = await client.post(
            "/api/v1/tokens", json={"name": "cron", "password": "keeper-password"}, headers=headers
        )
        assert r.status_code == 201 and r.json()["expires_at"] is None
        # The account page's form: the same rule, the reason shown on the page.
        page = await client.post("/account/tokens", data={"csrf": csrf, "name": "nightly"})
        assert page.status_code == 403 and "needs your password" in page.text
        page = await client.post(
            "/account/tokens",
            data={"csrf": csrf, "name": "nightly", "password": "keeper-password"},
        )
        assert page.status_code == 303
        page = await client.get(page.headers["location"])
        assert page.status_code == 200 and 'id="new-token"' in page.text
        # A maximum lifetime, when set, caps every token.
        context = ctx(site)
        saved = context.settings
        context.settings = dataclasses.replace(saved, web_token_max_days=30)
        try:
            r = await client.post(
                "/api/v1/tokens",
                json={"name": "capped", "password": "keeper-password"},
                headers=headers,
            )
            expires = datetime.fromisoformat(r.json()["expires_at"])
            assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
            r = await client.post(
                "/api/v1/tokens", json={"name": "long", "expires_in_days": 90}, headers=headers
            )
            expires = datetime.fromisoformat(r.json()["expires_at"])
            assert expires - datetime.now(UTC) <= timedelta(days=30)
        finally:
            context.settings = saved


# -- 4. the sign-in throttle ---------------------------------------------------------------


@pytest.fixture
def fresh_throttle(site: Site) -> Iterator[LoginThrottle]:
    context = ctx(site)
    saved = context.throttle
    context.throttle = LoginThrottle()
    try:
        yield context.throttle
    finally:
        context.throttle = saved


async def test_made_up_names_do_not_lock_out_real_users(
    site: Site, fresh_throttle: LoginThrottle
) -> None:
    lisa, lisa_password = USERS["listener"][:2]
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        for i in range(10):
            r = await try_sign_in(client, f"nobody{i}", "guess")
            assert r.status_code == 401
        r = await try_sign_in(client, lisa, lisa_password)
        assert r.status_code == 303
        client.cookies.clear()
        # Past the address's (much higher) ceiling, failures answer 429 with Retry-After,
        # whether the name exists or not; a right password still signs in.
        fresh_throttle.address_limit = 12
        for i in range(10, 12):
            r = await try_sign_in(client, f"nobody{i}", "guess")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        r = await try_sign_in(client, "ext3002", "not-the-password")
        assert r.status_code == 429 and "retry-after" in r.headers
        r = await try_sign_in(client, lisa, lisa_password)
        assert r.status_code == 303
    entry = site.catalog.audit_entries(action="sign_in_failed", username="ext3002", limit=1)[0]
    assert entry.detail == {"reason": "wrong password", "address_throttled": True}


async def test_wrong_passwords_throttle_that_user_only(
    site: Site, fresh_throttle: LoginThrottle
) -> None:
    lisa, lisa_password = USERS["listener"][:2]
    ext, ext_password = USERS["ext3002"][:2]
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        for _ in range(10):
            assert (await try_sign_in(client, lisa, "wrong-password")).status_code == 401
        for password in ("wrong-password", lisa_password):  # even the right one, for now
            r = await try_sign_in(client, lisa, password)
            assert r.status_code == 429
            assert 1 <= int(r.headers["retry-after"]) <= 300
            assert "try again in" in r.text
        r = await try_sign_in(client, ext, ext_password)
        assert r.status_code == 303
    failures = site.catalog.audit_entries(action="sign_in_failed", username=lisa, limit=2)
    assert [f.detail["reason"] for f in failures] == ["throttled", "throttled"]


# -- 5. denied attempts --------------------------------------------------------------------


async def test_a_restricted_user_asking_outside_the_restriction_is_audited(site: Site) -> None:
    alice, bob = site.recs["alice"], site.recs["bob"]
    async with site.client("ext3002") as c:
        for method, url, asked in [
            ("GET", f"/api/v1/recordings/{alice}", "metadata"),
            ("GET", f"/api/v1/recordings/{alice}/audio", "play"),
            ("GET", f"/api/v1/recordings/{alice}/download?format=wav", "download"),
            ("GET", f"/api/v1/recordings/{alice}/peaks", "peaks"),
            ("GET", f"/api/v1/recordings/{alice}/notes", "notes"),
            ("POST", f"/api/v1/recordings/{alice}/notes", "note_add"),
            ("PUT", f"/api/v1/recordings/{alice}/tags/mine", "tag_add"),
            ("GET", f"/recordings/{alice}", "page"),
        ]:
            json_body = {"text": "x"} if method == "POST" else None
            r = await c.request(method, url, json=json_body)
            assert r.status_code == 404, url
            entry = site.catalog.audit_entries(action="denied", limit=1)[0]
            assert entry.username == "ext3002" and entry.recording_id == alice
            assert entry.detail == {"asked": asked}, url
        before = len(site.catalog.audit_entries(action="denied", limit=100))
        # A recording that does not exist is nothing to deny.
        assert (await c.get("/api/v1/recordings/999999")).status_code == 404
        assert len(site.catalog.audit_entries(action="denied", limit=100)) == before
        r = await c.post("/api/v1/recordings/bulk-download", json={"ids": [alice, bob, 999999]})
        assert r.status_code == 200
    entry = site.catalog.audit_entries(action="denied", limit=1)[0]
    assert entry.detail == {"asked": "zip", "recordings": [alice]}
    # Unrestricted users are never "denied".
    async with site.client("listener") as c:
        assert (await c.get("/api/v1/recordings/999999")).status_code == 404
    assert len(site.catalog.audit_entries(action="denied", limit=100)) == before + 1


# -- 7. uploads with no audio --------------------------------------------------------------


async def test_a_header_only_upload_is_refused_and_leaves_nothing(site: Site) -> None:
    data = bytearray((LOCALFILE_DATA / "g722-bare.wav").read_bytes()[:76])
    data[72:76] = b"\0\0\0\0"  # dataSize 0: a phone that stopped at once
    assert len(data) == 76
    root = site.server.root
    files_before = sorted(p for p in root.rglob("*") if p.is_file())
    count_before = site.catalog.count()
    async with site.client("admin") as c:
        r = await c.post(
            "/api/v1/recordings/import",
            files={"file": ("Record_20261126161130.wav", bytes(data), "audio/wav")},
        )
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "Record_20261126161130.wav: no audio: the file holds a header and no whole unit of audio"
    )
    assert site.catalog.count() == count_before
    assert sorted(p for p in root.rglob("*") if p.is_file()) == files_before


# -- 8. restriction inputs -----------------------------------------------------------------


async def test_bad_restrictions_are_refused_naming_the_entries(site: Site) -> None:
    async with site.client("admin") as c:
        r = await c.post(
            "/api/v1/users",
            json={"username": "restricted1", "password": "password-123", "extensions": ["abc;"]},
        )
        assert r.status_code == 400
        assert r.json()["detail"].startswith("extensions: 'abc;' is not an extension")
        assert site.catalog.get_user_by_name("restricted1") is None
        r = await c.post(
            "/api/v1/users",
            json={
                "username": "restricted1",
                "password": "password-123",
                "extensions": ["+49301234", "3001"],
                "devices": ["0C:38:3E:0E:70:9A"],
            },
        )
        assert r.status_code == 201
        user = r.json()
        assert user["extensions"] == ["+49301234", "3001"]
        assert user["devices"] == ["0c383e0e709a"]
        r = await c.patch(
            f"/api/v1/users/{user['id']}", json={"extensions": ["30 01", "x", "3002"]}
        )
        assert r.status_code == 400
        assert "'30 01', 'x' are not extensions" in r.json()["detail"]
        r = await c.patch(f"/api/v1/users/{user['id']}", json={"devices": ["phone-1"]})
        assert r.status_code == 400 and "'phone-1' is not a MAC" in r.json()["detail"]
        # The users page: the form's text, split at spaces and commas.
        r = await c.post(
            f"/admin/users/{user['id']}", data={"role": "listener", "extensions": "30 01, abc;"}
        )
        assert r.status_code == 400
        assert "extensions: &#39;abc;&#39; is not an extension" in r.text
        r = await c.post("/admin/users", data={"username": "restricted2", "devices": "xyz"})
        assert r.status_code == 400 and "is not a MAC" in r.text
    stored = site.catalog.get_user_by_name("restricted1")
    assert stored is not None and stored.extensions == ("+49301234", "3001")
    assert site.catalog.get_user_by_name("restricted2") is None
