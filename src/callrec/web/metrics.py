"""Prometheus metrics at ``/metrics``: the recording engine's calls, packets and bytes (phone
sessions and SIP calls alike, with ``--workers`` those of every process), the catalogue's
recordings by status, and the web server's own requests.

Engine figures are read when scraped (live recordings) or accumulated from the live view's
observer (finished recordings), so the counters are totals since the process started, as
Prometheus counters should be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callrec.catalog import STATUSES, Catalog
from callrec.engine import FINISHED, LiveSession, LiveView
from callrec.exceptions import CatalogError

logger = logging.getLogger(__name__)

#: Packet counters exported as ``callrec_packets_<name>_total``.
PACKET_COUNTERS = (
    "received",
    "lost",
    "late",
    "duplicate",
    "foreign",
    "malformed",
    "other",
)


class _CoreCollector(Collector):
    def __init__(self, metrics: WebMetrics) -> None:
        self._m = metrics

    def describe(self) -> Iterator[Metric]:
        # Nothing up front: the registry would otherwise call collect() (and query the
        # catalogue) when the collector is registered.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        m = self._m
        live = m.live
        active = GaugeMetricFamily("callrec_sessions_active", "Calls being recorded now.")
        active.add_metric([], len(live))
        yield active
        total = CounterMetricFamily(
            "callrec_sessions", "Recording sessions started since the server started."
        )
        total.add_metric([], m.view.total_sessions if m.view is not None else 0)
        yield total
        for name in PACKET_COUNTERS:
            family = CounterMetricFamily(
                f"callrec_packets_{name}",
                f"RTP packets counted as {name} by every session since the server started.",
            )
            family.add_metric([], m.finished_packets[name] + sum(s.counters[name] for s in live))
            yield family
        written = CounterMetricFamily(
            "callrec_audio_bytes_written",
            "Bytes of audio written to recordings since the server started.",
        )
        written.add_metric([], m.finished_bytes + sum(s.bytes_written for s in live))
        yield written
        by_status = GaugeMetricFamily(
            "callrec_recordings", "Recordings in the catalogue, by status.", labels=["status"]
        )
        counts = m.status_counts
        if counts is None:
            return
        for status in sorted(STATUSES | set(counts)):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status


class WebMetrics:
    """One registry per web app (tests run several apps in one process)."""

    def __init__(self, catalog: Catalog, view: LiveView | None) -> None:
        self.catalog = catalog
        self.view = view
        self.finished_packets = dict.fromkeys(PACKET_COUNTERS, 0)
        self.finished_bytes = 0
        #: What the collector reports; set by :meth:`render` just before collecting.
        self.live: list[LiveSession] = []
        self.status_counts: dict[str, int] | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "callrec_http_requests",
            "HTTP requests answered by the web server.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "callrec_http_request_duration_seconds",
            "Time to the response's first byte.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(_CoreCollector(self))
        self._unsubscribe: Callable[[], None] | None = None
        if view is not None:
            self._unsubscribe = view.add_observer(self._on_session)

    def _on_session(self, event: str, live: LiveSession) -> None:
        if event == FINISHED:
            for name in PACKET_COUNTERS:
                self.finished_packets[name] += live.counters.get(name, 0)
            self.finished_bytes += live.bytes_written

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def render(self, db: Callable[..., Awaitable[Any]]) -> bytes:
        """The exposition text. Live sessions are read here, on the event loop that owns
        them; the catalogue count runs through ``db`` (a worker thread)."""
        try:
            self.status_counts = await db(self.catalog.status_counts)
        except CatalogError:
            logger.exception("cannot count recordings for the metrics")
            self.status_counts = None
        self.live = self.view.live_sessions() if self.view is not None else []
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware counting requests by route template (not by raw path, which would
        make a label value per recording)."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            begin = time.perf_counter()
            status = 500

            async def send_and_count(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    self.http_seconds.labels(scope["method"], _route(scope)).observe(
                        time.perf_counter() - begin
                    )
                await send(message)

            try:
                await app(scope, receive, send_and_count)
            finally:
                self.http_requests.labels(scope["method"], _route(scope), str(status)).inc()

        return counted


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
