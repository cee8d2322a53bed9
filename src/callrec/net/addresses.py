"""IP address spellings: IPv4-mapped IPv6 addresses to plain IPv4, hosts in URLs."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

#: The wildcard addresses: listen on every interface (``::`` is dual stack in callrec).
ANY_HOSTS = frozenset({"0.0.0.0", "::", ""})


def plain_ip(address: str) -> str:
    """``address`` as callrec keeps it: an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a
    dual-stack socket reports for an IPv4 peer) becomes ``a.b.c.d``; an IPv6 scope
    (``fe80::1%eth0``) and any other text are kept as they are."""
    if not address.startswith("::ffff:") and not address.startswith("::FFFF:"):
        return address  # the common case costs one string test: this runs per RTP packet
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    mapped = ip.ipv4_mapped
    return str(mapped) if mapped is not None else address


def plain_sockaddr(sockaddr: Any) -> tuple[str, int]:
    """(plain ip, port) of a socket address of either family (IPv6 gives 4 items)."""
    return plain_ip(str(sockaddr[0])), int(sockaddr[1])


def sendable(family: int, address: tuple[str, int]) -> tuple[str, int]:
    """``address`` as a socket of ``family`` can send to it: a dual-stack (AF_INET6) socket
    takes an IPv4 peer only in its mapped form, the reverse of :func:`plain_ip`."""
    host = address[0]
    if family == socket.AF_INET6 and ":" not in host:
        return (f"::ffff:{host}", address[1])
    return address


def is_ipv6(host: str) -> bool:
    """True when ``host`` needs an IPv6 socket (``::``, ``::1``, ``2001:db8::5``)."""
    return ":" in host


def url_host(host: str) -> str:
    """``host`` as it goes in a URL or a SIP URI: an IPv6 address in brackets."""
    return f"[{host}]" if is_ipv6(host) and not host.startswith("[") else host
