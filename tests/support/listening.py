"""Live listening from the outside: a call streamed in real time by the phone simulator, and
a WebSocket client (the ``websockets`` library) that listens to it as a browser or a script
would."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callrec.codecs import get_codec
from callrec.engine import LiveSession
from callrec.sim.phone import PhoneCall, build_packets
from tests.support.audio import speech_like_signal
from tests.support.waiting import wait_for
from tests.support.web import Site


@dataclass
class Heard:
    """What a listener received: the start message, and the PCM by position."""

    start: dict[str, Any] = field(default_factory=dict)
    #: (position in sample frames, PCM) in the order received.
    spans: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return any(e.get("event") == "ended" for e in self.events)

    def contiguous(self) -> tuple[int, bytes]:
        """The first position and every byte after it; the spans must follow each other."""
        block = 2 * int(self.start["channels"])
        first, data = self.spans[0][0], bytearray()
        for position, pcm in self.spans:
            assert position == first + len(data) // block, "a gap in what was heard"
            data += pcm
        return first, bytes(data)


def listen_url(site: Site | str, uid: str) -> str:
    """The WebSocket of a server (a :class:`Site` or its base URL)."""
    base = site if isinstance(site, str) else site.base
    return base.replace("http://", "ws://") + f"/api/v1/live/{uid}/listen"


@contextlib.asynccontextmanager
async def listening(
    site: Site | str,
    uid: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    origin: str | None = None,
) -> AsyncIterator[ClientConnection]:
    headers: dict[str, str] = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if cookie:
        headers["cookie"] = f"callrec_session={cookie}"
    async with connect(
        listen_url(site, uid),
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        compression=None,
        open_timeout=10,
    ) as ws:
        yield ws


async def hear(
    ws: ClientConnection,
    heard: Heard,
    *,
    until_ended: bool = True,
    ack: bool = True,
    frames: int | None = None,
) -> Heard:
    """Read the stream into ``heard`` until the server says the call ended (or closes, or
    ``frames`` binary messages came), acknowledging each frame (``ack``) as the browser's
    player does."""
    position = -1
    block = 0
    received = 0
    async for message in ws:
        if isinstance(message, str):
            event = json.loads(message)
            heard.events.append(event)
            if event["event"] == "start":
                heard.start = event
                block = 2 * int(event["channels"])
            elif event["event"] == "position":
                position = int(event["position"])
            elif event["event"] == "ended" and until_ended:
                break
        else:
            assert position >= 0, "PCM before any position"
            heard.spans.append((position, message))
            position += len(message) // block
            received += len(message) // block
            if ack:
                with contextlib.suppress(ConnectionClosed):  # the call ended meanwhile
                    await ws.send(json.dumps({"received": received}))
            if frames is not None and len(heard.spans) >= frames:
                break
    return heard


class LiveCall:
    """A phone call streamed in real time (or as fast as it goes) while a test listens."""

    def __init__(
        self, site: Site, *, session_id: str, seconds: float, codec: str = "PCMA", **kw: Any
    ) -> None:
        self.site = site
        self.session_id = session_id
        self.codec = codec
        rate = 16000 if codec == "G722" else 8000
        self.call = PhoneCall(
            "127.0.0.1", site.server.control_port, session_id=session_id, codec=codec, **kw
        )
        self.packets = build_packets(
            speech_like_signal(seconds, rate), get_codec(codec), ssrc=self.call.ssrc
        )
        self._streaming: asyncio.Task[int] | None = None

    async def start(self, *, realtime: bool = True, send: bool = True) -> LiveSession:
        answer = await self.call.start()
        assert answer["result"] == "success", answer
        if send:
            self.send(realtime=realtime)
        return await self.live()

    def send(self, *, realtime: bool, packet_ms: int = 20) -> None:
        """Stream the packets: in real time, ``packet_ms`` apart (less: faster than real
        time), or as fast as they go."""
        self._streaming = asyncio.create_task(
            self.call.send_packets(self.packets, realtime=realtime, packet_ms=packet_ms)
        )

    async def live(self) -> LiveSession:
        def find() -> LiveSession | None:
            return next(
                (
                    s
                    for s in self.site.server.live.live_sessions()
                    if s.session_id == self.session_id
                ),
                None,
            )

        return await wait_for(find, what=f"call {self.session_id} to be recorded")

    async def finish(self) -> int:
        """Send the rest, stop the call; returns the recording's id once catalogued."""
        if self._streaming is not None:
            await self._streaming
        live = await self.live()
        await wait_for(
            lambda: self._received() >= len(self.packets),
            what=f"call {self.session_id} to receive every packet",
        )
        stop = await self.call.stop("hangup")
        assert stop["result"] == "success", stop
        await self.call.close()
        return await wait_for(
            lambda: self._catalogued(live.uid),
            what=f"call {self.session_id} to be catalogued as complete",
            timeout=10,
        )

    def _received(self) -> int:
        for s in self.site.server.live.live_sessions():
            if s.session_id == self.session_id:
                return s.counters["received"]
        return 0

    def _catalogued(self, uid: str) -> int | None:
        for row in self.site.catalog.find(limit=1000):
            if row.uid == uid and row.status == "complete":
                return row.id
        return None

    async def abort(self) -> None:
        if self._streaming is not None:
            self._streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._streaming
        with contextlib.suppress(Exception):
            await self.call.stop("hangup")
        await self.call.close()


async def sign_in_cookie(site: Site, username: str, password: str) -> str:
    """A browser session's cookie, got through the sign-in form."""
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await client.post(
            "/login", data={"username": username, "password": password, "csrf": token}
        )
        assert r.status_code == 303, r.text
        cookie = client.cookies.get("callrec_session")
        assert cookie
        return cookie


async def metric(site: Site, name: str) -> float:
    """One figure of ``/metrics`` (as the admin)."""
    async with site.client("admin") as admin:
        text = (await admin.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")
