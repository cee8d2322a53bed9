"""Media ports: random choice, rest after a call, the longest-rested when all rest (issue 14
item 2). Real sockets on loopback, in a range of high ports the tests own."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from callrec.engine.portmemory import PortMemory
from callrec.engine.ports import PortRange
from callrec.exceptions import ResourceError
from tests.support.net import free_udp_block


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def low() -> int:
    """The first of a block of free ports the test's ranges start at."""
    return free_udp_block(40)


def _range(tmp_path: Path, low: int, size: int, clock: Clock, quarantine: float = 600) -> PortRange:
    memory = PortMemory(tmp_path, quarantine, clock=clock)
    memory.open()
    return PortRange("127.0.0.1", low, low + size - 1, memory=memory, rng=random.Random(7))


def test_ports_are_chosen_at_random_not_in_order(tmp_path: Path, low: int) -> None:
    ports = _range(tmp_path, low, 40, Clock())
    socks = [ports.bind() for _ in range(8)]
    numbers = [s.getsockname()[1] for s in socks]
    assert len(set(numbers)) == 8 and all(low <= n < low + 40 for n in numbers)
    assert numbers != sorted(numbers)
    for s in socks:
        s.close()


def test_a_released_port_is_not_handed_out_while_it_rests(tmp_path: Path, low: int) -> None:
    clock = Clock()
    ports = _range(tmp_path, low, 4, clock)
    first = ports.bind()
    port = first.getsockname()[1]
    first.close()
    ports.release(port)
    taken = [ports.bind() for _ in range(3)]
    assert port not in {s.getsockname()[1] for s in taken}
    for s in taken:
        s.close()
    clock.now += 600
    # Rested: it may be chosen again (the others are still in use).
    again = ports.bind()
    assert again.getsockname()[1] == port
    again.close()


def test_when_every_free_port_rests_the_longest_rested_is_used(
    tmp_path: Path, low: int, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ports = _range(tmp_path, low, 3, clock)
    order = []
    for _ in range(3):
        sock = ports.bind()
        order.append(sock.getsockname()[1])
        sock.close()
    for port in order:  # released one second apart: order[0] rested longest
        ports.release(port)
        clock.now += 1
    sock = ports.bind()
    assert sock.getsockname()[1] == order[0]
    assert "rested longest" in caplog.text
    sock.close()


def test_rests_survive_a_restart_of_the_process(tmp_path: Path, low: int) -> None:
    clock = Clock()
    before = _range(tmp_path, low, 2, clock)
    sock = before.bind()
    port = sock.getsockname()[1]
    sock.close()
    before.release(port)
    before.memory.close()
    after = _range(tmp_path, low, 2, clock)
    other = after.bind()
    assert other.getsockname()[1] != port
    other.close()


def test_ports_in_use_elsewhere_are_skipped_and_busy_is_clear(tmp_path: Path, low: int) -> None:
    clock = Clock()
    ports = _range(tmp_path, low, 2, clock)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", low))
    mine = ports.bind()
    assert mine.getsockname()[1] == low + 1
    with pytest.raises(ResourceError) as info:
        ports.bind()
    assert info.value.reason == "busy"
    squatter.close()
    mine.close()


def test_pairs_are_even_odd_and_rest_too(tmp_path: Path, low: int) -> None:
    clock = Clock()
    ports = _range(tmp_path, low, 6, clock)
    rtp, rtcp = ports.bind_pair()
    port = rtp.getsockname()[1]
    assert port % 2 == 0 and rtcp.getsockname()[1] == port + 1
    rtp.close()
    rtcp.close()
    ports.release(port)
    ports.release(port + 1)
    others = [ports.bind_pair() for _ in range(2)]
    assert port not in {pair[0].getsockname()[1] for pair in others}
    for pair in others:
        for s in pair:
            s.close()
