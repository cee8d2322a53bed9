"""Listening live: a WebSocket of PCM from a call being recorded, and who is listening.

``GET /api/v1/live/{uid}/listen`` (a WebSocket upgrade) with an API token
(``Authorization: Bearer``) or the browser's session cookie. A session must come from a page
of this server (its ``Origin`` is this host), else the upgrade is refused (HTTP 403): a
browser sends the cookie with a WebSocket opened by any site, and no CSRF token travels with
the upgrade. Other refusals close the accepted socket with a code a page can read: 4401 (no
valid sign-in), 4404 (no such call being recorded, or not one the caller may see: as for
recordings, a restricted user does not learn which exist), 1011 (the catalogue cannot check
the sign-in or take the audit entry).

Then: a JSON text message ``{"event": "start", "format": "s16le", "sample_rate",
"channels", ...}``, binary messages of interleaved PCM, each run of them announced by
``{"event": "position", "position": <sample frames from the call's start>, "dropped": n}``
(at the start, and after frames this listener lost by falling behind), and
``{"event": "ended"}`` once the recording has finished. A client that says how much it has
received (text ``{"received": <sample frames in all>}``, as the browser's player does with
every frame) is kept within :data:`~callrec.web.listen.WINDOW_SECONDS` of it: when it falls
behind, its oldest frames are dropped and it skips to the newest audio.

The viewer is checked again every :data:`RECHECK_SECONDS`: a revoked token, an ended
session or a deleted user closes with 4401, a call no longer in the user's scope with 4403.
Each listening session is audited once, as ``listen_live``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, WebSocket
from pydantic import BaseModel, Field

from callrec.catalog import Scope
from callrec.engine import LiveSession
from callrec.exceptions import CatalogError
from callrec.web.api import Admin, bearer
from callrec.web.auth import (
    Principal,
    WebContext,
    audit,
    client_address,
    ctx_of,
    optional_principal,
    revalidate,
)
from callrec.web.listen import Listener, ListenError

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

#: Seconds between two checks that the viewer may still listen.
RECHECK_SECONDS: Final = 1.0
#: Seconds a listener that stopped reading may keep its socket after the call ended.
END_GRACE: Final = 5.0
#: Seconds a closing handshake may take before the connection is dropped.
CLOSE_SECONDS: Final = 2.0
#: WebSocket close codes: the private range (4000-4999) as the HTTP status + 4000, and
#: RFC 6455's own.
SIGNED_OUT: Final = 4401
OUT_OF_SCOPE: Final = 4403
NOT_FOUND: Final = 4404
TOO_MANY: Final = 4429
GOING_AWAY: Final = 1001
POLICY_VIOLATION: Final = 1008
UNAVAILABLE: Final = 1011
SERVICE_RESTART: Final = 1012
UID = re.compile(r"[0-9a-f]{32}")


class ListenerOut(BaseModel):
    username: str
    client_address: str
    uid: str = Field(description="The recording's engine uid (as in `GET /live`).")
    recording_id: int | None
    started_at: datetime
    frames_sent: int = Field(description="Frames of audio sent to this listener.")
    frames_dropped: int = Field(description="Frames this listener lost by not keeping up.")
    frames_queued: int


@router.get(
    "/live/listeners",
    response_model=list[ListenerOut],
    tags=["live"],
    dependencies=[Depends(bearer)],
)
async def live_listeners(request: Request, principal: Admin) -> list[dict[str, object]]:
    """Who listens to which call now, with each listener's counters (admin)."""
    return [
        {
            "username": listener.username,
            "client_address": listener.client,
            "uid": listener.uid,
            "recording_id": listener.rec_id,
            "started_at": listener.started_at,
            "frames_sent": listener.sent,
            "frames_dropped": listener.dropped,
            "frames_queued": listener.queued,
        }
        for listener in ctx_of(request).listen.listeners()
    ]


