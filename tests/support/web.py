"""A real recording server with the web component on loopback, users of every kind with API
tokens, and calls made by the phone simulator to fill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from callrec.catalog import Catalog
from callrec.service import Service
from callrec.sim.call import record_call
from callrec.web import WebServer
from callrec.web.security import hash_password, new_api_token
from tests.support.audio import speech_like_signal
from tests.support.settings import web_settings
from tests.support.waiting import wait_catalogued

DEVICE_A = "0c383e0e709a"
DEVICE_B = "0c383e0e7000"
DEVICE_C = "0c383e0e7abc"

#: name -> (user name, password, role, extensions, devices)
USERS: dict[str, tuple[str, str, str, list[str], list[str]]] = {
    "admin": ("admin", "admin-password-1", "admin", [], []),
    "listener": ("lisa", "listener-password-1", "listener", [], []),
    "ext3002": ("ext3002", "restricted-password-1", "listener", ["3002"], []),
    "devC": ("devc", "restricted-password-2", "listener", [], [DEVICE_C]),
}

#: name -> what the phone simulator sends for it
CALLS: dict[str, dict[str, Any]] = {
    "alice": dict(
        codec="PCMA",
        seconds=2.0,
        session_id="20001",
        device=DEVICE_A,
        direction="out",
        local_number="3001",
        local_name="Desk",
        remote_number="2011",
        remote_name="Alice Example",
    ),
    "bob": dict(
        codec="PCMU",
        seconds=1.0,
        session_id="20002",
        device=DEVICE_B,
        direction="in",
        local_number="3002",
        remote_number="030123456",
        remote_name="Bob Builder",
    ),
    "ivan": dict(
        codec="G722",
        seconds=3.0,
        session_id="20003",
        device=DEVICE_A,
        direction="out",
        local_number="3001",
        remote_number="4000",
        remote_name="Иван Петров",
    ),
    "carol": dict(
        codec="PCMA",
        seconds=0.5,
        session_id="20004",
        device=DEVICE_C,
        direction="in",
        local_number="3003",
        remote_number="2011",
        remote_name="Carol",
    ),
}


@dataclass
class Site:
    server: Service
    web: WebServer
    base: str
    tokens: dict[str, str] = field(default_factory=dict)
    recs: dict[str, int] = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        return self.server.catalog

    def client(self, who: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30)

    async def record(self, **call: Any) -> int:
        return await make_call(self.server, **call)


async def make_call(server: Service, *, codec: str, seconds: float, **kw: Any) -> int:
    """One whole call by the phone simulator; returns the recording's id."""
    rate = 16000 if codec == "G722" else 8000
    result = await record_call(
        "127.0.0.1",
        server.control_port,
        codec=codec,
        pcm=speech_like_signal(seconds, rate),
        realtime=False,
        **kw,
    )
    assert result.ok, result.error
    # The stop is answered once the end is in the journal; the row follows (record first).
    await wait_catalogued(server)
    rows = server.catalog.find(limit=1000)
    return max(r.id for r in rows if r.session_id == kw["session_id"])


def add_users(catalog: Catalog) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for key, (name, password, role, extensions, devices) in USERS.items():
        user = catalog.create_user(
            name,
            password_hash=hash_password(password),
            role=role,
            extensions=extensions,
            devices=devices,
        )
        token, token_hash, prefix = new_api_token()
        catalog.create_token(user.id, name="tests", token_hash=token_hash, prefix=prefix)
        tokens[key] = token
    return tokens


async def start_site(tmp: Path, *, users: bool = True, **overrides: Any) -> Site:
    server = Service(web_settings(tmp, **overrides))
    # The users exist before the web server starts (else it creates a first admin).
    server.catalog.migrate()
    tokens = add_users(server.catalog) if users else {}
    await server.start()
    assert server.web is not None
    return Site(server=server, web=server.web, base=server.web.url, tokens=tokens)


async def stop_site(site: Site) -> None:
    await site.server.stop()
