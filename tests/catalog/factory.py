"""Builders of test values with fixed, deterministic defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from callrec.catalog import NewRecording

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


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
