"""Addresses and sockets the same way for every front end: IPv4, IPv6 and dual stack.

A front end listening on ``::`` sees an IPv4 phone as ``::ffff:a.b.c.d``; everything callrec
compares or stores (the phone's address, the source of its RTP, the catalogue's
``peer_address``) uses the plain form :func:`plain_ip` gives, so the two spellings of one
phone never differ. :mod:`callrec.net.sockets` makes the sockets (dual stack for ``::``) and
reads what the kernel dropped on them.
"""

from __future__ import annotations

from callrec.net.addresses import is_ipv6, plain_ip, plain_sockaddr, sendable, url_host
from callrec.net.sockets import (
    DropCounter,
    ReceiveBuffer,
    kernel_drops,
    new_socket,
    size_receive_buffer,
)

__all__ = [
    "DropCounter",
    "ReceiveBuffer",
    "is_ipv6",
    "kernel_drops",
    "new_socket",
    "plain_ip",
    "plain_sockaddr",
    "sendable",
    "size_receive_buffer",
    "url_host",
]
