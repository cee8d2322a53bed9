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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Integer, String, bindparam, text

from callrec.catalog import Catalog, RecordingInfo, TombstoneInfo
from callrec.catalog.hooks import Recorded
from callrec.catalog.jobs import QUEUED, enqueue_in
from callrec.catalog.models import UTCDateTime
from callrec.catalog.policy import HoldInfo
from callrec.catalog.retirement import int_array, text_array
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
_SHA1_OF_NAMESPACE = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)

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
    return _event_id(event, recording.id, recording.uid)


def _event_id(event: str, rec_id: int, uid: str | None, suffix: str = "") -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))`` without the UUID object (a sweep makes a
    million of these; tests/jobs check it is the same)."""
    digest = _SHA1_OF_NAMESPACE.copy()
    digest.update(f"{uid or rec_id}:{event}{suffix}".encode())
    b = bytearray(digest.digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def held_event_id(rec_id: int, uid: str | None, hold_id: int) -> str:
    """The id of the ``recording.held`` event of one recording under one hold (a recording
    may be held again by a later hold: another event)."""
    return _event_id(HELD, rec_id, uid, f":{hold_id}")


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


# -- the events of deletes and holds, queued set-based ---------------------------------------
#
# A retention sweep deletes a million recordings: their events are written by the database
# from the rows (one INSERT ... SELECT per URL and batch), not made one by one in Python.
# The body is the same as event_body's but for the times, which always carry microseconds.

#: The ``data.recording`` fields, as SQL over the ``recordings`` row ``r``, per dialect.
_TIME = {
    "postgresql": "to_char(timezone('UTC', r.{c}), 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
    # Stored as naive UTC text, "YYYY-MM-DD HH:MM:SS.ffffff" (catalog.models.UTCDateTime).
    "sqlite": "replace(r.{c}, ' ', 'T') || '+00:00'",
}
_BUILD = {"postgresql": "jsonb_build_object", "sqlite": "json_object"}
#: The types of the other parameters.
_TYPES: dict[str, Any] = {
    "created": String(),
    "base": String(),
    "reason": String(),
    "held_by": String(),
    "hold_id": Integer(),
    "hold_kind": String(),
    "hold_value": String(),
}


def _recording_sql(dialect: str, *, download: bool) -> str:
    pairs = []
    for name in FIELDS:
        column = (
            _TIME[dialect].format(c=name) if name in ("start_time", "end_time") else f"r.{name}"
        )
        pairs.append(f"'{name}', {column}")
    if download:
        pairs.append("'download_url', :base || '/api/v1/recordings/' || r.id || '/download'")
    return f"{_BUILD[dialect]}({', '.join(pairs)})"


def _keyed_sql(dialect: str) -> str:
    """The rows ``e(id, key)`` (recording id, event id) that :meth:`WebhookEvents._queue`
    sends: two arrays on PostgreSQL, one JSON text on SQLite."""
    if dialect == "postgresql":
        return "unnest(CAST(:ids AS integer[]), CAST(:keys AS text[])) AS e(id, key)"
    return (
        "(SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS key"
        " FROM json_each(:pairs)) AS e"
    )


def _insert_sql(dialect: str, event: str, data: str, join: str) -> str:
    """INSERT of one job per row of ``e`` (:func:`_keyed_sql`) joined to its recording ``r``
    (and ``join``), its body ``{id, type, created, data}``."""
    build = _BUILD[dialect]
    rows = _keyed_sql(dialect)
    return (
        "INSERT INTO jobs (kind, key, payload, state, attempts, run_after, created_at)"
        f" SELECT :kind, e.key, {build}('url', :url, 'event', {build}("
        f"'id', e.key, 'type', '{event}', 'created', :created, 'data', {data}))"
        f", '{QUEUED}', 0, :now, :now"
        f" FROM {rows} JOIN recordings r ON r.id = e.id {join}"
        # WHERE: SQLite would read the ON of ON CONFLICT as the join's.
        " WHERE true ON CONFLICT (kind, key) DO NOTHING"
    )


#: The payload key of a ``recording.deleted`` job (instead of ``event``): its body is made at
#: delivery, from the tombstone.
_DELETED_REF: Final = "deleted"

#: The ``data.recording`` fields of a ``recording.deleted`` body: what its tombstone keeps.
DELETED_FIELDS: Final = (
    "id",
    "uid",
    "source",
    "device",
    "local_number",
    "remote_number",
    "start_time",
    "size_bytes",
    "sha256",
    "path",
)


def deleted_body(tomb: TombstoneInfo, id: str) -> dict[str, Any]:
    """The body of the ``recording.deleted`` event ``id`` of the tombstone ``tomb``
    (docs/webhooks.md): the same at every retry, a tombstone being never changed but for
    ``files_removed_at``."""
    recording: dict[str, Any] = {}
    for name in DELETED_FIELDS:
        value = tomb.recording_id if name == "id" else getattr(tomb, name)
        recording[name] = value.isoformat() if isinstance(value, datetime) else value
    return {
        "id": id,
        "type": DELETED,
        "created": tomb.deleted_at.astimezone(UTC).isoformat(),
        "data": {
            "recording": recording,
            "reason": tomb.reason,
            "deleted_by": tomb.deleted_by,
            "tombstone": tomb.id,
        },
    }


def job_event_type(payload: Mapping[str, Any]) -> str | None:
    """The event type a delivery job sends (for the jobs page), None for other jobs."""
    event = payload.get("event")
    if isinstance(event, Mapping):
        return str(event.get("type"))
    return DELETED if isinstance(payload.get(_DELETED_REF), Mapping) else None


def job_body(catalog: Catalog | None, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The event body a delivery job sends: its ``event``, or the ``recording.deleted``
    body made from the tombstone it names. :class:`ValueError` when it cannot be made."""
    if "event" in payload:
        return dict(payload["event"])
    ref = payload.get(_DELETED_REF)
    if not isinstance(ref, Mapping):
        raise ValueError("the job has no event")
    if catalog is None:
        raise ValueError("a recording.deleted delivery needs the catalogue")
    tomb = catalog.tombstone(int(ref["tombstone"]))
    if tomb is None:
        raise ValueError(f"tombstone {ref['tombstone']} is gone")
    return deleted_body(tomb, str(ref["id"]))


