"""Who may start recording now: the session limits and the disk reserve, for every source.

Answered from memory and one ``statvfs``, before anything is created. A recording is counted
from the moment it is admitted (while its row and file are still being made), so a burst of
starts cannot overshoot ``max_sessions`` while the first of them wait for the catalogue.
It also counts the starts that were refused, by reason, for ``/metrics``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from callrec.exceptions import ResourceError


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """Free bytes under the recordings, and the reserve that new work must leave free."""

    free: int
    reserve: int
    total: int


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted recording; give it back with :meth:`Admission.release`."""

    device: str
    counted: bool


class Admission:
    """Session limits (``max_sessions``, ``max_sessions_per_device``) and the disk reserve
    (``disk_reserve_bytes``, ``disk_reserve_percent``) of one engine."""

    def __init__(
        self,
        root: Path,
        *,
        max_sessions: int,
        max_sessions_per_device: int,
        disk_reserve_bytes: int,
        disk_reserve_percent: float,
    ) -> None:
        self.root = root
        self.max_sessions = max_sessions
        self.max_sessions_per_device = max_sessions_per_device
        self.disk_reserve_bytes = disk_reserve_bytes
        self.disk_reserve_percent = disk_reserve_percent
        self._sessions = 0
        self._per_device: Counter[str] = Counter()
        #: Recordings admitted and not yet finished, calls and imports alike.
        self.admitted = 0
        self.closing = False
        #: Starts refused since the process started, by the reason they were answered with
        #: (``busy``, ``disk_full``, ``unsupported_codec``, ``internal``). Each front end
        #: counts where it answers the refusal (:meth:`refuse`), so a start refused before
        #: the engine was asked (a codec nobody can record) counts as well as one refused here.
        self.refused: Counter[str] = Counter()
        #: Connections (and SIP requests) refused before any start, by (listener, reason):
        #: an address not allowed, too many connections from one address.
        self.refused_connections: Counter[tuple[str, str]] = Counter()

    def admit(self, device: str, *, live: bool = True) -> Ticket:
        """Admit a recording or raise :class:`ResourceError` with the answer's reason:
        ``busy`` (shutting down, or a limit reached) or ``disk_full`` (under the reserve).
        Only ``live`` recordings (calls) count against the session limits."""
        if self.closing:
            raise ResourceError("server is shutting down", reason="busy")
        if live:
            if self._sessions >= self.max_sessions:
                raise ResourceError(f"{self._sessions} sessions already", reason="busy")
            if self._per_device[device] >= self.max_sessions_per_device:
                raise ResourceError(
                    f"device {device!r} has {self._per_device[device]} sessions", reason="busy"
                )
        self.check_disk()
        if live:
            self._sessions += 1
            self._per_device[device] += 1
        self.admitted += 1
        return Ticket(device=device, counted=live)

    def release(self, ticket: Ticket) -> None:
        self.admitted -= 1
        if not ticket.counted:
            return
        self._sessions -= 1
        self._per_device[ticket.device] -= 1
        if self._per_device[ticket.device] <= 0:
            del self._per_device[ticket.device]

    def refuse(self, reason: str) -> None:
        """Count a start answered with a refusal for ``reason`` (see :attr:`refused`)."""
        self.refused[reason] += 1

    def refuse_connection(self, listener: str, reason: str) -> None:
        """Count a connection or request a front end (``control``, ``sip``) refused."""
        self.refused_connections[(listener, reason)] += 1

    def space(self) -> DiskSpace:
        """Free space and reserve under the recordings (one ``statvfs``); OSError when the
        directory cannot be looked at."""
        usage = shutil.disk_usage(self.root)
        reserve = max(self.disk_reserve_bytes, int(usage.total * self.disk_reserve_percent / 100))
        return DiskSpace(free=usage.free, reserve=reserve, total=usage.total)

    def check_disk(self) -> None:
        """Refuse new work while free space is under the reserve: running calls need it."""
        try:
            space = self.space()
        except OSError as exc:
            raise ResourceError(f"cannot stat {self.root}: {exc}", reason="disk_full") from exc
        if space.free < space.reserve:
            raise ResourceError(
                f"{space.free} bytes free under {self.root}, reserve is {space.reserve}",
                reason="disk_full",
            )
