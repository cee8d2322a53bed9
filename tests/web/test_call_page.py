"""A recording's page (issue 15): `play` audited only when listened to, the running figures of
a call in progress, one duration rule, forms that redirect (a reload submits nothing), a bad
tag shown next to its field, and the API reference's Markdown rendered.

Over the real server the phone simulator fills; page-level checks with a signed-in HTTP
client, the rest in headless Chromium (the fixtures of :mod:`tests.web.test_browser`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import pytest_asyncio

from callrec.codecs import get_codec
from callrec.sim.phone import PhoneCall, build_packets
from callrec.web.pages.render import _duration
from tests.support.audio import speech_like_signal
from tests.support.web import USERS, Site
from tests.web.test_browser import DESKTOP, chromium, sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The new-tag field (each tag's remove form has a hidden one of the same name).
TAG_INPUT = "#tags form[action$='/tags'] input[name=tag]"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Headless Chromium as test_browser.py launches it."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with chromium(profile, **DESKTOP) as context:
        yield context


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def short(site: Site) -> int:
    """A 6.6 s call: rounding says 0:07, a player says 0:06."""
    return await site.record(
        codec="PCMA",
        seconds=6.6,
        session_id="60001",
        device="0c383e0e7601",
        direction="in",
        local_number="3006",
        remote_number="0306600",
        remote_name="Six Point Six",
    )


@contextlib.asynccontextmanager
async def signed_in(site: Site, who: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a browser session (cookie), as the pages' forms are used."""
    name, password, *_ = USERS[who]
    async with httpx.AsyncClient(base_url=site.base, timeout=30) as client:
        form = await client.get("/login")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        data = {"username": name, "password": password, "csrf": token}
        assert (await client.post("/login", data=data)).status_code == 303
        yield client


def csrf_of(html: str) -> str:
    return html.split('data-csrf="', 1)[1].split('"', 1)[0]


def plays(site: Site, rec_id: int) -> int:
    entries = site.catalog.audit_entries(recording_id=rec_id, limit=200)
    return sum(1 for e in entries if e.action == "play")


# -- durations -----------------------------------------------------------------------------


async def test_one_duration_rule() -> None:
    assert [_duration(s) for s in (0.4, 6.0, 6.6, 6.99, 59.9, 3600.2)] == [
        "0:00",
        "0:06",
        "0:06",
        "0:06",
        "0:59",
        "1:00:00",
    ]
    assert _duration(None) == ""


async def test_header_list_and_player_agree_on_duration(
    site: Site, short: int, browser: Any
) -> None:
    page = await browser.new_page()
    await sign_in(page, site, "listener")
    await page.goto(f"{site.base}/recordings?q=0306600")
    row = f"tr[data-id='{short}']"
    await page.wait_for_selector(row)
    assert "0:06" in await page.inner_text(row)
    await page.goto(f"{site.base}/recordings/{short}")
    await page.wait_for_selector("#player[data-ready='1']")
    assert "0:06" in await page.inner_text("p.sub")
    assert await page.inner_text("#clock") == "0:00 / 0:06"
    # Once the player knows the length from the file, it still says 0:06.
    await page.evaluate("document.getElementById('audio').load()")
    await page.wait_for_function("() => document.getElementById('audio').duration > 6")
    assert await page.evaluate("document.getElementById('audio').duration") == pytest.approx(
        6.6, abs=0.01
    )
    assert (await page.inner_text("#clock")).endswith("/ 0:06")
    assert "0:07" not in await page.inner_text("main")
    await page.close()


# -- play audit ----------------------------------------------------------------------------


async def test_opening_the_page_is_not_a_play_pressing_play_is_one(
    site: Site, browser: Any
) -> None:
    rec_id = await site.record(
        codec="PCMU",
        seconds=2.0,
        session_id="60002",
        device="0c383e0e7602",
        direction="out",
        local_number="3007",
        remote_number="0307",
    )
    page = await browser.new_page()
    audio_requests: list[str] = []
    page.on(
        "request",
        lambda r: audio_requests.append(r.url) if r.url.endswith(f"/{rec_id}/audio") else None,
    )
    await sign_in(page, site, "listener")
    await page.goto(f"{site.base}/recordings/{rec_id}")
    await page.wait_for_selector("#player[data-ready='1']")
    # The page and its waveform are there; no audio was fetched, nothing was audited.
    assert audio_requests == []
    assert plays(site, rec_id) == 0
    await page.reload()
    await page.wait_for_selector("#player[data-ready='1']")
    assert plays(site, rec_id) == 0

    await page.evaluate("document.getElementById('audio').play()")
    await page.wait_for_function("() => document.getElementById('audio').ended")
    assert plays(site, rec_id) == 1
    await page.close()