@router.websocket("/live/{uid}/listen")
async def listen(websocket: WebSocket, uid: str) -> None:
    ctx = ctx_of(websocket)
    try:
        principal = await optional_principal(websocket)
    except CatalogError:
        await websocket.accept()
        await websocket.close(UNAVAILABLE, "cannot check the sign-in now (catalogue)")
        return
    if principal is not None and principal.via == "session" and not same_origin(websocket, ctx):
        # Refused before the upgrade (HTTP 403): another site's page learns nothing.
        await websocket.close(POLICY_VIOLATION)
        return
    # Refusals after the upgrade, so that a browser's page can read why (close code and
    # reason; a refused upgrade is only "error" to it).
    await websocket.accept()
    if principal is None:
        await websocket.close(SIGNED_OUT, "sign in, or send an API token")
        return
    if principal.user.must_change_password:
        # A one-time password opens nothing but the account page (auth.FIRST_STEPS).
        # (A close reason holds at most 123 bytes.)
        await websocket.close(SIGNED_OUT, "choose your own password on /account first")
        return
    live = _visible(ctx, uid, principal.scope) if UID.fullmatch(uid) else None
    if live is None:
        await websocket.close(NOT_FOUND, "no such call is being recorded")
        return
    if live.remote:
        # Another node writes its file (docs/scaling.md): listen on that node's web UI.
        await websocket.close(NOT_FOUND, _reason(f"the call is recorded on node {live.node}"))
        return
    mine = sum(1 for other in ctx.listen.listeners() if other.username == principal.user.username)
    if mine >= ctx.settings.web_listen_max_per_user:
        await websocket.close(
            TOO_MANY, f"already listening to {mine} calls (web_listen_max_per_user)"
        )
        return
    try:
        listener = await ctx.listen.attach(
            live, username=principal.user.username, client=client_address(websocket)
        )
    except ListenError as exc:
        await websocket.close(NOT_FOUND, _reason(str(exc)))
        return
    rec_id = live.rec_id
    if rec_id is None:  # the journal has not told this process yet (a worker's call)
        with contextlib.suppress(CatalogError):
            row = await ctx.db(ctx.catalog.get_uid, live.uid)
            rec_id = row.id if row is not None else None
    try:
        try:
            await audit(
                websocket,
                "listen_live",
                principal,
                recording_id=rec_id,
                uid=live.uid,
                session_id=live.session_id,
                local_number=live.local_number,
                remote_number=live.remote_number,
            )
        except CatalogError:
            await websocket.close(UNAVAILABLE, "cannot write the audit log now")
            return
        await _serve(websocket, ctx, listener, principal, live)
    finally:
        listener.close()


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes (RFC 6455 5.5: control frames carry at most 125)."""
    return text.encode()[:123].decode(errors="ignore")


def same_origin(websocket: WebSocket, ctx: WebContext) -> bool:
    """The upgrade comes from a page of this server (its Origin names this host)."""
    origin = websocket.headers.get("origin", "")
    hosts = {websocket.headers.get("host", "").lower()}
    if ctx.settings.web_trust_proxy and (forwarded := websocket.headers.get("x-forwarded-host")):
        hosts.add(forwarded.split(",")[0].strip().lower())
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() in hosts - {""}


def _visible(ctx: WebContext, uid: str, scope: Scope | None) -> LiveSession | None:
    return next((s for s in ctx.live.sessions(scope) if s.uid == uid), None)


async def _serve(
    websocket: WebSocket,
    ctx: WebContext,
    listener: Listener,
    principal: Principal,
    live: LiveSession,
) -> None:
    fmt = listener.format
    await websocket.send_json(
        {
            "event": "start",
            "format": "s16le",
            "sample_rate": fmt.sample_rate,
            "channels": fmt.channels,
            "uid": live.uid,
            "recording_id": live.rec_id,
            "codec": live.codec,
            "local_number": live.local_number,
            "local_name": live.local_name,
            "remote_number": live.remote_number,
            "remote_name": live.remote_name,
        }
    )
    sender = asyncio.create_task(_send(websocket, listener))
    receiver = asyncio.create_task(_receive(websocket, listener))
    watcher = asyncio.create_task(_watch(websocket, ctx, listener, principal))
    tasks = (sender, receiver, watcher)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):  # the client went away mid-send, mostly
            logger.debug("listener of %s: %r", live.uid, result)
    if isinstance(code := results[2], tuple):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(*code), CLOSE_SECONDS)


async def _send(websocket: WebSocket, listener: Listener) -> None:
    block = listener.format.block_align
    expected = -1
    while (frame := await listener.get()) is not None:
        if frame.position != expected:
            await websocket.send_json(
                {"event": "position", "position": frame.position, "dropped": listener.dropped}
            )
        await websocket.send_bytes(frame.pcm)
        expected = frame.position + len(frame.pcm) // block
    if listener.stopping:
        await websocket.close(SERVICE_RESTART, "the server is stopping")
        return
    await websocket.send_json({"event": "ended", "dropped": listener.dropped})
    await websocket.close(1000)


async def _receive(websocket: WebSocket, listener: Listener) -> None:
    """The client's acknowledgements (``{"received": <sample frames>}``), until it goes."""
    while (message := await websocket.receive())["type"] != "websocket.disconnect":
        text = message.get("text")
        if not text or len(text) > 200:
            continue
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            received = json.loads(text).get("received")
            if isinstance(received, int) and not isinstance(received, bool):
                listener.acknowledge(received)


async def _watch(
    websocket: WebSocket, ctx: WebContext, listener: Listener, principal: Principal
) -> tuple[int, str]:
    """Every second: is the viewer still signed in (token, session, user) and the call still
    in its scope? Returns the close code and reason when not. A catalogue that cannot answer
    keeps the listener (revoking needs the catalogue too)."""
    ended_at: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        try:
            # As the live feed does: no touch, so listening does not extend a session.
            fresh = await revalidate(ctx, principal)
        except CatalogError:
            continue
        if fresh is None or fresh.user.id != principal.user.id:
            return SIGNED_OUT, "sign-in no longer valid"
        if _visible(ctx, listener.uid, fresh.scope) is None:
            if _visible(ctx, listener.uid, None) is not None:
                return OUT_OF_SCOPE, "this call is no longer yours to hear"
            ctx.listen.finish(listener.uid)  # ended without us being told (a worker died)
        if listener.ended:
            ended_at = ended_at if ended_at is not None else loop.time()
            if loop.time() - ended_at > END_GRACE:
                return GOING_AWAY, "the call has ended"
