"""Modular arithmetic on RTP sequence numbers (16 bit) and timestamps (32 bit)."""

from __future__ import annotations

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number ``b`` to ``a`` (a - b), wrap-aware."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def ts_delta(a: int, b: int) -> int:
    """Signed distance from timestamp ``b`` to ``a`` (a - b), wrap-aware."""
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d


class SequenceExtender:
    """Turns 16-bit sequence numbers into a monotonic 64-bit index across wraps."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    def extend(self, seq: int) -> int:
        if self._highest is None:
            self._highest = seq
            return seq
        ext = self._highest + seq_delta(seq, self._highest % SEQ_MOD)
        if ext > self._highest:
            self._highest = ext
        return ext

    def reset(self) -> None:
        self._highest = None
