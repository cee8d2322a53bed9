"""The SIP side as `callrec serve` runs it: crash recovery, TCP, the component, outbound-proxy
mode end to end, the `callrec sip` command and the settings."""

from __future__ import annotations

import asyncio
import signal
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog, NewRecording, SipAccountStore
from callrec.cli import app
from callrec.config import Settings
from callrec.engine.recovery import recover_unfinished
from callrec.exceptions import ConfigError
from callrec.media.wav import WavWriter
from callrec.sip.auth import ha1
from callrec.sip.message import SipResponse, StreamFramer, parse_message
from callrec.sip.server import check_sip_settings
from tests.sip.ua import TestPhone, play
from tests.support.audio import read_wav
from tests.support.catalog import T0
from tests.support.data import CODEC_DATA
from tests.support.net import free_udp_block, free_udp_port
from tests.support.rtp import PACKET_BYTES, alaw_packets
from tests.support.serve import start_serve_sip, terminate
from tests.support.settings import server_settings
from tests.support.sip import start_env, stop_env
from tests.support.waiting import wait_idle


def test_recovery_repairs_a_sip_row_and_its_mix(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.migrate()
    rec_id = catalog.create_recording(
        NewRecording(
            source="sip",
            session_id="call-1@test",
            device="",
            direction="out",
            codec="G722",
            start_time=T0,
            sample_rate=16000,
            channels=2,
            path="d/call.wav",
            extra={"companions": [{"path": "d/call.mix.wav", "channels": 1}]},
        )
    )
    stereo = WavWriter(root / "d/call.wav", sample_rate=16000, channels=2)
    mix = WavWriter(root / "d/call.mix.wav", sample_rate=16000, channels=1)
    stereo.write(b"\x01\x00\x02\x00" * 16000)
    mix.write(b"\x03\x00" * 16000)
    stereo.flush()
    mix.flush()
    stereo.abort()  # the process is gone, and with it the files' locks
    mix.abort()
    # kill -9 between a data write and its header update: unannounced audio at the end.
    with (root / "d/call.wav").open("ab") as f:
        f.write(b"\x01\x00\x02\x00" * 800 + b"\x01")
    with (root / "d/call.mix.wav").open("ab") as f:
        f.write(b"\x03\x00" * 800)
    report = recover_unfinished(catalog, root)
    assert report == [f"#{rec_id} d/call.wav: 1.05 s recovered"]
    row = catalog.get(rec_id)
    assert row is not None and (row.status, row.channels) == ("recovered", 2)
    for name, channels in (("d/call.wav", 2), ("d/call.mix.wav", 1)):
        with wave.open(str(root / name), "rb") as w:
            assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (channels, 16000, 16800)
    # A companion path that would leave the recordings is not touched.
    evil = catalog.create_recording(
        NewRecording(
            session_id="x",
            device="",
            codec="PCMA",
            start_time=T0,
            sample_rate=8000,
            path="d/evil.wav",
            extra={"companions": [{"path": "../../outside.wav"}, "junk", {"path": 3}]},
        )
    )
    (tmp_path / "outside.wav").write_bytes(b"not touched")
    recover_unfinished(catalog, root)
    assert (tmp_path / "outside.wav").read_bytes() == b"not touched"
    assert catalog.get(evil) is not None
    catalog.close()


async def test_kill_9_mid_call_then_restart_recovers_stereo_and_mix(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog.migrate()
    store = SipAccountStore(catalog)
    for user, policy in (("alice", "always"), ("bob", "on_demand")):
        store.add(
            user,
            realm="callrec",
            ha1_md5=ha1("MD5", user, "callrec", "pw"),
            ha1_sha256=None,
            policy=policy,
        )
    catalog.close()
    port = free_udp_port()
    proc = start_serve_sip(tmp_path, port)
    alice = TestPhone("alice", "pw", ("127.0.0.1", port))
    bob = TestPhone("bob", "pw", ("127.0.0.1", port))
    try:
        for phone in (alice, bob):
            await phone.start()
            assert (await phone.register()).status == 200
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        data = (CODEC_DATA / "signal.alaw").read_bytes()
        start = asyncio.get_running_loop().time() + 0.05
        await asyncio.gather(
            play(alice, alaw_packets(data, ssrc=1)[:75], start=start),
            play(bob, alaw_packets(data[::-1], ssrc=2)[:75], start=start),
        )
        await asyncio.sleep(0.1)  # the moment of the kill: the loss bound below counts from it
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        await alice.close()
        await bob.close()
        if proc.poll() is None:
            proc.kill()
    proc = start_serve_sip(tmp_path, port)  # recovery runs before SIP listens
    try:
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        (rec,) = catalog.find()
        catalog.close()
        assert (rec.source, rec.status, rec.stop_reason, rec.channels) == (
            "sip",
            "recovered",
            "crash",
            2,
        )
        root = tmp_path / "recordings"
        frames, _ = read_wav(root / rec.path)
        mix, _ = read_wav(root / rec.extra["sip"]["mix"])
        assert frames.shape[1:] == (2,) and mix.ndim == 1
        # 1.5 s were sent; at most ~1.5 s (lag + sync interval) may be lost with the process.
        assert len(frames) >= 0.2 * 8000
        assert rec.duration == pytest.approx(len(frames) / 8000)
        assert len(mix) == len(frames)
        assert np.array_equal(mix, np.clip(frames[:, 0].astype(int) + frames[:, 1], -32768, 32767))
        assert np.count_nonzero(frames[:, 0]) > len(frames) // 2
        assert np.count_nonzero(frames[:, 1]) > len(frames) // 2
    finally:
        terminate(proc)


async def test_tcp_options_and_register(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    try:
        await env.add_account("alice", "pw")
        assert env.sip.tcp_port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", env.sip.tcp_port)
        local = writer.get_extra_info("sockname")
        framer = StreamFramer()

        async def exchange(text: str) -> SipResponse:
            writer.write(text.replace("\n", "\r\n").encode())
            while True:
                message = framer.next_message()
                if message is not None:
                    parsed = parse_message(message, stream=True)
                    assert isinstance(parsed, SipResponse)
                    return parsed
                framer.receive_data(await asyncio.wait_for(reader.read(4096), 5))

        head = (
            f"Via: SIP/2.0/TCP {local[0]}:{local[1]};branch=z9hG4bK{{b}}\n"
            "From: <sip:alice@127.0.0.1>;tag=1\nTo: <sip:alice@127.0.0.1>\nCall-ID: tcp-1\n"
        )
        options = (
            "OPTIONS sip:127.0.0.1 SIP/2.0\n"
            + head.format(b=1)
            + "CSeq: 1 OPTIONS\nContent-Length: 0\n\n"
        )
        # Two messages in one segment, and a keep-alive before them.
        writer.write(b"\r\n\r\n")
        first = await exchange(options + options.replace("z9hG4bK1", "z9hG4bK2"))
        assert first.status == 200
        assert (await exchange("")).status == 200
        register = (
            "REGISTER sip:127.0.0.1 SIP/2.0\n"
            + head.format(b=3)
            + "CSeq: 2 REGISTER\n"
            + f"Contact: <sip:alice@{local[0]}:{local[1]};transport=tcp>\n"
            + "Content-Length: 0\n\n"
        )
        challenge = await exchange(register)
        assert challenge.status == 401 and challenge.header("WWW-Authenticate")
        # No Content-Length on a stream: the connection is closed.
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK9\r\n\r\n")
        assert await asyncio.wait_for(reader.read(4096), 5) == b""
        writer.close()
    finally:
        await stop_env(env)


async def test_a_taken_sip_port_leaves_the_server_recording(tmp_path: Path) -> None:
    from callrec.service import Service

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    taken = blocker.getsockname()[1]
    try:
        settings = server_settings(
            tmp_path, sip_enabled=True, sip_host="127.0.0.1", sip_port=taken, sip_tcp=False
        )
        server = Service(settings)
        try:
            await server.start()  # logs an error, does not raise
            assert server.sip is not None and server.control_port
        finally:
            await server.stop()
        off = Service(server_settings(tmp_path / "off", sip_enabled=False))
        assert off.sip is None
        off.catalog.close()
    finally:
        blocker.close()


async def test_outbound_proxy_mode_end_to_end(tmp_path: Path) -> None:
    """Phones register through a proxy callrec to an upstream SIP server (here: another
    callrec as registrar) and call each other; the proxy relays and records."""
    upstream = await start_env(tmp_path / "upstream")
    await upstream.add_account("alice", "alice-pw")
    await upstream.add_account("bob", "bob-pw")
    host, port = upstream.address
    proxy = await start_env(tmp_path / "proxy", sip_upstream=f"{host}:{port}", sip_tcp=False)
    # Policy-only accounts on the proxy: alice may record, bob may not.
    store = SipAccountStore(proxy.server.catalog)
    await proxy.server.writer.run(
        store.add, "alice", realm="callrec", ha1_md5=None, ha1_sha256=None
    )
    await proxy.server.writer.run(
        store.add, "bob", realm="callrec", ha1_md5=None, ha1_sha256=None, policy="never"
    )
    await proxy.sip.reload_accounts()
    alice = TestPhone("alice", "alice-pw", proxy.address)
    bob = TestPhone("bob", "bob-pw", proxy.address)
    try:
        for phone in (alice, bob):
            await phone.start()
            response = await phone.register()
            assert response.status == 200  # upstream's challenge, answered through the proxy
            assert response.header_values("Contact") == [f"{phone.contact};expires=3600"]
        answering = asyncio.create_task(bob.answer_call())
        assert (await alice.invite("bob")).status == 200
        await answering
        assert (await bob.info_record("on")).status == 403
        assert (await alice.info_record("on")).status == 200
        data = (CODEC_DATA / "signal.alaw").read_bytes()
        start = asyncio.get_running_loop().time() + 0.05
        await asyncio.gather(
            play(alice, alaw_packets(data, ssrc=1)[:40], start=start),
            play(bob, alaw_packets(data[::-1], ssrc=2)[:40], start=start),
        )
        assert (await alice.info_record("off")).status == 200
        assert (await alice.bye()).status == 200
        await bob.wait_bye()
        await wait_idle(proxy.server)  # alice's recording (its Record: on answered 200) finished
        (rec,) = proxy.server.catalog.find()
        assert (rec.source, rec.status, rec.channels, rec.stop_reason) == (
            "sip",
            "complete",
            2,
            "record_off",
        )
        assert rec.duration is not None and rec.duration > 0.5
        # Media went through both: each phone heard the other.
        assert len([p for p, _ in alice.rtp_received if p.payload_type == 8]) > 20
        assert len([p for p, _ in bob.rtp_received if p.payload_type == 8]) > 20
        assert len(bob.rtp_received[0][0].payload) == PACKET_BYTES
    finally:
        await alice.close()
        await bob.close()
        await stop_env(proxy)
        await stop_env(upstream)


def test_cli_accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("CALLREC_SIP_REALM", "office")
    runner = CliRunner()
    result = runner.invoke(
        app, ["sip", "account", "add", "201", "--password", "s3cret", "--policy", "always"]
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["sip", "account", "add", "201", "--password", "x"]).exit_code == 1
    assert runner.invoke(app, ["sip", "account", "add", "202", "--no-password"]).exit_code == 0
    assert (
        runner.invoke(app, ["sip", "account", "add", "bad name", "--password", "x"]).exit_code == 1
    )
    assert runner.invoke(app, ["sip", "account", "policy", "202", "sometimes"]).exit_code == 1
    assert runner.invoke(app, ["sip", "account", "policy", "202", "never"]).exit_code == 0
    assert (
        runner.invoke(app, ["sip", "account", "password", "202", "--password", "pw2"]).exit_code
        == 0
    )
    result = runner.invoke(app, ["sip", "account", "list", "--json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {r["username"]: r for r in json.loads(result.output)}
    assert rows["201"]["policy"] == "always" and rows["201"]["realm"] == "office"
    assert rows["202"]["has_password"] and rows["202"]["policy"] == "never"
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    info = SipAccountStore(catalog).get("201")
    catalog.close()
    assert info is not None and info.ha1_md5 == ha1("MD5", "201", "office", "s3cret")
    assert "s3cret" not in str(info)
    assert runner.invoke(app, ["sip", "account", "delete", "202"]).exit_code == 0
    assert runner.invoke(app, ["sip", "account", "delete", "202"]).exit_code == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sip_port": 70000}, "sip_port must be a port number"),
        ({"sip_host": "example.com"}, "sip_host must be an IP address"),
        ({"sip_default_policy": "sometimes"}, "sip_default_policy must be one of"),
        ({"sip_min_expires": 100, "sip_max_expires": 50}, "sip_min_expires"),
        ({"sip_upstream": "pbx example"}, "sip_upstream must be HOST"),
        ({"sip_realm": 'a"b'}, "sip_realm"),
        ({"sip_tcp_idle_timeout": 0}, "sip_tcp_idle_timeout must be > 0"),
        ({"sip_max_connections_per_source": -1}, "sip_max_connections_per_source must be >= 0"),
        ({"sip_max_requests_per_source": -5}, "sip_max_requests_per_source must be >= 0"),
    ],
)
def test_sip_settings_are_checked(overrides: dict[str, object], message: str) -> None:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        check_sip_settings(settings)


def test_sip_trusted_peers_must_be_networks() -> None:
    with pytest.raises(ConfigError, match=r"sip_trusted_peers: 'pbx\.example\.com' is not an IP"):
        Settings(sip_trusted_peers=("pbx.example.com",))
    with pytest.raises(ConfigError, match="sip_trusted_peers must be a list"):
        Settings(sip_trusted_peers="10.0.0.0/8")  # type: ignore[arg-type]


def test_sip_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from callrec.config import load_settings

    settings, source = load_settings(
        environ={"CALLREC_SIP_PORT": "5070", "CALLREC_SIP_UPSTREAM": "pbx.example.com:5060"}
    )
    assert settings.sip_port == 5070 and source["sip_port"] == "CALLREC_SIP_PORT"
    assert settings.sip_enabled and Settings().sip_port == 5060
    check_sip_settings(settings)


def test_port_pairs_are_even_and_odd() -> None:
    from callrec.engine.ports import PortRange
    from callrec.exceptions import ResourceError

    # An odd first port: its lowest and highest cannot pair.
    low = free_udp_block(7) + 1
    for ports in (PortRange("127.0.0.1", 0, 0), PortRange("127.0.0.1", low, low + 5)):
        taken = []
        try:
            for _ in range(2):
                rtp, rtcp = ports.bind_pair()
                taken += [rtp, rtcp]
                port = rtp.getsockname()[1]
                assert port % 2 == 0 and rtcp.getsockname()[1] == port + 1
            if ports.low:
                # low+1/+2 and low+3/+4 are taken; low and low+5 cannot pair.
                with pytest.raises(ResourceError, match="no free UDP port pair"):
                    ports.bind_pair()
                first = taken[0].getsockname()[1]
                ports.release(first)
                ports.release(first + 1)
                taken[0].close()
                taken[1].close()
                rtp, rtcp = ports.bind_pair()
                taken += [rtp, rtcp]
                assert rtp.getsockname()[1] == first
        finally:
            for sock in taken:
                sock.close()
