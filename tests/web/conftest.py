"""A real recording server with the web component on loopback, real recordings made by the
phone simulator, and users of every kind with API tokens (:mod:`tests.support.web`).

The module-scoped ``site`` is shared by the tests of a module (they run on one event loop);
tests that change recordings make their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.web import CALLS, Site, start_site, stop_site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    s = await start_site(tmp_path_factory.mktemp("site"))
    try:
        for name, call in CALLS.items():
            s.recs[name] = await s.record(**call)
        yield s
    finally:
        await stop_site(s)
