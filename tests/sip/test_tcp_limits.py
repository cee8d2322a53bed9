"""SIP listeners under abuse: the TCP idle timeout, the per-source connection limit and the
per-source request rate (issue 19 item 5), with the refusals counted for the metrics
(``callrec_refused_connections_total{listener="sip",reason}``)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from callrec.sip.limits import RateLimiter, Verdict
from callrec.sip.message import SipResponse, parse_message
from tests.support.sip import start_env, stop_env
from tests.support.waiting import wait_for


def options(branch: str, via: str = "127.0.0.1:5999", transport: str = "UDP") -> bytes:
    text = (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK{branch}\r\n"
        "From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>\r\n"
        f"Call-ID: limits-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    return text.encode()


def test_rate_limiter_answers_the_first_excess_and_drops_the_rest_over_udp() -> None:
    limiter = RateLimiter(3)
    got = [limiter.check("192.0.2.1", 10.2, reliable=False) for _ in range(6)]
    assert got == [Verdict.ADMIT] * 3 + [Verdict.REFUSE, Verdict.DROP, Verdict.DROP]
    # Another source has its own budget; over TCP every excess request is answered.
    assert limiter.check("192.0.2.2", 10.3, reliable=False) is Verdict.ADMIT
    tcp = [limiter.check("192.0.2.3", 10.4, reliable=True) for _ in range(5)]
    assert tcp == [Verdict.ADMIT] * 3 + [Verdict.REFUSE] * 2
    # The next second starts afresh; 0 is no limit.
    assert limiter.check("192.0.2.1", 11.0, reliable=False) is Verdict.ADMIT
    assert RateLimiter(0).check("192.0.2.1", 0.0, reliable=False) is Verdict.ADMIT
    # The table of sources is bounded.
    small = RateLimiter(1, max_sources=4)
    for i in range(10):
        small.check(f"198.51.100.{i}", 5.0, reliable=False)
    assert len(small._windows) <= 4


async def test_idle_and_half_sent_tcp_connections_are_closed(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_tcp_idle_timeout=0.5)
    try:
        port = env.sip.tcp_port
        assert port is not None
        refused = env.server.engine.admission.refused_connections
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        half_reader, half_writer = await asyncio.open_connection("127.0.0.1", port)
        half_writer.write(options("half", transport="TCP")[:60])
        assert await asyncio.wait_for(idle_reader.read(4096), 10) == b""
        assert await asyncio.wait_for(half_reader.read(4096), 10) == b""
        assert refused[("sip", "idle")] == 1
        assert refused[("sip", "partial_message")] == 1
        idle_writer.close()
        half_writer.close()
    finally:
        await stop_env(env)


async def test_connections_per_source_are_limited(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_max_connections_per_source=2)
    try:
        port = env.sip.tcp_port
        assert port is not None
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0)  # the server takes them before the third arrives
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(4096), 10) == b""
        refused = env.server.engine.admission.refused_connections
        assert refused[("sip", "too_many_connections")] == 1
        # The two within the limit still work, and another address is not affected.
        r, w = kept[0]
        w.write(options("kept", transport="TCP"))
        answer = parse_message(await asyncio.wait_for(r.read(4096), 10), stream=True)
        assert isinstance(answer, SipResponse) and answer.status == 200
        other_reader, other_writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        other_writer.write(options("other", transport="TCP"))
        answer = parse_message(await asyncio.wait_for(other_reader.read(4096), 10), stream=True)
        assert isinstance(answer, SipResponse) and answer.status == 200
        for _, w in [*kept, (other_reader, other_writer), (reader, writer)]:
            w.close()
    finally:
        await stop_env(env)


async def test_a_udp_flood_from_one_address_gets_503_then_silence(tmp_path: Path) -> None:
    env = await start_env(tmp_path, sip_max_requests_per_source=5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        via = f"127.0.0.1:{sock.getsockname()[1]}"
        for i in range(40):
            sock.sendto(options(f"f{i}", via), ("127.0.0.1", env.sip.udp_port))
        loop = asyncio.get_running_loop()
        answers: list[SipResponse] = []

        async def collect() -> None:
            while True:
                data = await loop.sock_recv(sock, 65536)
                message = parse_message(data)
                assert isinstance(message, SipResponse)
                answers.append(message)

        task = asyncio.create_task(collect())
        refused = env.server.engine.admission.refused_connections
        await wait_for(lambda: refused[("sip", "rate_limited")] >= 30, what="the flood refused")
        await asyncio.sleep(0.2)
        task.cancel()
        busy = [a for a in answers if a.status == 503]
        assert busy and all(a.header("Retry-After") == "5" for a in busy)
        # Most of the flood is dropped unanswered: at most 5 answered + one 503 per second.
        assert len(answers) < 20
        assert sum(1 for a in answers if a.status == 200) >= 5
    finally:
        sock.close()
        await stop_env(env)
