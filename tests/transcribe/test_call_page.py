"""A recording's transcript on its page (issue 18): an admin asks for it with the page's
button, the embedded engine transcribes espeak-ng speech, and in headless Chromium a click
(or the keyboard) on a word seeks the player there and marks it; playing moves the mark. The
words in lines per speaker, the job's state and reason, the downloads and the caption track
over HTTP; a restricted user sees none of it.

The server is real (phone simulator, job runner, niced PocketSphinx worker); the browser is
Debian's chromium driven by Playwright, as in tests/web/test_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from callrec.catalog import JobStore, TranscriptStore, TranscriptWord
from callrec.jobs.transcription import KIND
from callrec.sim.call import record_call
from tests.support.speech import CALLEE_SENTENCE, needs_espeak, speak
from tests.support.waiting import wait_for
from tests.support.web import DEVICE_A, Site, start_site, stop_site
from tests.web.test_browser import (
    DESKTOP,
    chromium,
    screenshot_path,
    sign_in,
)
from tests.web.test_call_page import signed_in

pytestmark = [needs_espeak, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    """A server that transcribes on demand only (no policy): the page's button asks."""
    s = await start_site(tmp_path_factory.mktemp("site"))
    try:
        result = await record_call(
            "127.0.0.1",
            s.server.control_port,
            codec="G722",
            pcm=speak(CALLEE_SENTENCE, 16000),
            realtime=False,
            session_id="31001",
            device=DEVICE_A,
            direction="out",
            local_number="3001",
            remote_number="2011",
            remote_name="Alice Example",
        )
        assert result.ok, result.error
        s.recs["spoken"] = max(r.id for r in s.catalog.find(limit=10) if r.session_id == "31001")
        s.recs["sip"] = await s.record(
            codec="PCMA",
            seconds=1.0,
            session_id="31002",
            device=DEVICE_A,
            direction="in",
            local_number="3001",
            remote_number="0301234",
        )
        s.recs["gone"] = await s.record(
            codec="PCMA",
            seconds=1.0,
            session_id="31003",
            device=DEVICE_A,
            direction="in",
            local_number="3001",
            remote_number="0305678",
        )
        yield s
    finally:
        await stop_site(s)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with chromium(profile, **DESKTOP) as context:
        yield context


class _Lines(HTMLParser):
    """The transcript's lines as (speaker, [(word, start)]) from the page's HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, list[tuple[str, float]]]] = []
        self._who = False
        self._word: float | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "p" and "line" in classes:
            self.lines.append(("", []))
        elif tag == "span" and "who" in classes:
            self._who = True
        elif tag == "button" and "word" in classes:
            self._word = float(a["data-start"] or "nan")

    def handle_endtag(self, tag: str) -> None:
        self._who = False
        self._word = None

    def handle_data(self, data: str) -> None:
        if self._who:
            self.lines[-1] = (data.strip(), self.lines[-1][1])
        elif self._word is not None:
            self.lines[-1][1].append((data, self._word))


def _lines(html: str) -> list[tuple[str, list[tuple[str, float]]]]:
    parser = _Lines()
    parser.feed(html)
    return parser.lines


def _w(word: str, start: float, channel: int) -> TranscriptWord:
    return TranscriptWord(
        start=start,
        end=start + 0.4,
        word=word,
        confidence=0.9,
        channel=channel,
        speaker=("caller", "callee")[channel],
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sip(site: Site) -> int:
    """A stereo SIP call's words as the job stores them (which party said what is the
    engine tests' business; here: how the page lays them out), stored out of order."""
    rec_id = site.recs["sip"]
    words = [
        _w("good", 0.5, 1),
        _w("hello", 0.2, 0),
        _w("there", 0.7, 0),
        _w("morning", 1.0, 1),
        _w("bye", 4.0, 1),
        _w("<b>&", 2.0, 0),
    ]
    TranscriptStore(site.catalog).replace(
        rec_id, words, engine="test", language="en", audio_seconds=5, elapsed_seconds=1
    )
    return rec_id


