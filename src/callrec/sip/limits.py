"""Per-source request rates of the SIP listeners, without I/O: the clock is passed in.

One address may send ``max_per_second`` requests in each one-second window; the first over
that in a window is answered 503 with Retry-After (so a misbehaving phone learns to back off),
and the rest of the window's excess is dropped unanswered over UDP (a flood, possibly from a
spoofed address, must not turn callrec into a reflector) and answered over TCP (the peer
proved its address with the handshake).
"""

from __future__ import annotations

import enum
from typing import Final

#: Sources tracked at once; past it the windows that are over are forgotten first, then all.
MAX_SOURCES: Final = 8192


class Verdict(enum.Enum):
    ADMIT = "admit"
    REFUSE = "refuse"  # answer 503 with Retry-After
    DROP = "drop"


class RateLimiter:
    """Requests per second per source address; ``max_per_second`` 0 admits everything."""

    def __init__(self, max_per_second: int, *, max_sources: int = MAX_SOURCES) -> None:
        self.max_per_second = max_per_second
        self.max_sources = max_sources
        self._windows: dict[str, tuple[int, int]] = {}

    def check(self, source: str, now: float, *, reliable: bool) -> Verdict:
        if self.max_per_second <= 0:
            return Verdict.ADMIT
        window = int(now)
        start, count = self._windows.get(source, (window, 0))
        if start != window:
            count = 0
        count += 1
        if source not in self._windows and len(self._windows) >= self.max_sources:
            self._forget(window)
        self._windows[source] = (window, count)
        if count <= self.max_per_second:
            return Verdict.ADMIT
        if count == self.max_per_second + 1 or reliable:
            return Verdict.REFUSE
        return Verdict.DROP

    def _forget(self, window: int) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        if len(self._windows) >= self.max_sources:
            self._windows.clear()
