"""An archived recording (issue 16, part 4) in headless Chromium: the page says it was
archived, and the player plays its FLAC or Ogg Opus file, knows its length, and seeks in it
(the server's byte ranges), as it does a WAV."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from callrec.engine.archive import archive_sweep
from tests.support.web import CALLS, USERS, Site, start_site, stop_site
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.asyncio(loop_scope="module")


if not Path(CHROMIUM).is_file():  # `make test` installs it (Makefile APT_PACKAGES)
    pytest.fail(f"chromium is not installed at {CHROMIUM}: run `make sysdeps`", pytrace=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def archived_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    site = await start_site(tmp_path_factory.mktemp("archived-browser"))
    try:
        for name in ("alice", "ivan"):
            site.recs[name] = await site.record(**CALLS[name])
        settings = dataclasses.replace(site.server.settings, archive_after_days=0)
        for name, fmt in (("alice", "flac"), ("ivan", "opus")):
            report = archive_sweep(
                site.catalog, settings, datetime.now(UTC), ids=[site.recs[name]], fmt=fmt
            )
            assert [o.result for o in report.outcomes] == ["archived"]
        yield site
    finally:
        await stop_site(site)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1360, "height": 860},
        )
        context.set_default_timeout(WAIT)
        try:
            yield context
        finally:
            await context.close()


@pytest.mark.parametrize(
    ("name", "fmt", "seconds"), [("alice", "FLAC", 2.0), ("ivan", "OPUS", 3.0)]
)
async def test_an_archived_recording_plays_and_seeks(
    archived_site: Site, browser: object, name: str, fmt: str, seconds: float
) -> None:
    site = archived_site
    page = await browser.new_page()  # type: ignore[attr-defined]
    username, password, *_ = USERS["listener"]
    await page.context.clear_cookies()
    await page.goto(f"{site.base}/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.base}/recordings")
    rec_id = site.recs[name]
    await page.goto(f"{site.base}/recordings/{rec_id}")
    await page.wait_for_selector("#player[data-ready='1']")
    assert int(await page.get_attribute("#player", "data-peaks") or 0) > 100
    assert f"archived as {fmt} on" in await page.inner_text("p.sub")

    await page.evaluate("document.getElementById('audio').play()")
    await page.wait_for_function("() => document.getElementById('audio').currentTime > 0.1")
    duration = await page.evaluate("document.getElementById('audio').duration")
    assert duration == pytest.approx(seconds, abs=0.05)
    # Seek by clicking three quarters into the waveform.
    box = await page.locator("#wave").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    await page.wait_for_function(
        "s => { const a = document.getElementById('audio');"
        " return a.currentTime >= s * 0.7 || a.ended; }",
        arg=seconds,
    )
    state = await page.evaluate(
        "(() => { const a = document.getElementById('audio');"
        " return {error: a.error && a.error.code, seekable: a.seekable.length ?"
        " a.seekable.end(0) : 0}; })()"
    )
    assert state["error"] is None
    assert state["seekable"] == pytest.approx(seconds, abs=0.05)  # the server does ranges
    await page.close()