class WebhookEvents:
    """The :class:`callrec.catalog.hooks.RecordingEvents` of the webhooks: a
    ``recording.deleted`` or ``recording.held`` per recording and ``webhook_url``, queued in
    the transaction of the delete or the hold (docs/webhooks.md, "Payload")."""

    def __init__(self, settings: Settings) -> None:
        self.urls = tuple(dict.fromkeys(settings.webhook_url))
        self.settings = settings

    def _queue(
        self,
        connection: Connection,
        sql: str,
        keyed: Sequence[tuple[int, str]],
        params: dict[str, Any],
    ) -> int:
        if not keyed or not self.urls:
            return 0
        values: dict[str, Any] = {"now": datetime.now(UTC), **params}
        # Typed, so PostgreSQL knows each parameter's type inside jsonb_build_object, and
        # SQLite gets times as the catalogue stores them.
        binds = [
            bindparam(name, type_=UTCDateTime() if isinstance(value, datetime) else _TYPES[name])
            for name, value in values.items()
        ]
        binds += [bindparam("kind", type_=String()), bindparam("url", type_=String())]
        if connection.dialect.name == "postgresql":
            binds += [bindparam("ids", type_=String()), bindparam("keys", type_=String())]
            # As array literals (text): the driver's array adapter is slower, per element.
            values.update(ids=int_array(i for i, _ in keyed), keys=text_array(k for _, k in keyed))
        else:
            binds.append(bindparam("pairs", type_=String()))
            values["pairs"] = json.dumps(keyed)
        statement = text(sql).bindparams(*binds)
        queued = 0
        for url in self.urls:
            result = connection.execute(statement, {**values, "kind": kind_for(url), "url": url})
            queued += max(result.rowcount, 0)
        return queued

    def deleted(
        self, connection: Connection, recordings: Sequence[Recorded], deleted_at: datetime
    ) -> int:
        """``recording.deleted``: a job naming the event's id and the tombstone, from which
        the delivery makes the body (:func:`deleted_body`): the tombstone keeps what the
        body says, and a sweep of a million writes small rows, not a million bodies."""
        if not recordings or not self.urls:
            return 0
        dialect = connection.dialect.name
        build = _BUILD[dialect]
        rows = _keyed_sql(dialect)
        sql = (
            "INSERT INTO jobs (kind, key, payload, state, attempts, run_after, created_at)"
            f" SELECT :kind, e.key, {build}('url', :url, '{_DELETED_REF}',"
            f" {build}('id', e.key, 'tombstone', t.id)), '{QUEUED}', 0, :now, :now"
            f" FROM {rows}"
            " JOIN tombstones t ON t.recording_id = e.id AND t.deleted_at = :deleted_at"
            # WHERE: SQLite would read the ON of ON CONFLICT as the join's.
            " WHERE true ON CONFLICT (kind, key) DO NOTHING"
        )
        keyed = [(rec_id, _event_id(DELETED, rec_id, uid)) for rec_id, uid in recordings]
        return self._queue(connection, sql, keyed, {"deleted_at": deleted_at})

    def held(self, connection: Connection, hold: HoldInfo, recordings: Sequence[Recorded]) -> int:
        """``recording.held``: the catalogue fields with the download URL, the hold's reason,
        the admin who set it (``held_by``) and the hold (id, kind, value)."""
        dialect = connection.dialect.name
        build = _BUILD[dialect]
        data = (
            f"{build}('recording', {_recording_sql(dialect, download=True)},"
            f" 'reason', :reason, 'held_by', :held_by, 'hold',"
            f" {build}('id', :hold_id, 'kind', :hold_kind, 'value', :hold_value))"
        )
        sql = _insert_sql(dialect, HELD, data, "")
        keyed = [(rec_id, held_event_id(rec_id, uid, hold.id)) for rec_id, uid in recordings]
        params = {
            "created": hold.created_at.astimezone(UTC).isoformat(),
            # Made here, not per delete: it may ask the resolver for the host's name.
            "base": public_url(self.settings),
            "reason": hold.reason,
            "held_by": hold.created_by,
            "hold_id": hold.id,
            "hold_kind": hold.kind,
            "hold_value": hold.value,
        }
        return self._queue(connection, sql, keyed, params)


def webhook_events(settings: Settings) -> WebhookEvents | None:
    """The hook that queues ``recording.deleted`` and ``.held`` for the catalogue's delete
    and hold paths (``events=``); None without ``webhook_url``."""
    return WebhookEvents(settings) if settings.webhook_url else None


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
