from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from callrec.config import Settings
from callrec.service import Service


def server_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        control_host="127.0.0.1",
        control_port=0,
        media_host="127.0.0.1",
        media_port_min=0,
        media_port_max=0,
        recordings_dir=tmp_path / "recordings",
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        sync_interval=0.1,
        # The phone front end alone unless a test asks for more.
        web_enabled=False,
        sip_enabled=False,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Service]:
    srv = Service(server_settings(tmp_path))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def speech_like_signal(seconds: float, rate: int, seed: int = 7) -> np.ndarray:
    """A deterministic speech-like test signal: two tones, a chirp and some noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = (
        0.25 * np.sin(2 * np.pi * 440 * t)
        + 0.15 * np.sin(2 * np.pi * 1250 * t)
        + 0.1 * np.sin(2 * np.pi * (200 + 600 * t) * t)
        + 0.02 * rng.standard_normal(t.size)
    )
    return np.clip(x * 32767, -32768, 32767).astype(np.int16)
