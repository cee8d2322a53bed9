"""Webhooks: a signed POST to each ``webhook_url`` when a recording is completed, deleted or
held (docs/webhooks.md is the receiver's side; :mod:`callrec.jobs.events` makes and queues
the events).

The outbox is the job table: one job per (event, URL), keyed by the event's id, its payload
the event's body (made once, when the event happens). Each URL is a job kind of its own
(``webhook:<12 hex digits of the URL's SHA-256>``) with its own concurrency: an endpoint that
is slow or down delays only its own deliveries. A delivery is done when the endpoint answers
2xx within ``webhook_timeout``; otherwise it is retried with back-off for
``webhook_retry_hours``. Every attempt's answer (status, time taken, the first bytes of the
body) is in the job's history. Redirects are not followed (a 3xx is a failed delivery: a
redirected POST would lose its body). ``webhook_timeout`` bounds the whole delivery, not each
socket operation: an endpoint that answers a byte at a time is cut off like a silent one (it
would otherwise hold one of its URL's slots, and outlive the job's lease: delivered twice).

Each request carries ``Callrec-Event-Id`` (the same on every retry: receivers dedupe by it,
since a runner killed mid-delivery delivers again) and ``Callrec-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under webhook_secret>``, as Stripe does.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any, Final

from callrec import __version__
from callrec.catalog import Catalog
from callrec.catalog.jobs import JobInfo
from callrec.config import Settings
from callrec.exceptions import CatalogError
from callrec.jobs.events import (
    COMPLETED,
    DELETED,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    EVENTS,
    HELD,
    SIGNATURE_HEADER,
    deliveries,
    emit,
    emit_in,
    event_body,
    event_id,
    job_body,
    kind_for,
    public_url,
    serialize,
    sign,
    verify,
)
from callrec.jobs.runner import JobFailed, JobKind, RetryPolicy

__all__ = [
    "COMPLETED",
    "CONCURRENCY",
    "DELETED",
    "EVENTS",
    "HELD",
    "Delivery",
    "deliveries",
    "emit",
    "emit_in",
    "event_body",
    "event_id",
    "kind_for",
    "public_url",
    "sign",
    "verify",
    "webhook_kinds",
]

#: Deliveries to one URL at once, in one process.
CONCURRENCY: Final = 4
#: Bytes of an endpoint's answer kept in the delivery's history.
ANSWER_BYTES: Final = 200


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError: a failed delivery


class _Deadline:
    """Shuts the delivery's sockets down when its time is up: a blocked read or write then
    fails at once, whatever stage the request is in."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _WatchedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._deadline.watch(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTP, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTPS, deadline=self._deadline), req)


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment included), redirects refused, every
    connection it makes watched by ``deadline``."""
    return urllib.request.build_opener(_NoRedirect, _HTTPHandler(deadline), _HTTPSHandler(deadline))


class Delivery:
    """The handler of one URL's deliveries (blocking: it runs on its kind's threads)."""

    def __init__(self, *, secret: str, timeout: float, catalog: Catalog | None = None) -> None:
        self.secret = secret
        self.timeout = timeout
        #: Where the bodies of ``recording.deleted`` jobs come from (their tombstones).
        self.catalog = catalog

    def __call__(self, job: JobInfo) -> str:
        url = str(job.payload["url"])
        try:
            event = job_body(self.catalog, job.payload)
        except (ValueError, KeyError, CatalogError) as exc:
            raise JobFailed(f"cannot make the event's body: {exc}") from None
        body = serialize(event)
        timestamp = int(time.time())
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"callrec/{__version__}",
                EVENT_ID_HEADER: str(event["id"]),
                EVENT_TYPE_HEADER: str(event["type"]),
                SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            },
        )
        started = time.monotonic()
        with _Deadline(self.timeout) as deadline:
            try:
                status, text = self._post(request, deadline)
            except urllib.error.HTTPError as exc:
                text = exc.read(ANSWER_BYTES) if exc.fp is not None else b""
                if deadline.expired:
                    raise JobFailed(f"no answer within {self.timeout:g} s") from None
                took = time.monotonic() - started
                raise JobFailed(f"HTTP {exc.code} in {took:.2f} s: {_shown(text)}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if deadline.expired or isinstance(reason, TimeoutError | socket.timeout):
                    raise JobFailed(f"no answer within {self.timeout:g} s") from None
                raise JobFailed(f"cannot reach {url}: {reason}") from None
        took = time.monotonic() - started
        if not 200 <= status < 300:
            raise JobFailed(f"HTTP {status} in {took:.2f} s: {_shown(text)}")
        return f"HTTP {status} in {took:.2f} s: {_shown(text)}"

    def _post(self, request: urllib.request.Request, deadline: _Deadline) -> tuple[int, bytes]:
        with _opener(deadline).open(request, timeout=self.timeout) as answer:
            status, text = answer.status, answer.read(ANSWER_BYTES)
        if deadline.expired:
            # The read ended because the socket was shut: a truncated answer is no answer.
            raise TimeoutError
        return status, text


def _shown(data: bytes) -> str:
    return data[:ANSWER_BYTES].decode("utf-8", "replace")


def webhook_kinds(
    settings: Settings, *, retry: RetryPolicy | None = None, catalog: Catalog | None = None
) -> list[JobKind]:
    """One job kind per ``webhook_url`` (``retry``: the policy, if not the settings';
    ``catalog``: where ``recording.deleted`` bodies are made, from their tombstones)."""
    retry = retry or RetryPolicy(
        max_attempts=10_000,  # the age limit decides
        max_age=timedelta(hours=settings.webhook_retry_hours),
        first=10.0,
        cap=3600.0,
    )
    handler = Delivery(
        secret=settings.webhook_secret, timeout=settings.webhook_timeout, catalog=catalog
    )
    return [
        JobKind(
            name=kind_for(url),
            handler=handler,
            concurrency=CONCURRENCY,
            retry=retry,
            # Renewed while a delivery runs; a killed runner's delivery is taken again
            # after this, or at once by the next start on the same host.
            lease=timedelta(seconds=max(30.0, 3 * settings.webhook_timeout)),
        )
        for url in dict.fromkeys(settings.webhook_url)
    ]