async def test_words_in_lines_per_speaker_with_downloads_and_track(site: Site, sip: int) -> None:
    rec_id = sip
    async with signed_in(site, "listener") as client:
        page = await client.get(f"/recordings/{rec_id}")
        assert page.status_code == 200
    html = page.text
    assert _lines(html) == [
        ("caller", [("hello", 0.2)]),
        ("callee", [("good", 0.5)]),
        ("caller", [("there", 0.7)]),
        ("callee", [("morning", 1.0)]),
        ("caller", [("<b>&", 2.0)]),  # escaped in the HTML, the word itself in the DOM
        ("callee", [("bye", 4.0)]),  # a pause of 1 s or more: a new line
    ]
    assert "&lt;b&gt;&amp;" in html and "<b>&" not in html
    for suffix in (".vtt", ".srt", ""):
        assert f'href="/api/v1/recordings/{rec_id}/transcript{suffix}" download' in html
    assert re.search(
        rf'<track kind="captions" src="/api/v1/recordings/{rec_id}/transcript.vtt" '
        r'srclang="en" label="Transcript">',
        html,
    )
    assert f'action="/recordings/{rec_id}/transcribe"' not in html  # not an admin
    entries = site.catalog.audit_entries(action="transcript", recording_id=rec_id)
    assert ("lisa", "page") in [(e.username, e.detail.get("format")) for e in entries]


async def test_a_restricted_user_sees_no_transcript_anywhere(site: Site, sip: int) -> None:
    rec_id = sip
    async with signed_in(site, "ext3002") as client:
        assert (await client.get(f"/recordings/{rec_id}")).status_code == 404
        listed = await client.get("/recordings", params={"q": "morning"})
        assert f'data-id="{rec_id}"' not in listed.text
        # Not the row, nor the phrase around the word (the words either side of it).
        assert '<div class="said"' not in listed.text and "<mark>" not in listed.text
        assert "good" not in listed.text and "hello" not in listed.text
        assert (await client.get(f"/api/v1/recordings/{rec_id}/transcript.vtt")).status_code == 404
    assert not site.catalog.audit_entries(
        action="transcript", recording_id=rec_id, username="ext3002"
    )


async def test_a_failed_transcription_says_why(site: Site) -> None:
    rec_id = site.recs["gone"]
    rec = site.catalog.get(rec_id)
    assert rec is not None
    (site.server.settings.recordings_dir / rec.path).unlink()
    async with signed_in(site, "listener") as client:
        page = (await client.get(f"/recordings/{rec_id}")).text
        assert "Not transcribed." in page and "/transcribe" not in page
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = await client.post(f"/recordings/{rec_id}/transcribe", data={"csrf": token})
        assert refused.status_code == 403
    async with signed_in(site, "admin") as client:
        page = (await client.get(f"/recordings/{rec_id}")).text
        token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        asked = await client.post(f"/recordings/{rec_id}/transcribe", data={"csrf": token})
        assert asked.status_code == 303
        assert asked.headers["location"] == f"/recordings/{rec_id}#transcript"
        store = JobStore(site.catalog)

        def failed() -> bool:
            job = store.find(KIND, str(rec_id))
            return job is not None and bool(job.last_error)

        await wait_for(failed, what="the transcription to fail", timeout=60)
        page = (await client.get(f"/recordings/{rec_id}")).text
        section = page.split('id="transcript"', 1)[1].split("</section>", 1)[0]
        assert 'data-transcribe-state="queued"' in section  # retried later
        assert "the last attempt failed:" in section and rec.path.split("/")[-1] in section
    async with signed_in(site, "listener") as client:
        page = (await client.get(f"/recordings/{rec_id}")).text
        section = page.split('id="transcript"', 1)[1].split("</section>", 1)[0]
        assert 'data-transcribe-state="queued"' in section
        assert "last attempt failed" not in section  # the reason is for admins


async def _current(page: Any) -> tuple[str, float] | None:
    found: tuple[str, float] | None = await page.evaluate(
        "() => { const w = document.querySelector('#transcript button.word.current');"
        " return w ? [w.textContent, parseFloat(w.dataset.start)] : null; }"
    )
    return None if found is None else (found[0], found[1])