# -- a call in progress --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def call_in_progress(site: Site, session_id: str) -> AsyncIterator[PhoneCall]:
    call = PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id=session_id,
        codec="PCMA",
        local_number="3008",
        remote_number="0308",
        remote_name="Still Talking",
    )
    packets = build_packets(speech_like_signal(30.0, 8000), get_codec("PCMA"), ssrc=call.ssrc)
    assert (await call.start())["result"] == "success"
    streaming = asyncio.create_task(call.send_packets(packets, realtime=True))
    try:
        yield call
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await call.stop("hangup")
        await call.close()


async def live_session(site: Site, session_id: str, *, received: int) -> dict[str, Any]:
    """The call's live entry once it is catalogued and ``received`` packets came in."""
    async with site.client("admin") as c:
        while True:
            found = [
                s for s in (await c.get("/api/v1/live")).json() if s["session_id"] == session_id
            ]
            if found and found[0]["rec_id"] and found[0]["counters"]["received"] >= received:
                return found[0]
            await asyncio.sleep(0.1)


class _Marked(HTMLParser):
    """Text of the elements with data-counter / data-live attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        key = a.get("data-counter") or (f"live:{a['data-live']}" if a.get("data-live") else None)
        self._open.append(key)
        if key and key not in self.values:
            self.values[key] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for key in self._open:
            if key and self.values.get(key, "") == "":
                self.values[key] = data.strip()


def marked(html: str) -> dict[str, str]:
    parser = _Marked()
    parser.feed(html)
    return parser.values


async def test_page_of_a_call_in_progress_shows_the_running_figures(site: Site) -> None:
    async with call_in_progress(site, "60003"):
        live = await live_session(site, "60003", received=100)
        rec_id = live["rec_id"]
        row = site.catalog.get(rec_id)
        assert row is not None and row.status == "recording"
        async with site.client("listener") as c:
            html = (await c.get(f"/recordings/{rec_id}")).text
        values = marked(html)
        # At least what the live view said just before, not the catalogue's checkpoint.
        assert int(values["received"]) >= live["counters"]["received"] >= 100
        assert values["live:duration"] not in ("", "0:00")
        assert values["live:status"] == "recording"
        assert "running figures of the call being recorded" in html
    async with site.client("listener") as c:
        while site.catalog.get(rec_id).status == "recording":  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
        html = (await c.get(f"/recordings/{rec_id}")).text
    final = site.catalog.get(rec_id)
    assert final is not None
    values = marked(html)
    assert int(values["received"]) == final.packets_received
    assert values["live:duration"] == _duration(final.duration)
    assert "running figures" not in html


async def test_call_page_follows_the_call_then_shows_the_final_values(
    site: Site, browser: Any
) -> None:
    page = await browser.new_page()
    await sign_in(page, site, "admin")
    async with call_in_progress(site, "60004"):
        live = await live_session(site, "60004", received=25)
        rec_id = live["rec_id"]
        await page.goto(f"{site.base}/recordings/{rec_id}")
        first = int(await page.inner_text("[data-counter='received']"))
        # The counters move while the page is open, from the live events.
        await page.wait_for_function(
            "n => Number(document.querySelector(\"[data-counter='received']\").textContent)"
            " >= n + 100",
            arg=first,
        )
        assert await page.get_attribute("#player", "data-live") == "1"
    await page.wait_for_selector("#player[data-status='complete']")
    final = site.catalog.get(rec_id)
    assert final is not None and final.status == "complete"
    assert int(await page.inner_text("[data-counter='received']")) == final.packets_received
    assert await page.inner_text("p.sub [data-live='status']") == "complete"
    assert await page.inner_text("p.sub [data-live='duration']") == _duration(final.duration)
    assert await page.inner_text("[data-live='end_time']") != ""
    await page.close()


# -- forms ---------------------------------------------------------------------------------


async def test_every_page_form_redirects(site: Site, short: int) -> None:
    """POST-redirect-GET: each form that succeeds answers 303; secrets are shown once."""
    async with signed_in(site, "admin") as client:
        csrf = csrf_of((await client.get(f"/recordings/{short}")).text)
        for url, data in (
            (f"/recordings/{short}/notes", {"text": "PRG note"}),
            (f"/recordings/{short}/tags", {"tag": "prg"}),
            (f"/recordings/{short}/tags/remove", {"tag": "prg"}),
        ):
            r = await client.post(url, data={**data, "csrf": csrf})
            assert r.status_code == 303, url
            assert r.headers["location"].startswith(f"/recordings/{short}#")

        r = await client.post("/account/tokens", data={"name": "prg", "days": "30", "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/account"
        shown = (await client.get("/account")).text
        token = re.search(r'id="new-token">(crt_[^<]+)<', shown)
        assert token is not None and "Token created." in shown
        again = (await client.get("/account")).text
        assert token.group(1) not in again and 'id="new-token"' not in again
        # The token works: it was really made, once.
        async with httpx.AsyncClient(
            base_url=site.base, headers={"authorization": f"Bearer {token.group(1)}"}
        ) as bearer:
            assert (await bearer.get("/api/v1/me")).status_code == 200

        r = await client.post("/admin/users", data={"username": "prguser", "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/admin/users"
        users = (await client.get("/admin/users")).text
        assert 'id="one-time"' in users and "Added prguser." in users
        assert 'id="one-time"' not in (await client.get("/admin/users")).text
        user = site.catalog.get_user_by_name("prguser")
        assert user is not None
        r = await client.post(f"/admin/users/{user.id}/password", data={"csrf": csrf})
        assert r.status_code == 303
        assert 'id="one-time"' in (await client.get("/admin/users")).text

    # Another user's session never sees a secret meant for the admin.
    async with signed_in(site, "admin") as client:
        csrf = csrf_of((await client.get("/account")).text)
        r = await client.post("/account/tokens", data={"name": "mine", "days": "1", "csrf": csrf})
        assert r.status_code == 303
        key = client.cookies["callrec_reveal"]
    async with signed_in(site, "listener") as other:
        other.cookies.set("callrec_reveal", key)
        assert 'id="new-token"' not in (await other.get("/account")).text


async def test_reloading_after_a_note_or_tag_submits_nothing(
    site: Site, short: int, browser: Any
) -> None:
    page = await browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    await sign_in(page, site, "listener")
    await page.goto(f"{site.base}/recordings/{short}")
    await page.fill("textarea[name=text]", "Only once, please.")
    await page.click("#notes button:has-text('Add note')")
    await page.wait_for_selector("#notes .note:has-text('Only once, please.')")
    assert page.url == f"{site.base}/recordings/{short}#notes"
    assert await page.inner_text("p.flash") == "Note added."
    await page.fill(TAG_INPUT, "reloaded")
    await page.click("#tags button[type=submit]:has-text('Add tag')")
    await page.wait_for_selector("#tags a.tag:has-text('reloaded')")
    for _ in range(2):
        await page.reload()
        await page.wait_for_selector("#notes .note:has-text('Only once, please.')")
    assert dialogs == []  # no "Confirm form resubmission"
    assert await page.locator("#notes .note:has-text('Only once, please.')").count() == 1
    assert [n.text for n in site.catalog.notes(short)].count("Only once, please.") == 1
    entries = site.catalog.audit_entries(recording_id=short, limit=200)
    done = [(e.action, e.detail.get("text") or e.detail.get("tag")) for e in entries]
    assert done.count(("note_add", "Only once, please.")) == 1
    assert done.count(("tag_add", "reloaded")) == 1
    assert await page.locator("p.flash").count() == 0  # the message was for one page view
    await page.close()


async def test_a_bad_tag_is_shown_next_to_its_field(site: Site, short: int, browser: Any) -> None:
    async with signed_in(site, "listener") as client:
        csrf = csrf_of((await client.get(f"/recordings/{short}")).text)
        r = await client.post(f"/recordings/{short}/tags", data={"tag": "ok bad!tag", "csrf": csrf})
        assert r.status_code == 400
        assert 'id="tag-error"' in r.text and "must be one word" in r.text
        assert 'value="ok bad!tag"' in r.text and 'id="player"' in r.text  # the whole page
    assert "ok" not in site.catalog.tags_of([short]).get(short, [])  # all or nothing

    page = await browser.new_page()
    await sign_in(page, site, "listener")
    await page.goto(f"{site.base}/recordings/{short}")
    await page.fill(TAG_INPUT, "no/slashes")
    await page.click("#tags button[type=submit]:has-text('Add tag')")
    await page.wait_for_selector("#tag-error")
    assert "must be one word" in await page.inner_text("#tag-error")
    assert await page.input_value(TAG_INPUT) == "no/slashes"
    assert await page.get_attribute(TAG_INPUT, "aria-invalid") == "true"
    assert await page.locator("#player").count() == 1  # the recording page, not an error page
    # Corrected and sent again, it is taken.
    await page.fill(TAG_INPUT, "no-slashes")
    await page.click("#tags button[type=submit]:has-text('Add tag')")
    await page.wait_for_selector("#tags a.tag:has-text('no-slashes')")
    assert await page.locator("#tag-error").count() == 0
    await page.close()


# -- API reference -------------------------------------------------------------------------


async def test_api_docs_render_markdown(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base) as c:
        html = (await c.get("/api/docs")).text
        spec = (await c.get("/api/openapi.json")).json()
    assert "`" in str(spec)  # the descriptions do use Markdown code spans
    assert "`" not in html
    # e.g. RecordingPage.next_cursor: "Pass as `cursor` for the next page."
    assert "Pass as <code>cursor</code> for the next page." in html
    assert "<code>play</code>" in html  # in the audio endpoint's description
