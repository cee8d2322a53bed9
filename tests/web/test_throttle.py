"""The sign-in throttle's counts, with the clock passed in (issue 15): per address and name,
per name from any address, and the address's ceiling for made-up names."""

from __future__ import annotations

from callrec.web.security import LoginThrottle


def test_throttle_counts_per_address_and_name() -> None:
    throttle = LoginThrottle(limit=3, name_limit=5, address_limit=4, window=100.0)
    for t in range(3):
        throttle.failed("alice", "10.0.0.1", known=True, now=float(t))
    assert throttle.wait("alice", "10.0.0.1", now=3.0) == 97.0  # the oldest leaves at 100
    assert throttle.wait("alice", "10.0.0.2", now=3.0) == 0.0  # another address: fine
    assert throttle.wait("bob", "10.0.0.1", now=3.0) == 0.0  # another name: fine
    # Spread over addresses, an existing name is blocked everywhere at name_limit.
    throttle.failed("alice", "10.0.0.3", known=True, now=4.0)
    throttle.failed("alice", "10.0.0.4", known=True, now=5.0)
    assert throttle.wait("alice", "10.0.0.9", now=6.0) == 94.0
    # Made-up names count only towards their address's ceiling.
    for t in range(4):
        throttle.failed(f"ghost{t}", "10.0.0.5", known=False, now=float(t))
    assert throttle.wait("ghost9", "10.0.0.9", now=5.0) == 0.0
    assert throttle.address_wait("10.0.0.5", now=5.0) == 95.0
    assert throttle.wait("carol", "10.0.0.5", now=5.0) == 0.0  # a real user still may try
    throttle.succeeded("alice", "10.0.0.1")
    assert throttle.wait("alice", "10.0.0.1", now=6.0) == 94.0  # the name's count stays
    assert throttle.wait("alice", "10.0.0.9", now=200.0) == 0.0  # the window moved on
    assert throttle.address_wait("10.0.0.5", now=200.0) == 0.0
