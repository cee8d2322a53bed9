"""Sockets over loopback: dual stack for ``::``, the receive buffer asked for, and the
kernel's count of datagrams it dropped on a full queue."""

from __future__ import annotations

import socket
import sys

import pytest

from callrec.engine.ports import PortRange, drain_socket
from callrec.net import DropCounter, kernel_drops, new_socket, size_receive_buffer
from tests.support.net import needs_ipv6

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_MEMINFO (the drop count) is Linux's"
)


def test_families() -> None:
    with new_socket("127.0.0.1") as v4, new_socket("::1") as v6:
        assert (v4.family, v6.family) == (socket.AF_INET, socket.AF_INET6)
    with new_socket("::", socket.SOCK_STREAM) as dual:
        assert dual.family == socket.AF_INET6 and dual.type == socket.SOCK_STREAM
        assert dual.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


@needs_ipv6
def test_an_ipv4_datagram_reaches_a_dual_stack_socket() -> None:
    with new_socket("::") as dual, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
        dual.bind(("::", 0))
        v4.sendto(b"rtp", ("127.0.0.1", dual.getsockname()[1]))
        dual.settimeout(5)
        data, addr = dual.recvfrom(100)
        assert data == b"rtp" and addr[0] == "::ffff:127.0.0.1"


@needs_ipv6
def test_ports_on_dual_stack_hand_out_plain_addresses() -> None:
    ports = PortRange("::", 0, 0)
    sock = ports.bind()
    with sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
        assert sock.family == socket.AF_INET6
        v4.sendto(b"rtp", ("127.0.0.1", sock.getsockname()[1]))
        sock.setblocking(True)
        sock.settimeout(5)
        assert sock.recvfrom(100)[1][0] == "::ffff:127.0.0.1"
        v4.sendto(b"again", ("127.0.0.1", sock.getsockname()[1]))
        sock.setblocking(False)
        for _ in range(1000):  # loopback delivers at once; bounded all the same
            queued = drain_socket(sock)
            if queued:
                break
        assert queued == [(b"again", "127.0.0.1")]


def test_receive_buffer_is_granted_and_reported() -> None:
    with new_socket("127.0.0.1") as sock:
        got = size_receive_buffer(sock, 64 * 1024)
        assert got.requested == 64 * 1024
        assert got.granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # 64 KiB is below every Linux default of net.core.rmem_max (208 KiB).
        assert got.granted >= got.requested and not got.short


def test_port_range_sizes_each_socket() -> None:
    small = PortRange("127.0.0.1", 0, 0, rcvbuf=8192)
    large = PortRange("127.0.0.1", 0, 0)
    with small.bind() as a, large.bind() as b:
        got_a = a.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        got_b = b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert got_a < got_b


@linux_only
def test_kernel_drops_counts_what_a_full_queue_refused() -> None:
    with new_socket("127.0.0.1") as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        size_receive_buffer(rx, 4096)
        rx.bind(("127.0.0.1", 0))
        assert kernel_drops(rx) == 0
        sent = 200
        for _ in range(sent):
            tx.sendto(b"\x80" + bytes(171), rx.getsockname())
        rx.setblocking(False)
        read = len(drain_socket(rx))
        dropped = kernel_drops(rx)
        assert dropped > 0
        # Loopback loses nothing on the way: every datagram was read or dropped at the queue.
        assert read + dropped == sent
    assert kernel_drops(rx) == 0  # a closed socket says nothing


def _overflow(rx: socket.socket, tx: socket.socket, count: int) -> None:
    for _ in range(count):
        tx.sendto(b"\x80" + bytes(171), rx.getsockname())


@linux_only
def test_a_drop_counter_counts_from_its_start_and_outlives_the_socket() -> None:
    """A SIP segment's count: the relay's socket is older than the segment, and is closed
    when the call ends, maybe before the segment's last counters are read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx = new_socket("127.0.0.1")
        size_receive_buffer(rx, 4096)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        _overflow(rx, tx, 100)
        before = kernel_drops(rx)
        assert before > 0
        drain_socket(rx)
        segment = DropCounter([rx])
        assert segment.count() == 0
        _overflow(rx, tx, 100)
        during = kernel_drops(rx) - before
        assert during > 0 and segment.count() == during
        rx.close()
        assert segment.count() == during
