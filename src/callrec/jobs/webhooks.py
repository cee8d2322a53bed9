"""Webhooks: a signed POST to each ``webhook_url`` when a recording is completed, deleted or
held (docs/webhooks.md is the receiver's side).

The outbox is the job table: one job per (event, URL), keyed by the event's id, its payload
the event's body (made once, when the event happens). Each URL is a job kind of its own
(``webhook:<12 hex digits of the URL's SHA-256>``) with its own concurrency: an endpoint that
is slow or down delays only its own deliveries. A delivery is done when the endpoint answers
2xx within ``webhook_timeout``; otherwise it is retried with back-off for
``webhook_retry_hours``. Every attempt's answer (status, time taken, the first bytes of the
body) is in the job's history.

Each request carries ``Callrec-Event-Id`` (the same on every retry: receivers dedupe by it,
since a runner killed mid-delivery delivers again) and ``Callrec-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" under webhook_secret>``, as Stripe does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection

from callrec import __version__
from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog.jobs import JobInfo, enqueue_in
from callrec.config import Settings
from callrec.jobs.runner import JobFailed, JobKind, RetryPolicy

COMPLETED: Final = "recording.completed"
DELETED: Final = "recording.deleted"
HELD: Final = "recording.held"
EVENTS: Final = (COMPLETED, DELETED, HELD)

SIGNATURE_HEADER: Final = "Callrec-Signature"
EVENT_ID_HEADER: Final = "Callrec-Event-Id"
EVENT_TYPE_HEADER: Final = "Callrec-Event-Type"
#: Receivers should refuse a signature older than this (a replayed request).
TOLERANCE: Final = 300
#: Deliveries to one URL at once, in one process.
CONCURRENCY: Final = 4
#: Bytes of an endpoint's answer kept in the delivery's history.
ANSWER_BYTES: Final = 200
#: Events of recordings are named in this namespace: one event id per (recording, event).
_NAMESPACE = uuid.UUID("6f1c1a52-3b7e-4b0a-9d55-9f0b7b1c2e61")

#: The catalogue fields a webhook body carries, in this order.
FIELDS: Final = (
    "id",
    "uid",
    "source",
    "session_id",
    "device",
    "direction",
    "local_number",
    "local_name",
    "remote_number",
    "remote_name",
    "codec",
    "sample_rate",
    "channels",
    "start_time",
    "end_time",
    "duration",
    "size_bytes",
    "sha256",
    "path",
    "status",
    "stop_reason",
)


def kind_for(url: str) -> str:
    """The job kind of the deliveries to ``url``."""
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:12]


def event_id(event: str, recording: RecordingInfo) -> str:
    """The id of ``event`` about ``recording``: the same however often it is emitted."""
    return str(uuid.uuid5(_NAMESPACE, f"{recording.uid or recording.id}:{event}"))


def public_url(settings: Settings) -> str:
    """The base URL of the web UI for links: ``web_public_url``, else made from the web
    host and port (the host's name when it listens on every address)."""
    if settings.web_public_url:
        return settings.web_public_url.rstrip("/")
    tls = bool(settings.web_tls_cert) or settings.web_tls_self_signed
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{settings.web_port}"


def recording_fields(recording: RecordingInfo) -> dict[str, Any]:
    """The catalogue fields of a webhook body (datetimes in ISO 8601, UTC)."""
    fields: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(recording, name)
        fields[name] = value.isoformat() if isinstance(value, datetime) else value
    return fields


def event_body(
    event: str,
    recording: RecordingInfo,
    *,
    settings: Settings,
    created: datetime,
    id: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """The JSON body of ``event`` about ``recording`` (docs/webhooks.md, "Payload")."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    data = recording_fields(recording)
    data["download_url"] = f"{public_url(settings)}/api/v1/recordings/{recording.id}/download"
    body: dict[str, Any] = {
        "id": id or event_id(event, recording),
        "type": event,
        "created": created.astimezone(UTC).isoformat(),
        "data": {"recording": data},
    }
    if reason:
        body["data"]["reason"] = reason
    return body


def emit_in(
    connection: Connection,
    settings: Settings,
    event: str,
    recording: RecordingInfo,
    *,
    id: str | None = None,
    reason: str = "",
) -> int:
    """Queue ``event`` about ``recording`` for every ``webhook_url``, inside the caller's
    transaction (a delete's, a hold's): the event goes out if and only if it commits. How
    many deliveries were queued (0 without webhooks, or when this event id was queued).
    ``recording.held`` may happen more than once to a recording: give each its own ``id``
    (the hold's); the default id is one per (recording, event)."""
    if not settings.webhook_url:
        return 0
    body = event_body(
        event, recording, settings=settings, created=datetime.now(UTC), id=id, reason=reason
    )
    return sum(
        enqueue_in(connection, kind_for(url), body["id"], {"url": url, "event": body})
        for url in settings.webhook_url
    )


def emit(
    catalog: Catalog,
    settings: Settings,
    event: str,
    recording: RecordingInfo,
    *,
    id: str | None = None,
    reason: str = "",
) -> int:
    """:func:`emit_in` in a transaction of its own (blocking: run it off the event loop)."""
    if not settings.webhook_url:
        return 0
    with catalog.transaction(f"queue webhook {event}", write=True) as session:
        return emit_in(session.connection(), settings, event, recording, id=id, reason=reason)


def deliveries(
    settings: Settings, body: Mapping[str, Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    """The jobs (kind, key, payload) that deliver ``body`` to every ``webhook_url``."""
    return [
        (kind_for(url), str(body["id"]), {"url": url, "event": dict(body)})
        for url in settings.webhook_url
    ]


# -- signing ----------------------------------------------------------------------------------


def serialize(body: Mapping[str, Any]) -> bytes:
    """The bytes of a body: the same on every retry of a delivery."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Callrec-Signature`` header of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: int = TOLERANCE
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` and is at most ``tolerance``
    seconds old: what a receiver does (docs/webhooks.md has the same code to copy)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


# -- delivery ---------------------------------------------------------------------------------


class Delivery:
    """The handler of one URL's deliveries (blocking: it runs on its kind's threads)."""

    def __init__(self, *, secret: str, timeout: float) -> None:
        self.secret = secret
        self.timeout = timeout

    def __call__(self, job: JobInfo) -> str:
        url = str(job.payload["url"])
        body = serialize(job.payload["event"])
        event = job.payload["event"]
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
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                status = answer.status
                text = answer.read(ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            text = exc.read(ANSWER_BYTES) if exc.fp is not None else b""
            took = time.monotonic() - started
            raise JobFailed(f"HTTP {exc.code} in {took:.2f} s: {_shown(text)}") from None
        except TimeoutError:
            raise JobFailed(f"no answer within {self.timeout:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError | socket.timeout):
                raise JobFailed(f"no answer within {self.timeout:g} s") from None
            raise JobFailed(f"cannot reach {url}: {reason}") from None
        took = time.monotonic() - started
        if not 200 <= status < 300:
            raise JobFailed(f"HTTP {status} in {took:.2f} s: {_shown(text)}")
        return f"HTTP {status} in {took:.2f} s: {_shown(text)}"


def _shown(data: bytes) -> str:
    return data[:ANSWER_BYTES].decode("utf-8", "replace")


def webhook_kinds(settings: Settings, *, retry: RetryPolicy | None = None) -> list[JobKind]:
    """One job kind per ``webhook_url`` (``retry``: the policy, if not the settings')."""
    retry = retry or RetryPolicy(
        max_attempts=10_000,  # the age limit decides
        max_age=timedelta(hours=settings.webhook_retry_hours),
        first=10.0,
        cap=3600.0,
    )
    handler = Delivery(secret=settings.webhook_secret, timeout=settings.webhook_timeout)
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
