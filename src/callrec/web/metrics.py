"""Prometheus metrics at ``/metrics``: the recording engine's calls, packets and bytes (phone
sessions and SIP calls alike, with ``--workers`` those of every process), the catalogue's
recordings by status, the state of the catalogue and its journal, the refused starts and
connections (``callrec_refused_connections_total{listener,reason}``: an address not in an
allow-list, too many connections from one address), and the web server's own requests.

Engine figures are read when scraped (live recordings) or accumulated from the live view's
observer (finished recordings), so the counters are totals since the process started, as
Prometheus counters should be. The catalogue, journal, refusal and worker figures come from
the same look at the parts as ``/health`` (:mod:`callrec.web.health`): with ``--workers``
they add up every process's, as the media workers report them every few seconds.

A scrape never waits long for the catalogue: the count of recordings by status is made only
when the catalogue answered the health probe, with a time bound of its own, and is left out
(its failure logged once per episode) when it does not come.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callrec.access import RefusalLog
from callrec.catalog import STATUSES, Catalog, JobStore
from callrec.catalog.jobs import JOB_STATES
from callrec.catalog.records import utcnow
from callrec.engine import FINISHED, LiveSession, LiveView
from callrec.web.health import BoundedProbe, Episode, HealthReport

#: Packet counters exported as ``callrec_packets_<name>_total``.
PACKET_COUNTERS = (
    "received",
    "lost",
    "late",
    "duplicate",
    "foreign",
    "malformed",
    "other",
    "kernel_dropped",
)

#: Stream events exported as counters of their own: (counter, metric name, help).
STREAM_EVENTS = (
    (
        "latch_changes",
        "callrec_media_latch_changes",
        "Times a call's media latch moved to another source port of the phone's address.",
    ),
    ("ssrc_changes", "callrec_media_ssrc_changes", "Times a call's stream moved to a new SSRC."),
    (
        "clock_changes",
        "callrec_media_clock_changes",
        "Times a call's RTP clock was found to differ from the codec's nominal one.",
    ),
)
#: Why recordings end (exported at 0 before the first, so rates work).
END_REASONS = (
    "phone_stop",
    "connection_lost",
    "rtp_timeout",
    "max_duration",
    "shutdown",
)
#: The reasons a start is refused with (exported at 0 before the first, so rates work).
REFUSAL_REASONS = (
    "busy",
    "disk_full",
    "unsupported_codec",
    "internal",
    "forbidden",
    "too_many_sessions",
    "duplicate_id",
)
#: Connections (control), requests (SIP, web) refused before any start, by listener and
#: reason (exported at 0 before the first).
CONNECTION_REFUSALS = (
    ("control", "forbidden"),
    ("control", "too_many_connections"),
    ("control", "max_connections"),
    ("sip", "forbidden"),
    ("web", "forbidden"),
)
#: Seconds a scrape waits for the count of recordings by status.
COUNT_SECONDS = 2.0


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
        for counter, metric, text in STREAM_EVENTS:
            family = CounterMetricFamily(metric, text)
            family.add_metric(
                [], m.finished_packets[counter] + sum(s.counters.get(counter, 0) for s in live)
            )
            yield family
        ended = CounterMetricFamily(
            "callrec_recordings_ended",
            "Recordings finished since the server started, by why they ended.",
            labels=["reason"],
        )
        for reason in sorted(set(END_REASONS) | set(m.ended)):
            ended.add_metric([reason], m.ended.get(reason, 0))
        yield ended
        written = CounterMetricFamily(
            "callrec_audio_bytes_written",
            "Bytes of audio written to recordings since the server started.",
        )
        written.add_metric([], m.finished_bytes + sum(s.bytes_written for s in live))
        yield written
        if m.health is not None:
            yield from _health_metrics(m.health)
        yield _refused_connections(m)
        by_status = GaugeMetricFamily(
            "callrec_recordings", "Recordings in the catalogue, by status.", labels=["status"]
        )
        yield from _job_metrics(m)
        counts = m.status_counts
        if counts is None:
            return
        for status in sorted(STATUSES | set(counts)):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status


def _job_metrics(m: WebMetrics) -> Iterator[Metric]:
    """The job runner's figures (issue 16 part 3): jobs by kind and state and the age of the
    oldest queued one (from the catalogue, all processes), runs by outcome (this process)."""
    runs = CounterMetricFamily(
        "callrec_job_runs",
        "Job runs by this process since it started, by kind and outcome "
        "(done, retry, dead, deferred).",
        labels=["kind", "outcome"],
    )
    for (kind, outcome), count in sorted(m.job_runs().items()):
        runs.add_metric([kind, outcome], count)
    yield runs
    if m.job_figures is None:
        return
    counts, oldest = m.job_figures
    jobs = GaugeMetricFamily(
        "callrec_jobs", "Jobs in the catalogue, by kind and state.", labels=["kind", "state"]
    )
    for kind in sorted({k for k, _ in counts}):
        for state in JOB_STATES:
            jobs.add_metric([kind, state], counts.get((kind, state), 0))
    yield jobs
    age = GaugeMetricFamily(
        "callrec_jobs_oldest_queued_seconds",
        "Age of the oldest queued job of each kind (kinds with none queued: absent).",
        labels=["kind"],
    )
    now = utcnow()
    for kind, created in sorted(oldest.items()):
        age.add_metric([kind], max(0.0, (now - created).total_seconds()))
    yield age


def _refused_connections(m: WebMetrics) -> Metric:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    if m.health is not None:
        counts.update(m.health.refused_connections)
    if m.web_refusals is not None:
        counts.update({("web", reason): n for reason, n in m.web_refusals.counts.items()})
    family = CounterMetricFamily(
        "callrec_refused_connections",
        "Control connections, SIP and web requests refused since the server started (an "
        "address not allowed, too many connections from one address), by listener and reason.",
        labels=["listener", "reason"],
    )
    for listener, reason in sorted(set(CONNECTION_REFUSALS) | set(counts)):
        family.add_metric([listener, reason], counts.get((listener, reason), 0))
    return family


def _health_metrics(report: HealthReport) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "callrec_catalogue_up",
        "1 while the catalogue answers reads and takes the journal's writes, else 0.",
    )
    up.add_metric([], 1 if report.catalogue.state == "ok" else 0)
    yield up
    journal = report.journal
    if journal is not None:
        for name, text, value in (
            (
                "backlog",
                "Catalogue writes journaled and not yet in the catalogue.",
                journal.backlog,
            ),
            (
                "oldest_seconds",
                "Age of the oldest catalogue write not yet in the catalogue (0: none).",
                journal.oldest_age or 0.0,
            ),
            (
                "unwritten",
                "Catalogue writes the journal file could not take (kept in memory).",
                journal.unwritten,
            ),
        ):
            gauge = GaugeMetricFamily(f"callrec_journal_{name}", text)
            gauge.add_metric([], value)
            yield gauge
        failures = CounterMetricFamily(
            "callrec_journal_replay_failures",
            "Failed attempts to write the journal to the catalogue since the server started.",
        )
        failures.add_metric([], journal.failures)
        yield failures
    if report.refused_starts or report.journal is not None:
        refused = CounterMetricFamily(
            "callrec_refused_starts",
            "Starts of recordings refused since the server started, by reason.",
            labels=["reason"],
        )
        counts = report.refused_starts
        for reason in sorted(set(REFUSAL_REASONS) | set(counts)):
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
    if report.quota is not None:
        for name, text, value in (
            (
                "used_ratio",
                "Share of disk_quota the catalogued recordings take (warning from 0.9).",
                report.quota.ratio,
            ),
            ("bytes", "The disk quota, in bytes.", report.quota.limit),
            ("used_bytes", "Bytes the catalogued recordings take.", report.quota.used),
        ):
            gauge = GaugeMetricFamily(f"callrec_disk_quota_{name}", text)
            gauge.add_metric([], value)
            yield gauge
    storage = report.storage
    if storage is not None and storage.backlog is not None:
        for name, text, value in (
            (
                "backlog",
                "Finished recordings whose audio is not yet verified in the object store.",
                storage.backlog,
            ),
            (
                "oldest_unuploaded_seconds",
                "Seconds since the oldest of them ended (0: none waits).",
                storage.oldest_age or 0.0,
            ),
        ):
            gauge = GaugeMetricFamily(f"callrec_storage_{name}", text)
            gauge.add_metric([], value)
            yield gauge
    if report.workers is not None:
        for name, text, value in (
            ("expected", "Media worker processes configured.", report.workers.expected),
            ("alive", "Media worker processes running.", report.workers.alive),
        ):
            gauge = GaugeMetricFamily(f"callrec_workers_{name}", text)
            gauge.add_metric([], value)
            yield gauge


class WebMetrics:
    """One registry per web app (tests run several apps in one process)."""

    def __init__(
        self,
        catalog: Catalog,
        view: LiveView | None,
        *,
        job_runs: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.view = view
        self.job_runs: Callable[[], Mapping[tuple[str, str], int]] = job_runs or dict
        jobs = JobStore(catalog)
        self._job_probe = BoundedProbe(
            lambda: (jobs.counts(), jobs.oldest_queued()), timeout=COUNT_SECONDS, name="jobs"
        )
        self.job_figures: tuple[dict[tuple[str, str], int], dict[str, datetime]] | None = None
        self.finished_packets = dict.fromkeys(
            PACKET_COUNTERS + tuple(event[0] for event in STREAM_EVENTS), 0
        )
        self.ended: dict[str, int] = {}
        self.finished_bytes = 0
        #: What the collector reports; set by :meth:`render` just before collecting.
        self.live: list[LiveSession] = []
        self.status_counts: dict[str, int] | None = None
        self.health: HealthReport | None = None
        #: The web's own refusals (``web_allow``), counted by its middleware.
        self.web_refusals: RefusalLog | None = None
        self._counts = BoundedProbe(catalog.status_counts, timeout=COUNT_SECONDS, name="counts")
        self._counting = Episode("metrics: cannot count recordings by status")
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
            for name in self.finished_packets:
                self.finished_packets[name] += live.counters.get(name, 0)
            if live.stop_reason:
                self.ended[live.stop_reason] = self.ended.get(live.stop_reason, 0) + 1
            self.finished_bytes += live.bytes_written

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def render(self, health: HealthReport) -> bytes:
        """The exposition text, with ``health`` (the parts, looked at just before). Live
        sessions are read here, on the event loop that owns them; the catalogue count runs
        on a thread of its own with a time bound, and only when the catalogue answered."""
        self.health = health
        self.status_counts = None
        if health.catalogue.readable:
            try:
                self.status_counts = await self._counts()
            except Exception as exc:
                self._counting.failed(exc)
            else:
                self._counting.ok()
        self.job_figures = None
        if health.catalogue.readable:
            try:
                self.job_figures = await self._job_probe()
            except Exception as exc:
                self._counting.failed(exc)
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
