"""The web UI in headless Chromium (Debian's ``chromium``, driven by Playwright).

Sign in, search (the URL follows; back and forward work), open a recording, play and seek,
download, watch a call appear on the live page while the phone simulator streams it, listen
to it live, and the admin pages. With ``CALLREC_UPDATE_SCREENSHOTS=1`` the screenshots go to
``docs/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import pytest_asyncio

from callrec.codecs import get_codec
from callrec.sim.phone import PhoneCall, build_packets
from tests.support.audio import speech_like_signal
from tests.support.listening import LiveCall
from tests.support.waiting import wait_for
from tests.support.web import USERS, Site

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Flags for a hermetic headless browser: no GPU, no network of its own, no first-run UI.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
ZONE = "Europe/Berlin"
WAIT = 15_000  # ms; generous for a loaded 2-core machine, never a timing assertion

if not Path(CHROMIUM).is_file():  # `make test` installs it (Makefile APT_PACKAGES)
    pytest.fail(f"chromium is not installed at {CHROMIUM}: run `make sysdeps`", pytrace=False)


def screenshot_path(tmp: Path, name: str) -> Path:
    if os.environ.get("CALLREC_UPDATE_SCREENSHOTS") == "1":
        return DOCS / name
    return tmp / name


@contextlib.asynccontextmanager
async def chromium(profile: Path, **options: Any) -> AsyncIterator[Any]:
    """Headless Chromium as the browser tests launch it, on a profile of its own."""
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **options
        )
        context.set_default_timeout(WAIT)
        try:
            yield context
        finally:
            await context.close()


#: How the pages' browser tests see the site: a desktop window, in ZONE, in English.
DESKTOP: dict[str, Any] = {
    "timezone_id": ZONE,
    "locale": "en-GB",
    "viewport": {"width": 1360, "height": 860},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with chromium(profile, accept_downloads=True, **DESKTOP) as context:
        yield context


async def sign_in(page: object, site: Site, who: str) -> None:
    name, password, *_ = USERS[who]
    await page.context.clear_cookies()  # type: ignore[attr-defined]
    await page.goto(f"{site.base}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=username]", name)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    await page.click("button[type=submit]")  # type: ignore[attr-defined]
    await page.wait_for_url(f"{site.base}/recordings")  # type: ignore[attr-defined]


async def at(page: object, target: str) -> None:
    """Wait until the address bar shows ``target`` (path and query), however it got there
    (navigation or history.pushState)."""
    await page.wait_for_function(  # type: ignore[attr-defined]
        "t => location.pathname + location.search === t", arg=target
    )


async def rows(page: object) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(  # type: ignore[attr-defined]
        "#results tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)"
    )
    return ids


async def wait_rows(page: object, expected: list[int]) -> None:
    want = [str(i) for i in expected]
    await page.wait_for_function(  # type: ignore[attr-defined]
        "want => JSON.stringify([...document.querySelectorAll('#results tbody tr[data-id]')]"
        ".map(r => r.dataset.id)) === JSON.stringify(want)",
        arg=want,
    )


async def test_sign_in_search_with_history(site: Site, browser: object, tmp_path: Path) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await page.goto(f"{site.base}/recordings?q=3001")
    assert page.url.startswith(f"{site.base}/login?next=")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", USERS["admin"][1])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.base}/recordings?q=3001")
    r = site.recs
    await wait_rows(page, [r["ivan"], r["alice"]])

    # Typing searches in place; the URL follows.
    await page.fill("input[name=q]", "alice")
    await at(page, "/recordings?q=alice")
    await wait_rows(page, [r["alice"]])
    await page.fill("input[name=q]", "")
    await at(page, "/recordings")
    await page.select_option("select[name=direction]", "in")
    await at(page, "/recordings?direction=in")
    await wait_rows(page, [r["carol"], r["bob"]])
    await page.select_option("select[name=codec]", "PCMU")
    await at(page, "/recordings?direction=in&codec=PCMU")
    await wait_rows(page, [r["bob"]])

    # Back and forward restore results and the form.
    await page.go_back()
    await at(page, "/recordings?direction=in")
    await wait_rows(page, [r["carol"], r["bob"]])
    assert await page.input_value("select[name=codec]") == ""
    await page.go_back()
    await at(page, "/recordings")
    await wait_rows(page, [r["carol"], r["ivan"], r["bob"], r["alice"]])
    await page.go_back()
    await at(page, "/recordings?q=alice")
    await wait_rows(page, [r["alice"]])
    assert await page.input_value("input[name=q]") == "alice"
    assert await page.input_value("select[name=direction]") == ""
    await page.go_forward()
    await page.go_forward()
    await at(page, "/recordings?direction=in")
    await wait_rows(page, [r["carol"], r["bob"]])
    assert await page.input_value("select[name=direction]") == "in"

    # A shared link opens the same search.
    other = await browser.new_page()  # type: ignore[attr-defined]
    await other.goto(f"{site.base}/recordings?codec=PCMA&sort=start_time")
    await wait_rows(other, [r["alice"], r["carol"]])
    assert await other.input_value("select[name=sort]") == "start_time"
    await other.close()

    # Times are shown in the browser's time zone.
    await page.goto(f"{site.base}/recordings")
    await wait_rows(page, [r["carol"], r["ivan"], r["bob"], r["alice"]])
    rec = site.catalog.get(r["alice"])
    assert rec is not None
    shown = await page.inner_text(f"tr[data-id='{rec.id}'] time")
    assert rec.start_time.astimezone(ZoneInfo(ZONE)).strftime("%H:%M:%S") in shown
    assert "UTC" not in shown

    # Tick two rows; the ZIP button counts them.
    await page.check(f"input[name=id][value='{r['alice']}']")
    await page.check(f"input[name=id][value='{r['bob']}']")
    assert await page.inner_text("#zip") == "Download 2 selected (ZIP)"
    async with page.expect_download() as download_info:
        await page.click("#zip")
    download = await download_info.value
    saved = tmp_path / "selection.zip"
    await download.save_as(saved)
    import zipfile

    assert len([n for n in zipfile.ZipFile(saved).namelist() if n.endswith(".wav")]) == 2
    await page.uncheck(f"input[name=id][value='{r['alice']}']")
    await page.uncheck(f"input[name=id][value='{r['bob']}']")
    shot = screenshot_path(tmp_path, "recordings-list.png")
    await page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    await page.close()


async def test_open_play_seek_and_download(site: Site, browser: object, tmp_path: Path) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "listener")
    rec_id = site.recs["ivan"]
    await page.click(f"tr[data-id='{rec_id}'] a.rec-link")
    await page.wait_for_url(f"{site.base}/recordings/{rec_id}")
    await page.wait_for_selector("#player[data-ready='1']")
    assert int(await page.get_attribute("#player", "data-peaks") or 0) > 100
    assert "Иван Петров" in await page.inner_text("h1")

    # Play, then seek by clicking three quarters into the waveform.
    await page.evaluate("document.getElementById('audio').play()")
    await page.wait_for_function("() => document.getElementById('audio').currentTime > 0.1")
    duration = await page.evaluate("document.getElementById('audio').duration")
    assert duration == pytest.approx(3.0, abs=0.05)
    box = await page.locator("#wave").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    await page.wait_for_function(
        "() => { const a = document.getElementById('audio');"
        " return a.currentTime >= 2.1 || a.ended; }"
    )
    state = await page.evaluate(
        "(() => { const a = document.getElementById('audio');"
        " return {error: a.error && a.error.code, seekable: a.seekable.length ?"
        " a.seekable.end(0) : 0}; })()"
    )
    assert state["error"] is None
    assert state["seekable"] == pytest.approx(3.0, abs=0.05)  # the server does ranges
    await page.evaluate("document.getElementById('audio').pause()")

    # Downloads: the original WAV and a FLAC made on demand.
    rec = site.catalog.get(rec_id)
    assert rec is not None
    async with page.expect_download() as info:
        await page.click("a[data-format='wav']")
    wav = tmp_path / "call.wav"
    await (await info.value).save_as(wav)
    assert wav.read_bytes() == (site.server.root / rec.path).read_bytes()
    async with page.expect_download() as info:
        await page.click("a[data-format='flac']")
    flac_download = await info.value
    assert flac_download.suggested_filename.endswith(".flac")
    flac = tmp_path / "call.flac"
    await flac_download.save_as(flac)
    assert flac.read_bytes()[:4] == b"fLaC"

    # Notes and tags through the forms.
    await page.fill("input[name=tag]", "training")
    await page.click("#tags button[type=submit]:has-text('Add tag')")
    await page.wait_for_selector("#tags a.tag:has-text('training')")
    await page.fill("textarea[name=text]", "Good example of a greeting.")
    await page.click("#notes button:has-text('Add note')")
    await page.wait_for_selector("#notes .note:has-text('Good example of a greeting.')")

    shot = screenshot_path(tmp_path, "recording-page.png")
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    actions = [e.action for e in site.catalog.audit_entries(recording_id=rec_id, limit=50)]
    assert {"play", "download", "tag_add", "note_add"} <= set(actions)
    await page.close()


async def test_live_page_shows_the_call_being_streamed(site: Site, browser: object) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/live")
    await page.wait_for_selector("#live tr.none")
    codec = get_codec("PCMA")
    call = PhoneCall(
        "127.0.0.1",
        site.server.control_port,
        session_id="50001",
        codec="PCMA",
        local_number="3005",
        remote_number="0301112233",
        remote_name="Live Caller",
    )
    packets = build_packets(speech_like_signal(8.0, 8000), codec, ssrc=call.ssrc)
    assert (await call.start())["result"] == "success"
    streaming = asyncio.create_task(call.send_packets(packets, realtime=True))
    try:
        row = "#live tr[data-session='50001']"
        await page.wait_for_selector(row)
        text = await page.inner_text(row)
        assert "0301112233 (Live Caller)" in text and "PCMA" in text
        listen = await page.query_selector(f"{row} button.listen")
        assert listen is not None
        # The counters move while the call goes on.
        # (the ninth cell: packets; the node is the sixth)
        await page.wait_for_function(
            "() => document.querySelector(\"#live tr[data-session='50001'] td:nth-child(9)\")"
            ".textContent > 20"
        )
        assert await page.inner_text("#live-count") == "1"
        # ...in the same row: its Listen button is never replaced under a click.
        assert await listen.evaluate("b => b.isConnected")
    finally:
        streaming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await streaming
        await call.stop("hangup")
        await call.close()
    await page.wait_for_selector("#live tr.none")
    assert await page.inner_text("#live-count") == "0"
    await page.close()


async def test_admin_adds_a_user_and_reads_the_audit_log(
    site: Site, browser: object, tmp_path: Path
) -> None:
    page = await browser.new_page()  # type: ignore[attr-defined]
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/admin/users")
    await page.fill("#add-user input[name=username]", "newbie")
    await page.fill("#add-user input[name=extensions]", "3001")
    await page.click("#add-user button[type=submit]")
    one_time = await page.inner_text("#one-time")
    assert len(one_time) >= 12
    user = site.catalog.get_user_by_name("newbie")
    assert user is not None and user.must_change_password and user.extensions == ("3001",)

    # The new user must choose a password first, then sees only extension 3001.
    await page.click("header form button:has-text('Sign out')")
    await page.wait_for_url(f"{site.base}/login")
    await page.fill("input[name=username]", "newbie")
    await page.fill("input[name=password]", one_time)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.base}/account")
    await page.goto(f"{site.base}/recordings")
    await page.wait_for_url(f"{site.base}/account")
    await page.fill("input[name=current]", one_time)
    await page.fill("input[name=new]", "my-own-password")
    await page.fill("input[name=confirm]", "my-own-password")
    await page.click("form[action='/account/password'] button")
    await page.wait_for_url(f"{site.base}/recordings")
    await wait_rows(page, [site.recs["ivan"], site.recs["alice"]])
    await page.click("header form button:has-text('Sign out')")

    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/admin/audit?username=newbie")
    text = await page.inner_text("table.list")
    assert "password_change" in text and "sign_in" in text
    async with page.expect_download() as info:
        await page.click("#export")
    exported = tmp_path / "audit.csv"
    await (await info.value).save_as(exported)
    assert "password_change" in exported.read_text()
    await page.close()


async def test_listen_live_plays_the_call_being_recorded(
    site: Site, browser: object, tmp_path: Path
) -> None:
    """Listen on the live page: the samples the page schedules on Web Audio are the call's
    (int16 / 32768, exactly), from where the server said, to the end of the recording; the
    call's own page offers the same while it is recorded."""
    call = LiveCall(site, session_id="50002", seconds=6.0, local_number="3001")
    live = await call.start(realtime=True)
    page = await browser.new_page()  # type: ignore[attr-defined]
    try:
        await sign_in(page, site, "listener")
        # The call's page, while it is recorded: Listen live, then Stop.
        rec_id = await wait_for(lambda: live_row(site, live.uid), what="the call's row")
        await page.goto(f"{site.base}/recordings/{rec_id}?listen-debug=1")
        await page.click("#listen-live button[data-listen]")
        await page.wait_for_selector("#listen-panel[data-state='playing']")
        await page.click("#listen-stop")
        await page.wait_for_selector("#listen-panel[data-state='stopped']")

        await page.goto(f"{site.base}/live?listen-debug=1")
        await page.click(f"#live button[data-listen='{live.uid}']")
        await page.wait_for_selector("#listen-panel[data-state='playing']")
        assert "3001" in await page.inner_text("#listen-panel")
        await page.wait_for_function("() => document.getElementById('listen-panel').dataset.ahead")
        # Played for real, at the call's rate: the audio clock runs.
        assert await page.evaluate("window.callrecListen.player.ctx.sampleRate") == 8000
        await page.wait_for_function("() => window.callrecListen.player.ctx.currentTime > 0.5")
        shot = screenshot_path(tmp_path, "live-listening.png")
        await page.screenshot(path=str(shot), full_page=False)
        rec_id = await call.finish()
        await page.wait_for_selector("#listen-panel[data-state='ended']")
        chunks = await page.evaluate("window.callrecListen.chunks")
        events = await page.evaluate("window.callrecListen.events")
    finally:
        await call.abort()
        await page.close()
    assert events[0]["event"] == "start" and events[0]["sample_rate"] == 8000
    assert events[-1]["event"] == "ended"
    rec = site.catalog.get(rec_id)
    assert rec is not None
    wav = np.frombuffer((site.server.root / rec.path).read_bytes()[44:], dtype="<i2")
    assert chunks and chunks[0]["position"] > 0  # it joined a call already under way
    played = 0
    for chunk in chunks:
        samples = np.array(chunk["channels"][0])
        expected = wav[chunk["position"] : chunk["position"] + samples.size] / 32768
        assert samples.size == expected.size
        assert np.max(np.abs(samples - expected)) < 1 / 32768
        played += samples.size
    last = chunks[-1]
    assert last["position"] + len(last["channels"][0]) == wav.size  # heard to the end
    assert played >= 8000  # more than a second of it


def live_row(site: Site, uid: str) -> int | None:
    return next((r.id for r in site.catalog.find(limit=1000) if r.uid == uid), None)
