"""Legal holds in a real browser (Debian's chromium through Playwright): an admin holds a
recording from its page and the list's selection, sees them marked, releases them (issue 16
part R). The browser set-up is the one of ``test_browser.py``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.web import USERS, Site

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio"]
WAIT = 15_000  # ms; generous for a loaded 2-core machine, never a timing assertion

if not Path(CHROMIUM).is_file():  # `make test` installs it (Makefile APT_PACKAGES)
    pytest.fail(f"chromium is not installed at {CHROMIUM}: run `make sysdeps`", pytrace=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        context.set_default_timeout(WAIT)
        try:
            yield context
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


async def test_admin_holds_from_the_page_and_the_list_then_releases(
    site: Site, browser: object
) -> None:
    alice, bob = site.recs["alice"], site.recs["bob"]
    page = await browser.new_page()  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: dialog.accept())
    await sign_in(page, site, "admin")

    await page.goto(f"{site.base}/recordings/{alice}")
    await page.fill("#holds input[name=reason]", "Case 2026-17")
    await page.click("#holds button:has-text('Hold this recording')")
    await page.wait_for_selector("#holds h2 .held")
    assert "Case 2026-17" in await page.inner_text("#holds")
    assert await page.locator("button:has-text('Delete recording')").count() == 0

    await page.goto(f"{site.base}/recordings")
    await page.wait_for_selector(f"tr[data-id='{alice}'] .held")
    assert await page.locator(f"tr[data-id='{bob}'] .held").count() == 0
    await page.check(f"tr[data-id='{bob}'] input[name=id]")
    await page.fill("#hold-reason", "Subpoena 88")
    await page.click("#hold-selected")
    await page.wait_for_selector(f"tr[data-id='{bob}'] .held")
    assert {h.reason for h in site.catalog.holds()} == {"Case 2026-17", "Subpoena 88"}

    # Release both from the recordings' pages: Delete is offered again.
    for rec in (alice, bob):
        await page.goto(f"{site.base}/recordings/{rec}")
        await page.click("#holds button:has-text('release')")
        await page.wait_for_selector("#holds p.muted")
    assert await page.locator("button:has-text('Delete recording')").count() == 1
    assert site.catalog.holds() == []
    actions = [e.action for e in site.catalog.audit_entries(limit=50)]
    assert actions.count("hold_add") == 2 and actions.count("hold_remove") == 2

    await sign_in(page, site, "listener")
    assert await page.locator("#hold-selected").count() == 0
    await page.goto(f"{site.base}/recordings/{alice}")
    assert await page.locator("#holds").count() == 0
    await page.close()
