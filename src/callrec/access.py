"""Who may talk to the server at all: address and device allow-lists, and refusals logged
once per episode.

:class:`AllowList` holds the networks one listener (phone control, SIP, web) takes requests
from; :class:`DeviceAllowList` the MAC addresses of the phones that may record through the
control port. Both are empty by default: everyone is allowed, as before the settings existed.
:class:`RefusalLog` keeps a refused peer from writing a log line per packet or per attempt:
the first refusal of a source for a reason is a warning, the repeats are counted and summed
up when the episode ends (or every few minutes while it lasts).

No I/O and no clock here: the callers pass the time in.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from callrec.exceptions import ConfigError
from callrec.net import plain_ip

logger = logging.getLogger(__name__)

#: Seconds without a refusal of the same source for the same reason that end its episode.
EPISODE_QUIET: Final = 60.0
#: Seconds between the "still refused" lines of an episode that goes on.
EPISODE_REPORT: Final = 300.0
#: Episodes tracked at once; refusals of further sources are summed up under one name, so a
#: spoofed or scanning flood cannot grow the table without bound.
MAX_EPISODES: Final = 1024
OTHER_SOURCES: Final = "(other sources)"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAC_SEPARATORS = re.compile(r"[\s:.\-]")
_HEX12 = re.compile(r"[0-9a-f]{12}")


def _plain_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` as an IP address, an IPv4-mapped IPv6 one (``::ffff:a.b.c.d``, what a
    dual-stack listener sees) as the IPv4 address; None when it is not an address at all."""
    try:
        return ipaddress.ip_address(plain_ip(address).split("%", 1)[0])
    except ValueError:
        return None


class AllowList:
    """The networks a listener accepts requests from; empty allows every address.

    Entries are addresses or networks in CIDR notation (``10.1.0.0/16``, ``192.0.2.7``,
    ``2001:db8::/32``); an IPv4-mapped IPv6 entry or peer is taken as its IPv4 address."""

    def __init__(self, entries: Iterable[str], *, setting: str = "allow-list") -> None:
        networks: list[_Network] = []
        for raw in entries:
            text = raw.strip()
            if not text:
                continue
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"{setting}: {text!r} is not an IP address or network (CIDR)"
                ) from exc
            if isinstance(network, ipaddress.IPv6Network):
                mapped = network.network_address.ipv4_mapped
                if mapped is not None and network.prefixlen >= 96:
                    network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
            networks.append(network)
        self.networks: tuple[_Network, ...] = tuple(networks)

    @property
    def networks_text(self) -> tuple[str, ...]:
        """The entries as CIDR text (for a sans-I/O core that takes them as settings)."""
        return tuple(str(n) for n in self.networks)

    @property
    def everyone(self) -> bool:
        """No entry: every address is allowed."""
        return not self.networks

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = _plain_ip(address)
        if ip is None:
            return False  # a peer we cannot even name (a UNIX socket) is not on the list
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __repr__(self) -> str:
        return f"AllowList({[str(n) for n in self.networks]!r})"


def normalise_mac(text: str) -> str | None:
    """A MAC address as the phones send it in ``device=`` (12 lower-case hex digits), from
    any common spelling (``00:1A:2B:3C:4D:5E``, ``00-1a-2b-3c-4d-5e``, ``001a.2b3c.4d5e``,
    ``001A2B3C4D5E``); None when it is not one."""
    plain = _MAC_SEPARATORS.sub("", text).lower()
    return plain if _HEX12.fullmatch(plain) else None


class DeviceAllowList:
    """The phones (MAC addresses) allowed to record through the control port; empty allows
    every device, and a start without a ``device`` only then."""

    def __init__(self, entries: Iterable[str], *, setting: str = "device allow-list") -> None:
        macs: set[str] = set()
        for raw in entries:
            if not raw.strip():
                continue
            mac = normalise_mac(raw)
            if mac is None:
                raise ConfigError(f"{setting}: {raw.strip()!r} is not a MAC address")
            macs.add(mac)
        self.macs: frozenset[str] = frozenset(macs)

    @property
    def everyone(self) -> bool:
        return not self.macs

    def allows(self, device: str) -> bool:
        if not self.macs:
            return True
        return normalise_mac(device) in self.macs


@dataclass(slots=True)
class _Episode:
    first: float
    last: float
    reported: float
    count: int = 1
    #: Refusals since the last line about this episode.
    unreported: int = 0


class RefusalLog:
    """Refusals of one listener (``control``, ``sip``, ``web``): counted by reason, and
    logged as a warning once per episode of a source and reason.

    An episode begins with a refusal and ends after :data:`EPISODE_QUIET` seconds without
    one from the same source for the same reason: then one line says how many refusals it
    held. An episode that goes on says so every :data:`EPISODE_REPORT` seconds.
    :meth:`sweep` ends the quiet episodes; :meth:`refused` sweeps too, so a listener
    without a timer of its own still gets its summaries, a little late."""

    def __init__(
        self,
        listener: str,
        *,
        quiet: float = EPISODE_QUIET,
        report_every: float = EPISODE_REPORT,
        max_episodes: int = MAX_EPISODES,
        log: logging.Logger = logger,
    ) -> None:
        self.listener = listener
        self.quiet = quiet
        self.report_every = report_every
        self.max_episodes = max_episodes
        self.log = log
        #: Refusals since the process started, by reason.
        self.counts: Counter[str] = Counter()
        self._episodes: dict[tuple[str, str], _Episode] = {}
        self._next_sweep = 0.0

    def refused(self, source: str, reason: str, detail: str, now: float) -> None:
        """Count one refusal of ``source`` for ``reason``; ``detail`` goes into the line that
        opens the episode."""
        self.counts[reason] += 1
        if now >= self._next_sweep:
            self.sweep(now)
        key = (source, reason)
        episode = self._episodes.get(key)
        if episode is None and len(self._episodes) >= self.max_episodes:
            self.sweep(now)
            if len(self._episodes) >= self.max_episodes:
                key = (OTHER_SOURCES, reason)
                episode = self._episodes.get(key)
        if episode is None:
            self._episodes[key] = _Episode(first=now, last=now, reported=now)
            self.log.warning(
                "%s: refused %s (%s): %s; repeats are counted, and summed up once %g s pass "
                "without one",
                self.listener,
                key[0],
                reason,
                detail,
                self.quiet,
            )
            return
        episode.count += 1
        episode.unreported += 1
        episode.last = now
        if now - episode.reported >= self.report_every:
            self.log.warning(
                "%s: still refusing %s (%s): %d more in the last %.0f s, %d since %.0f s ago",
                self.listener,
                key[0],
                reason,
                episode.unreported,
                now - episode.reported,
                episode.count,
                now - episode.first,
            )
            episode.reported = now
            episode.unreported = 0

    def sweep(self, now: float) -> None:
        """End the episodes quiet for :attr:`quiet` seconds, with a line for those that held
        more than their first refusal."""
        self._next_sweep = now + min(self.quiet, 1.0)
        for key, episode in list(self._episodes.items()):
            if now - episode.last < self.quiet:
                continue
            del self._episodes[key]
            if episode.count > 1:
                self.log.warning(
                    "%s: %s (%s) was refused %d times in %.0f s; none for %.0f s now",
                    self.listener,
                    key[0],
                    key[1],
                    episode.count,
                    episode.last - episode.first,
                    now - episode.last,
                )

    @property
    def open_episodes(self) -> int:
        return len(self._episodes)
