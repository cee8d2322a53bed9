"""Listening live over a real WebSocket to calls the phone simulator is streaming: the PCM
heard is the recording's, byte for byte; who may listen; a stalled listener loses its own
frames only; a revoked sign-in is cut off; every listening session is audited."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callrec.catalog import Catalog
from callrec.codecs import get_codec
from callrec.media.wav import HEADER_SIZE
from callrec.service.workers import port_slices
from callrec.sim.phone import PhoneCall, build_packets
from callrec.web.security import hash_password, new_api_token
from tests.support.audio import speech_like_signal
from tests.support.listening import (
    Heard,
    LiveCall,
    hear,
    listening,
    metric,
    sign_in_cookie,
)
from tests.support.net import free_tcp_port
from tests.support.serve import start_serve_workers, terminate
from tests.support.waiting import wait_for
from tests.support.web import USERS, Site, start_site, stop_site

pytestmark = pytest.mark.asyncio(loop_scope="module")


def wav_data(site: Site, rec_id: int) -> bytes:
    rec = site.catalog.get(rec_id)
    assert rec is not None
    return (site.server.root / rec.path).read_bytes()[HEADER_SIZE:]


def new_user(site: Site, name: str, **kw: list[str]) -> tuple[int, str, int]:
    """A listener with an API token: (user id, token, token id)."""
    user = site.catalog.create_user(
        name, password_hash=hash_password("pw-" + name), role="listener", **kw
    )
    token, token_hash, prefix = new_api_token()
    made = site.catalog.create_token(user.id, name="ws", token_hash=token_hash, prefix=prefix)
    return user.id, token, made.id


@pytest.mark.parametrize(("codec", "rate"), [("PCMA", 8000), ("G722", 16000)])
async def test_listener_hears_the_recording_byte_for_byte(
    site: Site, codec: str, rate: int
) -> None:
    sent_before = await metric(site, "callrec_listen_frames_sent_total")
    dropped_before = await metric(site, "callrec_listen_dropped_frames_total")
    call = LiveCall(site, session_id=f"7100{rate}", seconds=3.0, codec=codec)
    live = await call.start(realtime=True)
    try:
        async with listening(site, live.uid, token=site.tokens["admin"]) as ws:
            reading = asyncio.create_task(hear(ws, Heard()))
            rec_id = await call.finish()
            heard = await asyncio.wait_for(reading, 10)
    finally:
        await call.abort()
    assert heard.start["format"] == "s16le"
    assert heard.start["sample_rate"] == rate and heard.start["channels"] == 1
    assert heard.start["uid"] == live.uid
    assert heard.ended
    first, pcm = heard.contiguous()
    data = wav_data(site, rec_id)
    # Found by matching, the span heard is where the server said, and it runs to the end.
    assert data.find(pcm[: rate // 5 * 2]) == first * 2
    assert pcm == data[first * 2 :]
    assert len(pcm) >= rate * 2  # at least a second heard (most of the 3 s call)
    row = site.catalog.get(rec_id)
    assert row is not None and row.packets_lost == 0
    entries = site.catalog.audit_entries(recording_id=rec_id, limit=50)
    listened = [e for e in entries if e.action == "listen_live"]
    assert len(listened) == 1
    assert listened[0].username == "admin" and listened[0].detail["uid"] == live.uid
    assert await metric(site, "callrec_listen_frames_sent_total") > sent_before
    assert await metric(site, "callrec_listen_dropped_frames_total") == dropped_before
    assert await metric(site, "callrec_listeners") == 0


async def test_who_may_listen(site: Site) -> None:
    call = LiveCall(site, session_id="71010", seconds=30.0, local_number="3001")
    mine = LiveCall(site, session_id="71011", seconds=30.0, local_number="3002")
    # A one-time password opens nothing but the account page: not a call either (4401).
    first_time = site.catalog.create_user(
        "firsttime",
        password_hash=hash_password("one-time-pw"),
        role="admin",
        must_change_password=True,
    )
    otp_token, token_hash, prefix = new_api_token()
    site.catalog.create_token(first_time.id, name="t", token_hash=token_hash, prefix=prefix)
    live = await call.start(realtime=True)
    own = await mine.start(realtime=True)
    try:
        # No sign-in: 4401; not in the user's scope, or no such call: 4404 (as recordings).
        for token, uid, code in [
            (None, live.uid, 4401),
            ("not-a-token", live.uid, 4401),
            (otp_token, live.uid, 4401),
            (site.tokens["ext3002"], live.uid, 4404),
            (site.tokens["devC"], live.uid, 4404),
            (site.tokens["admin"], "0" * 32, 4404),
            (site.tokens["admin"], "not-a-uid", 4404),
        ]:
            async with listening(site, uid, token=token) as ws:
                assert await asyncio.wait_for(_closed_with(ws), 10) == code, (token, uid)
        # One user listens to at most web_listen_max_per_user calls at once (4429 beyond).
        ctx = site.web.app.state.ctx
        saved = ctx.settings
        ctx.settings = dataclasses.replace(saved, web_listen_max_per_user=2)
        try:
            async with (
                listening(site, live.uid, token=site.tokens["admin"]) as one,
                listening(site, own.uid, token=site.tokens["admin"]) as two,
            ):
                await asyncio.wait_for(_first_pcm(one), 10)
                await asyncio.wait_for(_first_pcm(two), 10)
                async with listening(site, live.uid, token=site.tokens["admin"]) as three:
                    assert await asyncio.wait_for(_closed_with(three), 10) == 4429
                # Another user is not counted against this one.
                async with listening(site, own.uid, token=site.tokens["ext3002"]) as other:
                    assert (await asyncio.wait_for(_first_pcm(other), 10)).spans
        finally:
            ctx.settings = saved
        # The restricted user hears its own line.
        async with listening(site, own.uid, token=site.tokens["ext3002"]) as ws:
            heard = await asyncio.wait_for(_first_pcm(ws), 10)
            assert heard.start["uid"] == own.uid
        # A browser session: only from a page of this server (cross-site WebSocket hijacking).
        name, password, *_ = USERS["listener"]
        cookie = await sign_in_cookie(site, name, password)
        for origin in (None, "http://evil.example", site.base.replace("127.0.0.1", "localhost")):
            with pytest.raises(InvalidStatus) as refused:
                async with listening(site, live.uid, cookie=cookie, origin=origin):
                    pass
            assert refused.value.response.status_code == 403, origin
        async with listening(site, live.uid, cookie=cookie, origin=site.base) as ws:
            heard = await asyncio.wait_for(_first_pcm(ws), 10)
            assert heard.spans
    finally:
        await call.abort()
        await mine.abort()


async def _first_pcm(ws: object) -> Heard:
    heard = Heard()
    async for message in ws:  # type: ignore[attr-defined]
        if isinstance(message, str):
            event = json.loads(message)
            heard.events.append(event)
            if event["event"] == "start":
                heard.start = event
        else:
            heard.spans.append((0, message))
            return heard
    raise AssertionError("closed before any audio")


async def _closed_with(ws: object) -> int:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:  # type: ignore[attr-defined]
            pass
    code: int = ws.close_code  # type: ignore[attr-defined]
    return code


async def test_revoked_token_deleted_user_and_lost_scope_end_listening(site: Site) -> None:
    call = LiveCall(site, session_id="71020", seconds=60.0, local_number="3001")
    live = await call.start(realtime=True)
    try:
        # The token revoked (by its owner, over the API): closed with 4401.
        _, token, token_id = new_user(site, "ws-revoked")
        async with listening(site, live.uid, token=token) as ws:
            await asyncio.wait_for(_first_pcm(ws), 10)
            async with site.client() as anyone:
                r = await anyone.delete(
                    f"/api/v1/tokens/{token_id}", headers={"authorization": f"Bearer {token}"}
                )
                assert r.status_code == 204
            assert await asyncio.wait_for(_closed_with(ws), 10) == 4401
        # The user deleted by an admin: 4401.
        user_id, token, _ = new_user(site, "ws-deleted")
        async with listening(site, live.uid, token=token) as ws:
            await asyncio.wait_for(_first_pcm(ws), 10)
            async with site.client("admin") as admin:
                assert (await admin.delete(f"/api/v1/users/{user_id}")).status_code == 204
            assert await asyncio.wait_for(_closed_with(ws), 10) == 4401
        # Restricted to another line while listening: 4403.
        user_id, token, _ = new_user(site, "ws-narrowed", extensions=["3001"])
        async with listening(site, live.uid, token=token) as ws:
            await asyncio.wait_for(_first_pcm(ws), 10)
            async with site.client("admin") as admin:
                r = await admin.patch(f"/api/v1/users/{user_id}", json={"extensions": ["3009"]})
                assert r.status_code == 200, r.text
            assert await asyncio.wait_for(_closed_with(ws), 10) == 4403
    finally:
        await call.abort()


async def test_a_stalled_listener_loses_its_own_frames_only(site: Site) -> None:
    """A client that stops reading: the server drops its oldest frames (counted for it and
    in /metrics), another listener of the same call hears everything, and the recording is
    byte for byte the one an unheard call of the same packets gets, with no loss."""
    dropped_before = await metric(site, "callrec_listen_dropped_frames_total")
    stalled = LiveCall(site, session_id="71030", seconds=40.0, local_number="3001")
    live = await stalled.start(send=False)
    try:
        async with (
            listening(site, live.uid, token=site.tokens["admin"]) as stuck,
            listening(site, live.uid, token=site.tokens["listener"]) as keeping_up,
        ):
            reading = asyncio.create_task(hear(keeping_up, Heard()))
            # Four times faster than real time: each tick still brings less than a
            # listener's queue holds.
            stalled.send(realtime=True, packet_ms=5)
            # The stalled client takes (and acknowledges) its first frame, then nothing.
            first_frame = await asyncio.wait_for(hear(stuck, Heard(), frames=1), 10)
            assert first_frame.spans[0][0] == 0
            rec_id = await stalled.finish()
            heard = await asyncio.wait_for(reading, 15)
            async with site.client("admin") as admin:
                rows = (await admin.get("/api/v1/live/listeners")).json()
            by_user = {r["username"]: r for r in rows if r["uid"] == live.uid}
            # 40 s of audio (400 frames of 0.1 s, and a few shorter ones where a tick's
            # audio ends): sent (its 1 s window past what it acknowledged, and what went
            # before its first acknowledgement), queued (2 s at most), or dropped.
            stuck_row = by_user["admin"]
            sent, queued = stuck_row["frames_sent"], stuck_row["frames_queued"]
            assert sent <= 20 and queued <= 20
            assert stuck_row["frames_dropped"] >= 400 - sent - queued
            assert await metric(site, "callrec_listen_dropped_frames_total") > dropped_before
            assert heard.ended
    finally:
        await stalled.abort()
    first, pcm = heard.contiguous()
    assert first == 0 and pcm == wav_data(site, rec_id)  # the other listener lost nothing
    # The same packets, nobody listening.
    quiet = LiveCall(site, session_id="71031", seconds=40.0, local_number="3001")
    quiet.call.ssrc = stalled.call.ssrc
    quiet.packets = stalled.packets
    await quiet.start(send=False)
    quiet.send(realtime=False)
    quiet_id = await quiet.finish()
    assert wav_data(site, rec_id) == wav_data(site, quiet_id)
    for row_id in (rec_id, quiet_id):
        row = site.catalog.get(row_id)
        assert row is not None and row.packets_lost == 0 and row.packets_late == 0
        assert row.packets_received == len(stalled.packets)
    await wait_for(
        lambda: not site.web.app.state.ctx.listen.listeners(),
        what="the stalled listener to be let go",
        timeout=20,
    )


async def test_listening_to_a_call_a_media_worker_records(tmp_path: Path) -> None:
    """With `serve --workers 2` the web (main process) has no access to a worker's engine:
    it hears the worker's call from the file, byte for byte."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(url)
    catalog.migrate()
    user = catalog.create_user("boss", password_hash=hash_password("boss-password"), role="admin")
    token, token_hash, prefix = new_api_token()
    catalog.create_token(user.id, name="ws", token_hash=token_hash, prefix=prefix)
    catalog.close()
    port, web_port = free_tcp_port(), free_tcp_port()
    low = random.randrange(30000, 60000, 100)
    proc = start_serve_workers(
        tmp_path,
        port,
        2,
        media_port_min=low,
        media_port_max=low + 39,
        sync_interval=0.1,
        web_enabled=True,
        web_host="127.0.0.1",
        web_port=web_port,
    )
    base = f"http://127.0.0.1:{web_port}"
    _, (w_low, w_high) = port_slices(low, low + 39, 2)
    codec = get_codec("PCMA")
    calls: list[PhoneCall] = []
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=30
        ) as api:
            # Calls until one is the worker's (the kernel spreads connections).
            while True:
                call = PhoneCall("127.0.0.1", port, session_id=f"7200{len(calls)}", codec="PCMA")
                calls.append(call)
                assert (await call.start())["result"] == "success"
                assert call.media_port is not None
                if w_low <= call.media_port <= w_high:
                    break
                assert len(calls) < 20, "no call reached the media worker"

            async def uid_of_call() -> str | None:
                for s in (await api.get("/api/v1/live")).json():
                    if s["session_id"] == call.session_id:
                        return str(s["uid"])
                return None

            uid = None
            for _ in range(100):
                if uid := await uid_of_call():
                    break
                await asyncio.sleep(0.05)
            assert uid is not None
            packets = build_packets(speech_like_signal(3.0, 8000), codec, ssrc=call.ssrc)
            async with listening(base, uid, token=token) as ws:
                reading = asyncio.create_task(hear(ws, Heard()))
                await call.send_packets(packets, realtime=True)
                await asyncio.sleep(0.5)  # the last packets counted before the stop
                assert (await call.stop("hangup"))["result"] == "success"
                heard = await asyncio.wait_for(reading, 15)
            row = None
            for _ in range(200):
                items = (await api.get("/api/v1/recordings", params={"q": ""})).json()["items"]
                row = next((r for r in items if r["session_id"] == call.session_id), None)
                if row is not None and row["status"] == "complete":
                    break
                await asyncio.sleep(0.05)
            assert row is not None and row["status"] == "complete"
            entries = (await api.get("/api/v1/audit", params={"action": "listen_live"})).json()
            assert [e["recording_id"] for e in entries] == [row["id"]]
    finally:
        for c in calls:
            with contextlib.suppress(Exception):
                await c.stop("hangup")
            await c.close()
        terminate(proc, 40)
    assert heard.ended
    first, pcm = heard.contiguous()
    data = (tmp_path / "recordings" / row["path"]).read_bytes()[HEADER_SIZE:]
    assert pcm == data[first * 2 :] and len(pcm) >= 8000 * 2
    assert row["counters"]["lost"] == 0


async def test_a_server_stopping_closes_its_listeners(tmp_path: Path) -> None:
    own = await start_site(tmp_path)
    call = LiveCall(own, session_id="71040", seconds=30.0)
    try:
        live = await call.start(realtime=True)
        async with listening(own, live.uid, token=own.tokens["admin"]) as ws:
            await asyncio.wait_for(_first_pcm(ws), 10)
            await asyncio.wait_for(stop_site(own), 30)  # the call still going
            assert await asyncio.wait_for(_closed_with(ws), 10) == 1012
    finally:
        await call.abort()
        await stop_site(own)
    assert own.web.app.state.ctx.listen.listeners() == []
