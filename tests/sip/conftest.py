"""Fixtures: a recording server with its SIP side on loopback, and accounts to register."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.sip import SipEnv, start_env, stop_env


@pytest.fixture
async def sip_env(tmp_path: Path) -> AsyncIterator[SipEnv]:
    env = await start_env(tmp_path)
    try:
        yield env
    finally:
        await stop_env(env)
