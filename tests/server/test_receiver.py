"""The batched media reader: a read bounded in time leaves the rest queued, loses nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from callrec.server.receiver import CLOCK_EVERY, MediaReceiver
from tests.support.net import udp_receivers


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    socks = udp_receivers(4)
    yield socks
    for sock in socks:
        sock.close()


def _queue(socks: list[socket.socket], per_socket: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for n in range(per_socket):
            for index, sock in enumerate(socks):
                out.sendto(f"{index}:{n}".encode(), sock.getsockname())


def test_a_read_out_of_time_stops_and_the_next_goes_on_in_order(
    sockets: list[socket.socket],
) -> None:
    per_socket = 100
    _queue(sockets, per_socket)
    got: dict[int, list[int]] = {i: [] for i in range(len(sockets))}
    receiver = MediaReceiver()
    for index, sock in enumerate(sockets):

        def receive(data: bytes, addr: object, now: float, index: int = index) -> None:
            sock_index, n = data.decode().split(":")
            assert int(sock_index) == index
            got[index].append(int(n))

        receiver.add(sock, receive)
    ticks = iter(range(10_000))

    def clock() -> float:
        return float(next(ticks))  # one second per look: out of time at the first look

    count, behind = receiver.read(0.0, budget=0.5, clock=clock)
    # Stopped at the first look at the clock, with most of the queue left in the kernel.
    assert behind
    assert count == CLOCK_EVERY
    # Round by round, so every socket had its share.
    assert all(len(n) == CLOCK_EVERY // len(sockets) for n in got.values())
    total = count
    while behind:
        count, behind = receiver.read(1.0)
        total += count
    assert total == per_socket * len(sockets)
    assert all(n == list(range(per_socket)) for n in got.values())
    assert receiver.read(2.0) == (0, False)


def test_a_read_that_runs_out_of_rounds_says_it_is_behind(sockets: list[socket.socket]) -> None:
    _queue(sockets, 10)
    receiver = MediaReceiver()
    seen: list[bytes] = []
    for sock in sockets:
        receiver.add(sock, lambda data, addr, now: seen.append(data))
    assert receiver.read(0.0, max_rounds=3) == (3 * len(sockets), True)
    assert receiver.read(0.0) == (7 * len(sockets), False)
    assert len(seen) == 10 * len(sockets)
