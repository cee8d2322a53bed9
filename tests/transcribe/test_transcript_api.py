"""A spoken call end to end: the phone simulator records espeak-ng speech, the server's job
transcribes it (policy ``all``), and the call is found by a word said in it through the API
and the command line; restricted users never see its transcript."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from typer.testing import CliRunner

from callrec.catalog import JobStore, TranscriptStore
from callrec.cli import app
from callrec.jobs.transcription import KIND
from callrec.sim.call import record_call
from tests.support.speech import CALLEE_SENTENCE, needs_espeak, speak
from tests.support.waiting import wait_for
from tests.support.web import DEVICE_A, Site, start_site, stop_site

pytestmark = needs_espeak


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spoken(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Site, int]]:
    site = await start_site(tmp_path_factory.mktemp("site"), transcribe_policy=["all"])
    try:
        result = await record_call(
            "127.0.0.1",
            site.server.control_port,
            codec="G722",
            pcm=speak(CALLEE_SENTENCE, 16000),
            realtime=False,
            session_id="30001",
            device=DEVICE_A,
            direction="out",
            local_number="3001",
            remote_number="2011",
            remote_name="Alice Example",
        )
        assert result.ok, result.error
        rec_id = max(r.id for r in site.catalog.find(limit=10) if r.session_id == "30001")
        store = TranscriptStore(site.catalog)
        await wait_for(
            lambda: store.get(rec_id) is not None, what="the call's transcript", timeout=90
        )
        yield site, rec_id
    finally:
        await stop_site(site)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_call_is_found_by_a_word_said_with_the_phrase(spoken: tuple[Site, int]) -> None:
    site, rec_id = spoken
    async with site.client("listener") as http:
        found = (await http.get("/api/v1/recordings", params={"q": "cancel"})).json()
        assert [r["id"] for r in found["items"]] == [rec_id]
        assert "[cancel]" in found["items"][0]["snippet"]
        phrase = (await http.get("/api/v1/recordings", params={"said": "like to cancel"})).json()
        assert [r["id"] for r in phrase["items"]] == [rec_id]
        assert "[like to cancel]" in phrase["items"][0]["snippet"]
        assert (await http.get("/api/v1/recordings", params={"said": "cancel like"})).json()[
            "items"
        ] == []
        plain = (await http.get("/api/v1/recordings", params={"q": "Alice"})).json()
        assert plain["items"][0]["snippet"] is None  # found by its name, not by what was said


@pytest.mark.asyncio(loop_scope="module")
async def test_the_transcript_as_json_webvtt_and_srt(spoken: tuple[Site, int]) -> None:
    site, rec_id = spoken
    async with site.client("listener") as http:
        answer = await http.get(f"/api/v1/recordings/{rec_id}/transcript")
        assert answer.status_code == 200
        body = answer.json()
        assert body["engine"] == "pocketsphinx" and body["speakers"] == []
        words = body["words"]
        cancel = next(w for w in words if w["word"] == "cancel")
        assert cancel["channel"] == 0 and cancel["speaker"] == ""
        assert 1.0 < cancel["start"] < cancel["end"] < 2.0  # "i would like to" first
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert body["text"] == " ".join(w["word"] for w in words)
        vtt = await http.get(f"/api/v1/recordings/{rec_id}/transcript.vtt")
        assert vtt.headers["content-type"].startswith("text/vtt")
        assert vtt.text.startswith("WEBVTT\n\n1\n00:00:00.") and "cancel" in vtt.text
        srt = await http.get(f"/api/v1/recordings/{rec_id}/transcript.srt")
        assert srt.text.startswith("1\n00:00:00,") and "cancel" in srt.text
        none = await http.get(f"/api/v1/recordings/{site.recs.get('x', 10**6)}/transcript")
        assert none.status_code == 404
    entries = site.catalog.audit_entries(action="transcript", recording_id=rec_id)
    assert {e.username for e in entries} == {"lisa"} and len(entries) == 3


@pytest.mark.asyncio(loop_scope="module")
async def test_restricted_users_never_see_the_transcript(spoken: tuple[Site, int]) -> None:
    site, rec_id = spoken
    async with site.client("ext3002") as http:
        for suffix in ("", ".vtt", ".srt"):
            answer = await http.get(f"/api/v1/recordings/{rec_id}/transcript{suffix}")
            assert answer.status_code == 404, suffix
        assert (await http.get("/api/v1/recordings", params={"q": "cancel"})).json()["items"] == []
        assert (await http.get("/api/v1/recordings", params={"said": "cancel"})).json()[
            "items"
        ] == []
    denied = site.catalog.audit_entries(action="denied", recording_id=rec_id, username="ext3002")
    assert len(denied) == 3


@pytest.mark.asyncio(loop_scope="module")
async def test_an_admin_asks_for_it_again(spoken: tuple[Site, int]) -> None:
    site, rec_id = spoken
    store = TranscriptStore(site.catalog)
    before = store.get(rec_id)
    assert before is not None
    async with site.client("listener") as http:
        assert (await http.post(f"/api/v1/recordings/{rec_id}/transcribe")).status_code == 403
    async with site.client("admin") as http:
        answer = await http.post(f"/api/v1/recordings/{rec_id}/transcribe")
        assert answer.status_code == 202, answer.text
        assert answer.json()["queued"] is True
    job = JobStore(site.catalog).find(KIND, str(rec_id))
    assert job is not None and answer.json()["job_id"] == job.id

    def replaced() -> bool:
        now = store.get(rec_id)
        return now is not None and now.created_at > before.created_at

    await wait_for(replaced, what="the new transcript", timeout=90)
    after = store.get(rec_id)
    assert after is not None and after.text == before.text
    assert site.catalog.audit_entries(action="transcribe", recording_id=rec_id)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_command_line_transcribes_and_finds_the_call(
    spoken: tuple[Site, int], tmp_path: Path
) -> None:
    site, rec_id = spoken
    settings = site.server.settings
    env = {
        "CALLREC_DATABASE_URL": settings.database_url,
        "CALLREC_RECORDINGS_DIR": str(settings.recordings_dir),
    }
    runner = CliRunner()
    done = await asyncio.to_thread(runner.invoke, app, ["transcribe", str(rec_id)], env=env)
    assert done.exit_code == 0, done.output
    assert "1 recordings transcribed with pocketsphinx, 0 failed" in done.output
    found = await asyncio.to_thread(
        runner.invoke, app, ["recordings", "list", "--said", "cancel", "--json"], env=env
    )
    assert found.exit_code == 0, found.output
    rows = json.loads(found.output)
    assert [r["id"] for r in rows] == [rec_id] and "[cancel]" in rows[0]["snippet"]
    table = await asyncio.to_thread(
        runner.invoke,
        app,
        ["recordings", "list", "--said", "cancel"],
        env={**env, "COLUMNS": "250"},
    )
    assert "[cancel]" in table.output
    missing = await asyncio.to_thread(runner.invoke, app, ["transcribe", "999999"], env=env)
    assert missing.exit_code == 1 and "no recording 999999" in missing.output
    both = await asyncio.to_thread(runner.invoke, app, ["transcribe", "--all", "1"], env=env)
    assert both.exit_code == 2


@pytest.mark.asyncio(loop_scope="module")
async def test_the_list_page_shows_the_phrase_said(spoken: tuple[Site, int]) -> None:
    from tests.web.test_call_page import signed_in

    site, rec_id = spoken
    async with signed_in(site, "listener") as client:
        page = await client.get("/recordings", params={"q": "cancel"})
        assert page.status_code == 200
        row = page.text.split(f'<tr data-id="{rec_id}">', 1)[1].split("</tr>", 1)[0]
        assert '<div class="said"' in row and "<mark>cancel</mark>" in row
        plain = await client.get("/recordings", params={"q": "Alice"})
        assert '<div class="said"' not in plain.text
    async with signed_in(site, "ext3002") as client:
        page = await client.get("/recordings", params={"q": "cancel"})
        assert f'data-id="{rec_id}"' not in page.text and "<mark>" not in page.text
