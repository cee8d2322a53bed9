"""The Jobs admin page in a real browser: a dead job with its last error, its history, and
the retry button that queues it again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio

from callrec.catalog import JobStore
from callrec.catalog.jobs import OUTCOME_DEAD, Claim
from tests.support.web import Site, start_site, stop_site
from tests.web.test_browser import browser, sign_in

__all__ = ["browser"]  # the module's browser fixture, shared with the web's browser tests

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    s = await start_site(tmp_path_factory.mktemp("jobs-site"))
    try:
        yield s
    finally:
        await stop_site(s)


async def test_admin_sees_a_dead_job_and_retries_it(site: Site, browser: object) -> None:
    store = JobStore(site.catalog)
    store.enqueue("test.browser", "rec-1", {"url": "https://crm.example.com/hook"})
    lease = timedelta(minutes=1)
    (job,) = store.claim("elsewhere:1:x", [Claim(kind="test.browser", limit=1, lease=lease)])
    store.settle(job, outcome=OUTCOME_DEAD, started_at=job.run_after, detail="HTTP 500: no")
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "admin")
    await page.click("header a:has-text('Jobs')")
    await page.wait_for_url(f"{site.base}/admin/jobs")
    row = page.locator(f"#jobs tr[data-job='{job.id}']")
    assert "dead" in await row.locator(".job-state").inner_text()
    assert "HTTP 500: no" in await row.inner_text()
    assert "https://crm.example.com/hook" in await row.inner_text()
    await row.locator("button:has-text('retry')").click()
    await page.wait_for_url(f"{site.base}/admin/jobs?job={job.id}")
    history = await page.inner_text("#history")
    assert "HTTP 500: no" in history and "dead" in history
    assert "queued" in await page.locator(f"#jobs tr[data-job='{job.id}'] .job-state").inner_text()
    again = store.get(job.id)
    assert again is not None and again.state == "queued" and again.attempts == 0
    await page.close()
