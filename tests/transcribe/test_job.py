"""The ``transcribe`` job on a real runner, with the engine in niced worker processes: queued
by the policy when a recording completes, words attributed to the right party of a stereo
SIP call, and one transcript per recording however often it runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from callrec.catalog import Catalog, JobStore, TranscriptStore
from callrec.config import Settings
from callrec.jobs import JobRunner
from callrec.jobs.completion import KIND as COMPLETED
from callrec.jobs.completion import Completion
from callrec.jobs.transcription import KIND, TranscribeJobs, request
from callrec.transcribe import pool
from tests.support.catalog import finish_values, new_recording
from tests.support.settings import server_settings
from tests.support.speech import (
    CALLEE_SENTENCE,
    CALLER_SENTENCE,
    needs_espeak,
    speak,
    stereo,
    write_wav,
)

pytestmark = needs_espeak


def _sip_recording(catalog: Catalog, root: Path, n: int, **overrides: object) -> int:
    """A finished stereo SIP recording: the caller says one sentence, then the callee another."""
    path = f"2026-03-01/sip_{n}.wav"
    (root / "2026-03-01").mkdir(parents=True, exist_ok=True)
    write_wav(str(root / path), stereo(speak(CALLER_SENTENCE), speak(CALLEE_SENTENCE)), 16000, 2)
    values: dict[str, object] = dict(
        source="sip",
        codec="G722",
        sample_rate=16000,
        channels=2,
        path=path,
        uid=f"{n:032x}",
        extra={"sip": {"left": "caller", "right": "callee"}},
    )
    values.update(overrides)
    rec_id = catalog.create_recording(new_recording(n, **values))  # type: ignore[arg-type]
    catalog.finish_recording(rec_id, **finish_values())
    return rec_id


async def _run_jobs(catalog: Catalog, settings: Settings, root: Path, uids: list[str]) -> None:
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    completion = Completion(runner, catalog, settings, root=root)
    for kind in completion.kinds():
        runner.register(kind)
    completion.transcription = TranscribeJobs(runner, catalog, settings, root=root)
    runner.register(completion.transcription.kind())
    try:
        for uid in uids:
            await runner.enqueue(COMPLETED, uid, {"uid": uid})
        for _ in range(600):
            await runner.run_once()
            states = {s for (k, s) in JobStore(catalog).counts() if k in (KIND, COMPLETED)}
            if states <= {"done", "dead"}:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
        completion.close()


async def test_the_policy_queues_the_job_and_each_party_gets_its_words(
    catalog: Catalog, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    settings = server_settings(tmp_path, transcribe_policy=["source=sip"])
    sip = _sip_recording(catalog, root, 0)
    phone = _sip_recording(catalog, root, 1, source="server", extra={})
    await _run_jobs(catalog, settings, root, [f"{0:032x}", f"{1:032x}"])
    store = JobStore(catalog)
    job = store.find(KIND, str(sip))
    assert job is not None and job.state == "done", job
    assert store.find(KIND, str(phone)) is None  # not a SIP call: the policy leaves it
    transcripts = TranscriptStore(catalog)
    assert transcripts.get(phone) is None
    got = transcripts.get(sip)
    assert got is not None and got.engine == "pocketsphinx" and got.language == "en"
    said = {(w.speaker, w.word) for w in got.words}
    assert ("caller", "invoice") in said and ("callee", "cancel") in said
    assert ("callee", "invoice") not in said and ("caller", "cancel") not in said
    assert {w.channel for w in got.words if w.speaker == "caller"} == {0}
    assert got.audio_seconds > 5

    # On demand again: the job is queued again, and its run replaces the transcript.
    job_id, queued = request(store, sip)
    assert (job_id, queued) == (job.id, True)
    assert request(store, sip) == (job.id, False)  # already queued: nothing changes
    await _run_jobs(catalog, settings, root, [])
    again = transcripts.get(sip)
    assert again is not None and again.created_at > got.created_at
    assert [(w.word, w.start) for w in again.words] == [(w.word, w.start) for w in got.words]
    assert store.find(KIND, str(sip)).state == "done"  # type: ignore[union-attr]


async def test_a_missing_file_fails_the_job_with_the_reason(
    catalog: Catalog, tmp_path: Path
) -> None:
    root = tmp_path / "recordings"
    settings = server_settings(tmp_path, transcribe_policy=["all"])
    rec_id = _sip_recording(catalog, root, 0)
    (root / "2026-03-01" / "sip_0.wav").unlink()
    await _run_jobs(catalog, settings, root, [])
    request(JobStore(catalog), rec_id)
    runner = JobRunner(JobStore(catalog), poll_interval=0.05)
    jobs = TranscribeJobs(runner, catalog, settings, root=root)
    runner.register(jobs.kind())
    try:
        await runner.run_once()
    finally:
        await runner.stop()
        jobs.close()
    job = JobStore(catalog).find(KIND, str(rec_id))
    assert job is not None and job.state == "queued"  # retried later, with the reason
    assert job.last_error is not None and "cannot read" in job.last_error
    assert "sip_0.wav" in job.last_error


def test_the_workers_run_niced(tmp_path: Path) -> None:
    workers = pool.TranscriberPool("pocketsphinx", workers=1)
    try:
        nice = workers.submit(os.nice, 0)
    finally:
        workers.close()
    assert nice >= os.nice(0) + pool.NICE or nice == 19


@pytest.mark.parametrize("policy", [["tag=support"], ["extension=3009"]])
async def test_rules_that_do_not_match_queue_nothing(
    catalog: Catalog, tmp_path: Path, policy: list[str]
) -> None:
    root = tmp_path / "recordings"
    settings = server_settings(tmp_path, transcribe_policy=policy)
    rec_id = _sip_recording(catalog, root, 0)
    await _run_jobs(catalog, settings, root, [f"{0:032x}"])
    assert JobStore(catalog).find(KIND, str(rec_id)) is None


def test_the_command_line_transcribes_every_recording_without_a_transcript(
    catalog: Catalog, catalog_url: str, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from callrec.cli import app

    root = tmp_path / "recordings"
    first = _sip_recording(catalog, root, 0)
    second = _sip_recording(catalog, root, 1, source="server", channels=1, extra={})
    write_wav(str(root / "2026-03-01" / "sip_1.wav"), speak(CALLEE_SENTENCE), 16000)
    env = {"CALLREC_DATABASE_URL": catalog_url, "CALLREC_RECORDINGS_DIR": str(root)}
    runner = CliRunner()
    done = runner.invoke(app, ["transcribe", "--all", "--json"], env=env)
    assert done.exit_code == 0, done.output
    ran = json.loads(done.stdout)
    assert ran["engine"] == "pocketsphinx"
    assert [r["id"] for r in ran["recordings"]] == [first, second]
    store = TranscriptStore(catalog)
    mono = store.get(second)
    assert mono is not None and "cancel" in mono.text.split()
    assert {w.speaker for w in mono.words} == {""}
    again = runner.invoke(app, ["transcribe", "--all", "--json"], env=env)
    assert json.loads(again.stdout)["recordings"] == []  # nothing left without a transcript
    bad = runner.invoke(app, ["transcribe", "--all", "--engine", "kaldi"], env=env)
    assert bad.exit_code == 2 and "unknown transcription engine 'kaldi'" in bad.output
