"""Who is who, on real sockets (issue 19 items 2, 6, 7): the authenticated account is the
caller's number in the catalogue, a trunk trusted by address calls without a challenge,
calls to a phone's callrec contact come only from the upstream, and INFO Record only from the
call's own peer. Other hosts are other loopback addresses (127.0.0.2, 127.0.0.3)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from callrec.catalog import SipAccountStore
from callrec.sip.message import SipRequest, SipResponse, parse_message, with_body
from tests.sip.ua import TestPhone, sdp_offer
from tests.support.sip import start_env, stop_env
from tests.support.waiting import wait_idle


async def exchange_from(host: str, data: bytes, server: tuple[str, int]) -> SipResponse:
    """Send ``data`` from ``host`` (a loopback address) and return the final answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.setblocking(False)
        await loop.sock_sendto(sock, data, server)
        while True:
            reply = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65536), 5))
            assert isinstance(reply, SipResponse)
            if reply.status >= 200:
                return reply
    finally:
        sock.close()


async def test_the_catalogue_has_the_authenticated_account_not_from(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    caller = TestPhone("203", "pw203", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("203", "pw203", policy="always")
        await env.add_account("bob", "bob-pw")
        for phone in (caller, bob):
            await phone.start()
        assert (await bob.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        # Authenticated as 203, claiming to be 999 in From.
        assert (await caller.invite("bob", from_user="999")).status == 200
        invite = await answering
        assert invite.from_.display_name == "203"  # the From display goes on as it came
        assert (await caller.bye()).status == 200
        await wait_idle(env.server)
        (rec,) = env.server.catalog.find()
        assert (rec.local_number, rec.remote_number) == ("203", "bob")
        assert [r.id for r in env.server.catalog.find(number="203")] == [rec.id]
        assert env.server.catalog.find(number="999") == []
    finally:
        await caller.close()
        await bob.close()
        await stop_env(env)


async def test_a_trunk_trusted_by_address_calls_without_a_challenge(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_trusted_peers=["127.0.0.2/32"])
    trunk = TestPhone("5551234", "no-account", env.address, host="127.0.0.2")
    stranger = TestPhone("5551234", "no-account", env.address, host="127.0.0.3")
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("bob", "bob-pw", policy="always")
        for phone in (trunk, stranger, bob):
            await phone.start()
        assert (await bob.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        # No 407 (the trunk has no account: a challenge would end in 403).
        assert (await trunk.invite("bob")).status == 200
        await answering
        assert (await trunk.bye()).status == 200
        await wait_idle(env.server)
        (rec,) = env.server.catalog.find()
        assert (rec.direction, rec.local_number, rec.remote_number) == ("in", "bob", "5551234")
        # The same call from an address not on the list is challenged (and its credentials,
        # for no account, refused).
        assert (await stranger.invite("bob")).status == 403
    finally:
        for phone in (trunk, stranger, bob):
            await phone.close()
        await stop_env(env)


async def test_proxy_mode_takes_calls_for_phones_only_from_the_upstream(tmp_path: Path) -> None:
    upstream = await start_env(tmp_path / "upstream")
    await upstream.add_account("alice", "alice-pw")
    host, port = upstream.address
    proxy = await start_env(tmp_path / "proxy", sip_upstream=f"{host}:{port}", sip_tcp=False)
    store = SipAccountStore(proxy.server.catalog)
    await proxy.server.writer.run(
        store.add, "alice", realm="callrec", ha1_md5=None, ha1_sha256=None
    )
    await proxy.sip.reload_accounts()
    alice = TestPhone("alice", "alice-pw", proxy.address)
    try:
        await alice.start()
        assert (await alice.register()).status == 200
        core = proxy.sip.core
        assert core is not None
        [binding] = core.registrar.lookup("alice", asyncio.get_running_loop().time())
        token_uri = f"sip:{binding.token}@127.0.0.1:{proxy.address[1]}"
        # Someone at 127.0.0.3 calls the phone's callrec contact directly: refused.
        mallory = TestPhone("mallory", "x", proxy.address, host="127.0.0.3")
        await mallory.start()
        try:
            answer = await mallory.transact(_invite(mallory, token_uri, binding.token), timeout=5)
        finally:
            await mallory.close()
        assert answer.status == 403
        assert core.calls == {}
    finally:
        await alice.close()
        await stop_env(proxy)
        await stop_env(upstream)


async def test_info_record_from_another_address_is_refused(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    alice = TestPhone("alice", "alice-pw", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        for phone in (alice, bob):
            await phone.start()
        assert (await bob.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        # alice's own INFO, with its tags and Call-ID, sent from 127.0.0.2.
        forged = alice._in_dialog("INFO", headers=[("Record", "on")])
        answer = await exchange_from("127.0.0.2", forged.serialize(), env.address)
        assert answer.status == 403
        assert not any(m.recording for m in env.sip.media.values())
        assert (await alice.info_record("on")).status == 200
        assert (await alice.bye()).status == 200
        await wait_idle(env.server)
        assert len(env.server.catalog.find()) == 1
    finally:
        await alice.close()
        await bob.close()
        await stop_env(env)


def _invite(phone: TestPhone, uri: str, user: str) -> SipRequest:
    body = sdp_offer(phone.rtp_port, host=phone.host)
    headers = [
        ("Via", phone.via()),
        ("Max-Forwards", "70"),
        ("From", f"<sip:mallory@{phone.host}>;tag=m1"),
        ("To", f"<sip:{user}@127.0.0.1>"),
        ("Call-ID", "mallory-1@test"),
        ("CSeq", "1 INVITE"),
        ("Contact", phone.contact),
    ]
    return SipRequest(
        method="INVITE", uri=uri, headers=with_body(headers, body, "application/sdp"), body=body
    )
