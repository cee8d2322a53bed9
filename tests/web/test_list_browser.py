"""The recordings list in headless Chromium: play from the list with one player for the
page and its keys, paging (previous, next, numbers, jump to a date), date presets, the CSV
export, bulk delete, and every page at a phone's width (390 x 844).

The site has two real 12-second calls made by the phone simulator and 58 more catalogue
rows, three hours apart going back a week, whose files are copies of the first call's: enough
for three pages of 25 that all play.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from callrec.catalog import StreamCounters
from callrec.codecs import get_codec
from callrec.sim.phone import PhoneCall, build_packets
from tests.support.audio import speech_like_signal
from tests.support.catalog import new_recording
from tests.support.web import Site, make_call, start_site, stop_site
from tests.web.test_browser import ZONE, at, browser, sign_in, wait_rows

__all__ = ["browser"]  # the Chromium fixture, shared with test_browser

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXTRA_ROWS = 58
PAGE = 25
SECONDS = 12.0
DASH = "\u2013"  # between the first and last row shown


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    s = await start_site(tmp_path_factory.mktemp("listsite"))
    try:
        for n, (number, name) in enumerate([("2011", "Alice Example"), ("4000", "Bob Long")]):
            s.recs[name] = await make_call(
                s.server,
                codec="PCMA",
                seconds=SECONDS,
                session_id=f"6000{n}",
                direction="out",
                local_number="3001",
                remote_number=number,
                remote_name=name,
            )
        source = s.catalog.get(s.recs["Alice Example"])
        assert source is not None
        now = datetime.now(UTC)
        for n in range(EXTRA_ROWS):
            path = f"extra/row_{n:02d}.wav"
            (s.server.root / "extra").mkdir(exist_ok=True)
            shutil.copyfile(s.server.root / source.path, s.server.root / path)
            rec_id = s.catalog.create_recording(
                new_recording(
                    n,
                    path=path,
                    start_time=now - timedelta(hours=1 + 3 * n),
                    remote_number=f"07{n:03d}",
                    remote_name=f"Row {n}",
                )
            )
            s.catalog.finish_recording(
                rec_id,
                status="complete",
                stop_reason="phone_stop",
                end_time=now - timedelta(hours=1 + 3 * n) + timedelta(seconds=SECONDS),
                duration=SECONDS,
                size_bytes=source.size_bytes or 0,
                sha256=source.sha256,
                counters=StreamCounters(received=600),
            )
            s.recs[f"row{n}"] = rec_id
        yield s
    finally:
        await stop_site(s)


def newest_first(site: Site) -> list[int]:
    return [
        r.id
        for r in sorted(
            site.catalog.find(limit=1000), key=lambda r: (r.start_time, r.id), reverse=True
        )
    ]


async def shown_rows(page: object) -> list[int]:
    ids: list[str] = await page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#results tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)"
    )
    return [int(i) for i in ids]


async def audio_state(page: object) -> dict:
    state: dict = await page.evaluate(  # type: ignore[attr-defined]
        "(() => { const a = document.getElementById('list-audio')"
        " || document.getElementById('audio');"
        " return {src: a.currentSrc, t: a.currentTime, paused: a.paused,"
        " error: a.error && a.error.code}; })()"
    )
    return state


async def wait_time(page: object, low: float, high: float, audio: str = "list-audio") -> None:
    await page.wait_for_function(  # type: ignore[attr-defined]
        "([id, low, high]) => { const t = document.getElementById(id).currentTime;"
        " return t >= low && t <= high; }",
        arg=[audio, low, high],
    )


async def test_play_from_the_list_with_keys(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    order = newest_first(site)
    await wait_rows(page, order[:50])
    assert await page.is_hidden("#playbar")
    second = order[1]

    # Play on row 2: the page's one player plays that recording, the row is marked.
    await page.click(f"tr[data-id='{second}'] a[data-play]")
    await page.wait_for_function("() => document.getElementById('list-audio').currentTime > 0.2")
    state = await audio_state(page)
    assert state["src"].endswith(f"/api/v1/recordings/{second}/audio") and state["error"] is None
    assert await page.get_attribute(f"tr[data-id='{second}']", "aria-current") == "true"
    assert await page.is_visible("#playbar")
    assert "Alice Example" in await page.inner_text("#playbar-title")  # the older real call
    assert await page.get_attribute("#playbar-title", "href") == f"/recordings/{second}"

    # Space pauses; the arrows seek 5 s (with shift 30 s, up to the end) while paused.
    await page.keyboard.press(" ")
    await page.wait_for_function("() => document.getElementById('list-audio').paused")
    start = (await audio_state(page))["t"]
    await page.keyboard.press("ArrowRight")
    await wait_time(page, start + 4.95, start + 5.05)
    await page.keyboard.press("ArrowLeft")
    await wait_time(page, start - 0.05, start + 0.05)
    await page.keyboard.press("Shift+ArrowRight")
    await wait_time(page, SECONDS - 0.1, SECONDS + 0.1)
    await page.keyboard.press("Shift+ArrowLeft")
    await wait_time(page, 0, 0)
    # Not while typing in a field.
    await page.focus("input[name=min_duration]")
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press(" ")
    assert (await audio_state(page))["t"] == 0 and (await audio_state(page))["paused"]
    await page.evaluate("document.activeElement.blur()")
    await page.keyboard.press(" ")
    await page.wait_for_function("() => document.getElementById('list-audio').currentTime > 0.2")

    # Another row's play switches the player to it.
    first = order[0]
    await page.click(f"tr[data-id='{first}'] a[data-play]")
    await page.wait_for_function(
        "want => document.getElementById('list-audio').currentSrc.endsWith(want)"
        " && document.getElementById('list-audio').currentTime > 0.2",
        arg=f"/api/v1/recordings/{first}/audio",
    )
    assert await page.get_attribute(f"tr[data-id='{first}']", "aria-current") == "true"
    assert await page.get_attribute(f"tr[data-id='{second}']", "aria-current") is None
    # Its play button now pauses it.
    await page.click(f"tr[data-id='{first}'] a[data-play]")
    await page.wait_for_function("() => document.getElementById('list-audio').paused")

    # j and k move a mark over the rows, p plays the marked one, o opens it.
    # The mark starts on the row last played.
    assert "marked" in (await page.get_attribute(f"tr[data-id='{first}']", "class") or "")
    await page.keyboard.press("j")
    assert await page.get_attribute(f"tr[data-id='{second}']", "class") == "marked"
    await page.keyboard.press("j")
    await page.keyboard.press("k")
    await page.keyboard.press("p")
    await page.wait_for_function(
        "want => document.getElementById('list-audio').currentSrc.endsWith(want)",
        arg=f"/api/v1/recordings/{second}/audio",
    )

    # ? shows every key, Escape hides it.
    assert await page.is_visible(".keys-hint")
    await page.keyboard.press("?")
    assert await page.is_visible("#keys-help")
    assert "next or previous row" in await page.inner_text("#keys-help")
    await page.keyboard.press("Escape")
    assert await page.is_hidden("#keys-help")
    await page.keyboard.press("o")
    await page.wait_for_url(f"{site.base}/recordings/{second}")

    # The recording's page has the same keys for its player.
    await page.wait_for_selector("#player[data-ready='1']")
    await page.keyboard.press(" ")
    await page.wait_for_function("() => document.getElementById('audio').currentTime > 0.2")
    await page.keyboard.press(" ")
    await page.wait_for_function("() => document.getElementById('audio').paused")
    start = (await audio_state(page))["t"]
    await page.keyboard.press("ArrowRight")
    await wait_time(page, start + 4.95, start + 5.05, audio="audio")
    plays = [
        e for e in site.catalog.audit_entries(action="play", limit=100) if e.username == "lisa"
    ]
    assert {e.recording_id for e in plays} >= {first, second}
    await page.close()


async def test_pages_numbers_and_jump_to_a_date(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    order = newest_first(site)
    assert len(order) == 60
    await page.goto(f"{site.base}/recordings?limit={PAGE}")
    await wait_rows(page, order[:PAGE])
    assert await page.inner_text("#count") == f"1{DASH}{PAGE} of 60 recordings"
    numbers = await page.eval_on_selector_all(
        ".pager [data-page], .pager .current", "e => e.map(x => x.textContent.trim())"
    )
    assert numbers == ["1", "2", "3"]
    assert await page.inner_text(".pager [aria-current=page]") == "1"
    assert await page.query_selector("#newer") is None

    # Next (by cursor), a page number (by offset), previous (by cursor): the URL follows.
    await page.click("#older")
    await wait_rows(page, order[PAGE : 2 * PAGE])
    assert await page.inner_text("#count") == f"26{DASH}50 of 60 recordings"
    assert await page.inner_text(".pager [aria-current=page]") == "2"
    await page.click(".pager [data-page='3']")
    await at(page, f"/recordings?limit={PAGE}&page=3")
    await wait_rows(page, order[2 * PAGE :])
    assert await page.query_selector("#older") is None
    await page.click("#newer")
    await wait_rows(page, order[PAGE : 2 * PAGE])
    await page.go_back()
    await wait_rows(page, order[2 * PAGE :])

    # Jump to a date: the page starts at that day's last call (in the browser's time zone).
    zone = ZoneInfo(ZONE)
    day = (datetime.now(zone) - timedelta(days=3)).date()
    rows = sorted(site.catalog.find(limit=1000), key=lambda r: (r.start_time, r.id), reverse=True)
    expected = [r.id for r in rows if r.start_time.astimezone(zone).date() <= day]
    await page.fill("#jump input[name=at]", day.isoformat())
    await page.click("#jump button[type=submit]")
    await page.wait_for_function("() => location.search.includes('at=')")
    await wait_rows(page, expected[:PAGE])
    assert f"at={day.isoformat()}" in page.url and "tz=Europe%2FBerlin" in page.url
    skipped = len(order) - len(expected)
    assert (
        await page.inner_text("#count") == f"{skipped + 1}{DASH}{skipped + PAGE} of 60 recordings"
    )
    # From there, previous shows the newer calls just before.
    await page.click("#newer")
    await wait_rows(page, order[max(0, skipped - PAGE) : skipped])
    await page.close()


async def test_date_presets_in_the_browsers_time_zone(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    zone = ZoneInfo(ZONE)
    today = datetime.now(zone).date()
    rows = sorted(site.catalog.find(limit=1000), key=lambda r: (r.start_time, r.id), reverse=True)

    def between(first: object, last: object) -> list[int]:
        return [r.id for r in rows if first <= r.start_time.astimezone(zone).date() <= last]  # type: ignore[operator]

    yesterday = today - timedelta(days=1)
    await page.click("a[data-preset='yesterday']")
    await at(page, f"/recordings?tz=Europe%2FBerlin&since={yesterday}&until={yesterday}")
    await wait_rows(page, between(yesterday, yesterday))
    assert await page.input_value("input[name=since]") == yesterday.isoformat()
    assert await page.get_attribute("a[data-preset='yesterday']", "aria-current") == "true"
    await page.click("a[data-preset='today']")
    await at(page, f"/recordings?tz=Europe%2FBerlin&since={today}&until={today}")
    await wait_rows(page, between(today, today))
    week = today - timedelta(days=6)
    await page.click("a[data-preset='week']")
    await at(page, f"/recordings?tz=Europe%2FBerlin&since={week}&until={today}")
    await wait_rows(page, between(week, today)[:50])
    assert await page.get_attribute("a[data-preset='today']", "aria-current") is None
    month = today.replace(day=1)
    await page.click("a[data-preset='month']")
    await at(page, f"/recordings?tz=Europe%2FBerlin&since={month}&until={today}")
    await wait_rows(page, between(month, today)[:50])
    await page.close()


async def test_export_csv_of_the_search(site: Site, browser: object, tmp_path: Path) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    await page.fill("input[name=q]", "Row")
    await at(page, "/recordings?q=Row")
    assert await page.get_attribute("#export", "href") == "/api/v1/recordings.csv?q=Row"
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    assert download.suggested_filename.startswith("callrec-recordings-")
    saved = tmp_path / "list.csv"
    await download.save_as(saved)
    exported = list(csv.DictReader(io.StringIO(saved.read_text())))
    # All pages of it, not the 50 shown.
    assert len(exported) == EXTRA_ROWS
    assert {r["remote_name"] for r in exported} == {f"Row {n}" for n in range(EXTRA_ROWS)}
    await page.close()


async def test_bulk_delete_for_admins(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    assert await page.query_selector("#delete-selected") is None
    await sign_in(page, site, "admin")
    victims = [site.recs["row56"], site.recs["row57"]]
    files = []
    for rec_id in victims:
        rec = site.catalog.get(rec_id)
        assert rec is not None
        files.append(site.server.root / rec.path)
    await page.goto(f"{site.base}/recordings?q=Row+5")
    assert await page.is_disabled("#delete-selected")
    for rec_id in victims:
        await page.check(f"input[name=id][value='{rec_id}']")
    assert await page.inner_text("#delete-selected") == "Delete 2 selected"
    messages: list[str] = []

    async def answer(dialog: object) -> None:
        messages.append(dialog.message)  # type: ignore[attr-defined]
        await dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", answer)
    await page.click("#delete-selected")
    await page.wait_for_selector(".flash:has-text('Deleted 2 recordings.')")
    assert messages == ["Delete 2 recordings and their files for good?"]
    await at(page, "/recordings?q=Row+5")
    shown = await shown_rows(page)
    assert shown and not set(victims) & set(shown)
    assert all(site.catalog.get(i) is None for i in victims)
    assert not any(f.exists() for f in files)
    summary = site.catalog.audit_entries(action="bulk_delete", limit=1)[0]
    assert (
        summary.detail["deleted"] == sorted(victims, reverse=True)
        or summary.detail["deleted"] == victims
    )
    await page.close()


async def no_sideways_scroll(page: object, what: str) -> None:
    fit = await page.evaluate(  # type: ignore[attr-defined]
        "(() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " widest: [...document.querySelectorAll('main *, header *')]"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)"
        ".slice(0, 3).map(e => e.tagName + '.' + e.className)}))()"
    )
    assert fit["scroll"] <= fit["inner"], (what, fit)
    box = await page.evaluate(  # type: ignore[attr-defined]
        "(() => { const b = [...document.querySelectorAll('header button')]"
        ".find(e => e.textContent.includes('Sign out')).getBoundingClientRect();"
        " return {left: b.left, right: b.right, top: b.top, bottom: b.bottom}; })()"
    )
    assert box["left"] >= 0 and box["right"] <= 390 and box["top"] >= 0 and box["bottom"] <= 844, (
        what,
        box,
    )
    assert await page.is_visible("header button:has-text('Sign out')")  # type: ignore[attr-defined]


async def test_every_page_fits_a_phone(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, site, "admin")
    order = newest_first(site)
    # The list: a card per row, with the player open.
    await wait_rows(page, order[:50])
    assert (
        await page.eval_on_selector("table.list thead", "e => getComputedStyle(e).display")
        == "none"
    )
    await page.click(f"tr[data-id='{order[0]}'] a[data-play]")
    await page.wait_for_selector("#playbar:not([hidden])")
    await no_sideways_scroll(page, "list")
    card = await page.eval_on_selector(
        f"tr[data-id='{order[0]}']", "e => e.getBoundingClientRect().width"
    )
    assert card <= 390
    for path in (f"/recordings/{order[0]}", "/admin/users", "/admin/audit", "/account"):
        await page.goto(f"{site.base}{path}")
        await no_sideways_scroll(page, path)
        if path == "/admin/users":
            # Cells say what they are on a card, counting the columns a cell spans.
            labels = await page.eval_on_selector_all(
                "tr[data-user='admin']:not([data-token]) td",
                "cells => cells.map(c => c.dataset.label || '')",
            )
            assert labels == ["User", "", "Last sign-in", ""]

    # The live page with a call on it.
    call = PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id="61234567890",
        codec="PCMA",
        device="0c383e0e7fff",
        local_number="3001",
        local_name="Reception desk",
        remote_number="+4930123456789",
        remote_name="A caller with a long name",
    )
    packets = build_packets(speech_like_signal(6.0, 8000), get_codec("PCMA"), ssrc=call.ssrc)
    assert (await call.start())["result"] == "success"
    streaming = asyncio.create_task(call.send_packets(packets, realtime=True))
    try:
        await page.goto(f"{site.base}/live")
        await page.wait_for_selector("#live tr[data-session='61234567890']")
        await page.wait_for_function(
            "() => document.querySelector(\"#live tr[data-session='61234567890'] td\")"
            ".dataset.label === 'Started'"
        )
        await no_sideways_scroll(page, "/live")
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await call.stop("hangup")
        await call.close()
    await page.close()
