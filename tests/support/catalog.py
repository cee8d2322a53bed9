"""Catalogue rows with fixed, deterministic values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from callrec.catalog import Catalog, NewRecording, RecordingInfo

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def new_recording(n: int = 0, **overrides: Any) -> NewRecording:
    """The n-th recording of a made-up phone: distinct path, start n minutes after T0."""
    values: dict[str, Any] = {
        "session_id": str(15082 + n),
        "device": "0c383e0e709a",
        "direction": "in",
        "local_number": "201",
        "local_name": "Desk",
        "remote_number": f"0301234{n:03d}",
        "remote_name": "Caller",
        "codec": "PCMA",
        "peer_address": "192.0.2.10",
        "peer_port": 50000 + n,
        "media_port": 41000 + n,
        "start_time": T0 + timedelta(minutes=n),
        "sample_rate": 8000,
        "path": f"2026-03-01/in_{n}.wav",
    }
    values.update(overrides)
    return NewRecording(**values)


def finish_values(**overrides: Any) -> dict[str, Any]:
    """How a recording of an hour ends (phone stop, complete), as finish fields."""
    values: dict[str, Any] = {
        "status": "complete",
        "stop_reason": "phone_stop",
        "end_time": T0 + timedelta(hours=1),
        "duration": 60.0,
        "size_bytes": 960_044,
        "sha256": SHA,
        "counters": None,
    }
    values.update(overrides)
    return values


def get_row(catalog: Catalog, rec_id: int) -> RecordingInfo:
    """The row ``rec_id``, which must exist."""
    info = catalog.get(rec_id)
    assert info is not None
    return info
