"""Address spellings: one phone has one address, whichever socket family saw it."""

from __future__ import annotations

import pytest

from callrec.net import is_ipv6, plain_ip, plain_sockaddr, url_host


@pytest.mark.parametrize(
    ("seen", "kept"),
    [
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("::FFFF:10.1.2.3", "10.1.2.3"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("192.0.2.7", "192.0.2.7"),
        ("::1", "::1"),
        ("2001:db8::5", "2001:db8::5"),
        ("fe80::1%lo", "fe80::1%lo"),
        ("::ffff:not-an-address", "::ffff:not-an-address"),
        ("?", "?"),
        ("", ""),
    ],
)
def test_plain_ip(seen: str, kept: str) -> None:
    assert plain_ip(seen) == kept


def test_plain_sockaddr_of_both_families() -> None:
    assert plain_sockaddr(("::ffff:192.0.2.7", 5004, 0, 0)) == ("192.0.2.7", 5004)
    assert plain_sockaddr(("2001:db8::5", 5004, 0, 0)) == ("2001:db8::5", 5004)
    assert plain_sockaddr(("192.0.2.7", 5004)) == ("192.0.2.7", 5004)


def test_hosts_in_urls() -> None:
    assert url_host("::") == "[::]"
    assert url_host("2001:db8::5") == "[2001:db8::5]"
    assert url_host("[::1]") == "[::1]"
    assert url_host("192.0.2.7") == "192.0.2.7"
    assert is_ipv6("::") and is_ipv6("::1") and not is_ipv6("0.0.0.0")
