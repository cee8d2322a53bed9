"""A SIP recording (stereo file plus its mono mix) goes into the hash chain like a phone's:
``callrec verify --all`` finds it intact, counts the mix as the recording's (not an unexpected
WAV), and names the stereo file once it is altered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from callrec.catalog import Catalog
from callrec.integrity import keys
from callrec.integrity.verify import verify
from tests.sip.ua import TestPhone, play
from tests.support.data import encoded
from tests.support.integrity import chain_rows, third_party_verify
from tests.support.rtp import alaw_packets
from tests.support.sip import start_env, stop_env
from tests.support.waiting import wait_catalogued, wait_idle


async def test_a_sip_recording_is_chained_with_its_mix(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    alice = TestPhone("alice", "alice-pw", env.address)
    bob = TestPhone("bob", "bob-pw", env.address)
    try:
        await env.add_account("alice", "alice-pw")
        await env.add_account("bob", "bob-pw")
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        assert (await alice.info_record("on")).status == 200
        start = asyncio.get_running_loop().time()
        await play(alice, alaw_packets(encoded("PCMA")[:8000], ssrc=0xA11CE), start=start)
        assert (await alice.info_record("off")).status == 200
        assert (await alice.bye()).status == 200
        await bob.wait_bye()
        await wait_idle(env.server)
        await wait_catalogued(env.server)
    finally:
        for phone in (alice, bob):
            await phone.close()
        await stop_env(env)
    root = env.server.root
    public = keys.load_key(root / ".callrec" / "integrity" / "signing-key.pem").public
    with Catalog(env.server.settings.database_url) as catalog:
        assert third_party_verify(chain_rows(catalog)) == 1
        body = json.loads(chain_rows(catalog)[0][1])
        assert (body["source"], len(body["companions"])) == ("sip", 1)
        assert (root / body["companions"][0]).exists()
        report = verify(catalog, root, public)
        assert (report.findings, report.signed_seq) == ([], 1)
        with (root / body["path"]).open("r+b") as file:
            file.seek(-2, 2)
            file.write(b"\x7f\x7f")
        found = verify(catalog, root, public).findings
        assert [(f.kind, f.path) for f in found] == [("altered", body["path"])]
