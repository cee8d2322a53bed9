"""Where a SIP message comes from or goes to: a transport and an address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Transports callrec speaks, as they appear in Via and ``transport=`` (lower case here).
TRANSPORTS: Final = ("udp", "tcp")


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote SIP endpoint: ``transport`` is ``udp`` or ``tcp``; ``host`` may be a name."""

    transport: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}")
        if not 0 < self.port <= 65535:
            raise ValueError(f"port {self.port} out of range")

    @property
    def reliable(self) -> bool:
        """Stream transports retransmit for us: no SIP-level retransmission timers."""
        return self.transport != "udp"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"
