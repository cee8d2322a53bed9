"""``web_allow``: the web UI and API answer only the networks listed (empty: everyone).

The address checked is the socket's peer (uvicorn runs with ``proxy_headers`` off), never a
forwarded header a client can write itself: behind a reverse proxy, the proxy is what to list.
A refused request gets 403 and a refused WebSocket is closed before it is accepted; both are
counted for ``/metrics`` and logged once per episode of a source (:class:`RefusalLog`).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from callrec.access import AllowList, RefusalLog
from callrec.net import plain_ip

#: WebSocket close code for a policy violation (RFC 6455 7.4.1).
POLICY_VIOLATION = 1008
FORBIDDEN_BODY = b"forbidden: this address may not use the callrec web UI (web_allow)\n"


class AllowListMiddleware:
    """ASGI middleware answering 403 to clients outside ``allow``."""

    def __init__(self, app: ASGIApp, *, allow: AllowList, refusals: RefusalLog) -> None:
        self.app = app
        self.allow = allow
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allow.everyone:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = plain_ip(str(client[0])) if client else "?"
        if self.allow.allows(address):
            await self.app(scope, receive, send)
            return
        self.refusals.refused(
            address, "forbidden", f"{scope.get('path', '')} (not in web_allow)", time.monotonic()
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(FORBIDDEN_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": FORBIDDEN_BODY})
