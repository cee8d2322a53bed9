"""SIP helpers: the sans-I/O core with a fake media side (``make_core``), and a server in
this process with SIP on loopback and accounts to register (``start_env``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from callrec.catalog import SipAccountStore
from callrec.exceptions import ResourceError
from callrec.service import Service
from callrec.sip.accounts import Account
from callrec.sip.auth import DigestAuthenticator, ha1
from callrec.sip.core import CoreConfig, SipCore
from callrec.sip.peer import Peer
from callrec.sip.server import SipServer
from tests.support.settings import sip_settings

# -- the core without I/O ----------------------------------------------------------------

REALM = "callrec"
#: The core's own address.
US = "192.0.2.1"


class FakeMedia:
    """Hands out RTP/RTCP port pairs from 40000 on; ``full`` refuses (``busy``)."""

    def __init__(self, *, full: bool = False) -> None:
        self.full = full
        self.ports = itertools.count(40000)
        self.calls: list[str] = []

    def allocate(self, call: str) -> tuple[int, int]:
        if self.full:
            raise ResourceError("no ports", reason="busy")
        self.calls.append(call)
        return next(self.ports), next(self.ports)


def account(name: str, password: str, policy: str = "on_demand") -> Account:
    return Account(
        username=name,
        realm=REALM,
        ha1_md5=ha1("MD5", name, REALM, password),
        ha1_sha256=ha1("SHA-256", name, REALM, password),
        policy=policy,
    )


def make_core(
    *, upstream: Peer | None = None, accounts: Iterable[Account] = (), **config: object
) -> tuple[SipCore, FakeMedia]:
    """A core with ``accounts``, deterministic tokens and a fixed digest secret."""
    counter = itertools.count(1)
    book = {a.username: a for a in accounts}
    media = FakeMedia()
    core = SipCore(
        CoreConfig(ports={"udp": 5060, "tcp": 5060}, realm=REALM, upstream=upstream, **config),  # type: ignore[arg-type]
        accounts=book.get,
        media=media,
        local_address=lambda peer: US,
        auth=DigestAuthenticator(REALM, secret=b"test-secret"),
        token=lambda n: f"{next(counter):0{2 * n}x}",
    )
    return core, media


# -- a server with SIP -------------------------------------------------------------------


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
    """A started server with :func:`~tests.support.settings.sip_settings`."""
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
