"""Issue 15, part A, in headless Chromium: an admin revokes another user's API token on the
users page, and the live page stops showing calls once its session is signed out elsewhere.
"""

from __future__ import annotations

import httpx
import pytest

from callrec.sim.phone import PhoneCall
from callrec.web.security import hash_password, new_api_token
from tests.support.web import Site
from tests.web.test_browser import browser, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

__all__ = ["browser"]  # the fixture, shared with test_browser.py


async def test_admin_revokes_another_users_token(site: Site, browser: object) -> None:
    user = site.catalog.create_user(
        "scripter", password_hash=hash_password("scripter-password"), role="listener"
    )
    token, token_hash, prefix = new_api_token()
    info = site.catalog.create_token(
        user.id, name="nightly export", token_hash=token_hash, prefix=prefix
    )
    script = httpx.AsyncClient(
        base_url=site.base, headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    async with script:
        assert (await script.get("/api/v1/recordings")).status_code == 200

        page = await browser.new_page()  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())
        await sign_in(page, site, "admin")
        await page.goto(f"{site.base}/admin/users")
        row = f"#tokens tr[data-token='{info.id}']"
        text = await page.inner_text(row)
        assert "scripter" in text and "nightly export" in text and prefix in text
        assert "never" in text  # its expiry
        await page.click(f"{row} button:has-text('revoke')")
        await page.wait_for_selector(f"p.flash:has-text('Token {info.id} revoked.')")
        assert await page.locator(row).count() == 0
        await page.close()

        assert (await script.get("/api/v1/recordings")).status_code == 401
    entry = site.catalog.audit_entries(action="token_revoke", limit=1)[0]
    assert entry.username == "admin" and entry.detail == {"token_id": info.id}


async def test_live_page_goes_blank_when_its_session_is_signed_out(
    site: Site, browser: object
) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/live")
    call = PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id="62001",
        codec="PCMA",
        local_number="3007",
        remote_number="0309998877",
        remote_name="Private Caller",
    )
    assert (await call.start())["result"] == "success"
    try:
        await page.wait_for_selector("#live tr[data-session='62001']")
        # The same session signs out from elsewhere (another tab, another device).
        cookies = await page.context.cookies()
        session = next(c["value"] for c in cookies if c["name"] == "callrec_session")
        csrf = await page.get_attribute("body", "data-csrf")
        async with httpx.AsyncClient(
            base_url=site.base, cookies={"callrec_session": session}, timeout=30
        ) as other:
            r = await other.post("/logout", data={"csrf": csrf})
            assert r.status_code == 303
        await page.wait_for_selector("#live-state[data-ended='1']")
        assert "Sign in again" in await page.inner_text("#live-state")
        assert await page.locator("#live tbody tr").count() == 0
        assert "0309998877" not in await page.inner_text("main")
    finally:
        await call.stop("hangup")
        await call.close()
    await page.close()
