"""Fixtures: a recording server with its SIP side on loopback, and accounts to register."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callrec.catalog import SipAccountStore
from callrec.service import Service
from callrec.sip.auth import ha1
from callrec.sip.server import SipServer
from tests.server.conftest import server_settings


def sip_settings(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = dict(
        sip_enabled=True,
        sip_host="127.0.0.1",
        sip_port=0,
        web_enabled=False,
        sip_min_expires=1,
        sip_account_refresh=0.5,
    )
    values.update(overrides)
    return server_settings(tmp_path, **values)


@dataclass
class SipEnv:
    server: Service
    sip: SipServer

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip.udp_port)

    async def add_account(
        self, user: str, password: str = "secret", policy: str = "on_demand"
    ) -> None:
        store = SipAccountStore(self.server.catalog)
        realm = self.sip.settings.sip_realm
        await self.server.writer.run(
            store.add,
            user,
            realm=realm,
            ha1_md5=ha1("MD5", user, realm, password),
            ha1_sha256=ha1("SHA-256", user, realm, password),
            policy=policy,
        )
        await self.sip.reload_accounts()


async def start_env(tmp_path: Path, **overrides: object) -> SipEnv:
    server = Service(sip_settings(tmp_path, **overrides))
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    assert server.sip is not None
    return SipEnv(server=server, sip=server.sip)


async def stop_env(env: SipEnv) -> None:
    await env.server.stop()


@pytest.fixture
async def sip_env(tmp_path: Path) -> AsyncIterator[SipEnv]:
    env = await start_env(tmp_path)
    try:
        yield env
    finally:
        await stop_env(env)
