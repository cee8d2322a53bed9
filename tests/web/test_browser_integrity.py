"""The recording page's Integrity block in headless Chromium (Playwright): an admin presses
Verify now, sees the file intact, then, after a byte of it is flipped, sees it named altered;
a listener sees the state but no button."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from callrec.integrity.verify import state
from tests.support.waiting import wait_for
from tests.support.web import CALLS, USERS, Site, start_site, stop_site

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: As tests/web/test_browser.py: a hermetic headless browser.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio"]
WAIT = 15_000  # ms; generous for a loaded 2-core machine, never a timing assertion

if not Path(CHROMIUM).is_file():  # `make test` installs it (Makefile APT_PACKAGES)
    pytest.fail(f"chromium is not installed at {CHROMIUM}: run `make sysdeps`", pytrace=False)


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = await start_site(tmp_path / "site", integrity_sign_interval=0.2)
    try:
        s.recs["alice"] = await s.record(**CALLS["alice"])
        yield s
    finally:
        await stop_site(s)


@pytest_asyncio.fixture
async def page(tmp_path: Path) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            locale="en-GB",
        )
        context.set_default_timeout(WAIT)
        try:
            yield await context.new_page()
        finally:
            await context.close()


async def sign_in(page: object, site: Site, who: str) -> None:
    name, password, *_ = USERS[who]
    await page.context.clear_cookies()  # type: ignore[attr-defined]
    await page.goto(f"{site.base}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=username]", name)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    await page.click("button[type=submit]")  # type: ignore[attr-defined]
    await page.wait_for_url(f"{site.base}/recordings")  # type: ignore[attr-defined]


async def test_admin_verifies_a_recording_in_the_browser(site: Site, page: object) -> None:
    rec_id = site.recs["alice"]
    await wait_for(lambda: state(site.catalog, rec_id).covered, what="the chain signed")
    await sign_in(page, site, "listener")
    await page.goto(f"{site.base}/recordings/{rec_id}")  # type: ignore[attr-defined]
    block = await page.inner_text("#integrity")  # type: ignore[attr-defined]
    assert "entry #1" in block and "up to #1" in block and "never" in block
    assert await page.locator("#integrity button").count() == 0  # type: ignore[attr-defined]

    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/recordings/{rec_id}")  # type: ignore[attr-defined]
    await page.click("#integrity button:has-text('Verify now')")  # type: ignore[attr-defined]
    await page.wait_for_selector("#integrity [data-integrity=ok]")  # type: ignore[attr-defined]
    assert "intact" in await page.inner_text("#integrity h2")  # type: ignore[attr-defined]

    rec = site.catalog.get(rec_id)
    assert rec is not None
    with (site.server.root / rec.path).open("r+b") as file:
        file.seek(300)
        byte = file.read(1)
        file.seek(300)
        file.write(bytes([byte[0] ^ 0x10]))
    await page.click("#integrity button:has-text('Verify now')")  # type: ignore[attr-defined]
    await page.wait_for_selector("#integrity [data-integrity=altered]")  # type: ignore[attr-defined]
    text = await page.inner_text("#integrity")  # type: ignore[attr-defined]
    assert "its SHA-256 is not the chain's" in text