async def test_transcribe_click_a_word_seek_and_follow(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    rec_id = site.recs["spoken"]
    page = await browser.new_page()
    await sign_in(page, site, "admin")
    await page.goto(f"{site.base}/recordings/{rec_id}")
    shown_before = (await page.inner_text("#transcript")).split()
    assert shown_before == ["Transcript", "Not", "transcribed.", "Transcribe"]
    await page.click("#transcript button[type=submit]")
    await page.wait_for_url(f"{site.base}/recordings/{rec_id}#transcript")
    assert "Transcription queued." in await page.inner_text(".flash")
    state = await page.get_attribute("[data-transcribe-state]", "data-transcribe-state")
    assert state in ("queued", "running")
    store = TranscriptStore(site.catalog)
    await wait_for(lambda: store.get(rec_id) is not None, what="the transcript", timeout=90)
    transcript = store.get(rec_id)
    assert transcript is not None
    cancel = next(w for w in transcript.words if w.word == "cancel")
    await page.reload()
    assert await page.locator("[data-transcribe-state]").count() == 0
    shown = await page.eval_on_selector_all(
        "#transcript button.word", "ws => ws.map(w => w.textContent)"
    )
    assert shown == [w.word for w in transcript.words]
    # The caption track is not fetched (nor audited) by a page view.
    reads = site.catalog.audit_entries(action="transcript", recording_id=rec_id)
    assert [e.detail.get("format") for e in reads] == ["page"]

    # A click seeks the player to the word's start and marks the word.
    word = page.locator(f"#transcript button.word[data-start='{cancel.start:.3f}']")
    await word.click()
    position = await page.evaluate("document.getElementById('audio').currentTime")
    assert abs(position - cancel.start) < 0.01
    assert await _current(page) == ("cancel", pytest.approx(cancel.start, abs=0.001))
    assert await word.get_attribute("aria-current") == "true"

    # The keyboard: tab to the first word, enter seeks there.
    first = transcript.words[0]
    await page.focus("#transcript button.word")
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        "t => Math.abs(document.getElementById('audio').currentTime - t) < 0.01", arg=first.start
    )
    assert await _current(page) == (first.word, pytest.approx(first.start, abs=0.001))

    # Playing from "cancel" moves the mark on to the words after it, as the audio plays them.
    await word.click()
    await page.evaluate("document.getElementById('audio').play()")
    await page.wait_for_function(
        "t => { const w = document.querySelector('#transcript button.word.current');"
        " return w && parseFloat(w.dataset.start) > t; }",
        arg=cancel.start + 0.001,
    )
    await page.evaluate("document.getElementById('audio').pause()")
    now = await page.evaluate("document.getElementById('audio').currentTime")
    marked = await _current(page)
    assert marked is not None
    later = [w for w in transcript.words if w.start <= now + 0.3]
    assert marked[1] > cancel.start and marked[1] == pytest.approx(later[-1].start, abs=0.35)
    shot = screenshot_path(tmp_path, "screenshots/call-transcript-desktop.png")
    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(shot))

    # On a phone's screen: the words wrap, nothing is wider than the screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.reload()
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await word.click()
    assert await _current(page) == ("cancel", pytest.approx(cancel.start, abs=0.001))
    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")
    phone = screenshot_path(tmp_path, "screenshots/call-transcript-phone.png")
    await page.screenshot(path=str(phone))
    await page.close()

    # The list, searched in the browser for a word said, shows the phrase with it marked.
    page = await browser.new_page()
    await sign_in(page, site, "listener")
    await page.fill("input[name=q]", "cancel")
    await page.wait_for_function(
        "id => { const rows = [...document.querySelectorAll('#results tbody tr[data-id]')];"
        " return rows.length === 1 && rows[0].dataset.id === id; }",
        arg=str(rec_id),
    )
    said = page.locator(f"tr[data-id='{rec_id}'] .said")
    assert await said.locator("mark").all_inner_texts() == ["cancel"]
    await page.close()
