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

    __slots__ = ("highest",)

    def __init__(self) -> None:
        #: The highest index returned so far (None before the first). The stream core's fast
        #: path advances it by one itself for the next packet in order.
        self.highest: int | None = None

    def extend(self, seq: int) -> int:
        if self.highest is None:
            self.highest = seq
            return seq
        ext = self.highest + seq_delta(seq, self.highest % SEQ_MOD)
        if ext > self.highest:
            self.highest = ext
        return ext

    def reset(self) -> None:
        self.highest = None
