"""Webhook events: their bodies, their signatures, and queueing them (docs/webhooks.md).

This module is what other parts call to emit an event (``recording.deleted`` from a delete
path, ``recording.held`` from a hold): :func:`emit_in` inside their own transaction, or
:func:`emit`. It needs no runner; :mod:`callrec.jobs.webhooks` delivers what it queues.

Each event is queued as one job per ``webhook_url`` (kind :func:`kind_for` the URL, key the
event's id), so emitting an event twice queues it once. The front ends may import this
module (and only this one of ``jobs/``) to emit events from their delete paths.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection

from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog.jobs import enqueue_in
from callrec.config import Settings

COMPLETED: Final = "recording.completed"
DELETED: Final = "recording.deleted"
HELD: Final = "recording.held"
EVENTS: Final = (COMPLETED, DELETED, HELD)

SIGNATURE_HEADER: Final = "Callrec-Signature"
EVENT_ID_HEADER: Final = "Callrec-Event-Id"
EVENT_TYPE_HEADER: Final = "Callrec-Event-Type"
#: Receivers should refuse a signature older than this (a replayed request).
TOLERANCE: Final = 300
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
