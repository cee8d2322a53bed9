"""Rows to plain values: each ORM row becomes the frozen dataclass the catalogue hands out.

Kept apart from the queries so that every query module (:mod:`callrec.catalog.reads`,
:mod:`callrec.catalog.webaccounts`, :mod:`callrec.catalog.browsing`) maps rows the same way
without importing the others.
"""

from __future__ import annotations

from callrec.catalog.models import Recording
from callrec.catalog.records import RecordingInfo
from callrec.catalog.webmodels import ApiToken, AuditEntry, Note, User
from callrec.catalog.webrecords import AuditInfo, NoteInfo, TokenInfo, UserInfo


def recording_info(row: Recording) -> RecordingInfo:
    return RecordingInfo(
        id=row.id,
        uid=row.uid,
        source=row.source,
        session_id=row.session_id,
        device=row.device,
        direction=row.direction,
        local_number=row.local_number,
        local_name=row.local_name,
        remote_number=row.remote_number,
        remote_name=row.remote_name,
        codec=row.codec,
        peer_address=row.peer_address,
        peer_port=row.peer_port,
        media_port=row.media_port,
        start_time=row.start_time,
        end_time=row.end_time,
        duration=row.duration,
        sample_rate=row.sample_rate,
        channels=row.channels,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        path=row.path,
        status=row.status,
        stop_reason=row.stop_reason,
        phone_stop_reason=row.phone_stop_reason,
        extra=dict(row.extra),
        original_path=row.original_path,
        original_sha256=row.original_sha256,
        packets_received=row.packets_received,
        packets_lost=row.packets_lost,
        packets_late=row.packets_late,
        packets_duplicate=row.packets_duplicate,
        packets_foreign=row.packets_foreign,
        packets_malformed=row.packets_malformed,
        packets_other=row.packets_other,
        ssrc_changes=row.ssrc_changes,
        packets_kernel_dropped=row.packets_kernel_dropped,
        clock_changes=row.clock_changes,
        latch_changes=row.latch_changes,
        created_at=row.created_at,
        updated_at=row.updated_at,
        node=row.node,
    )


def user_info(row: User) -> UserInfo:
    return UserInfo(
        id=row.id,
        username=row.username,
        role=row.role,
        extensions=tuple(row.extensions or ()),
        devices=tuple(row.devices or ()),
        must_change_password=bool(row.must_change_password),
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


def token_info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user_id=row.user_id,
        username=username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
    )


def audit_info(row: AuditEntry) -> AuditInfo:
    return AuditInfo(
        id=row.id,
        at=row.at,
        user_id=row.user_id,
        username=row.username,
        action=row.action,
        recording_id=row.recording_id,
        client_address=row.client_address,
        detail=dict(row.detail or {}),
    )


def note_info(row: Note) -> NoteInfo:
    return NoteInfo(
        id=row.id,
        recording_id=row.recording_id,
        user_id=row.user_id,
        username=row.username,
        text=row.text,
        created_at=row.created_at,
    )
