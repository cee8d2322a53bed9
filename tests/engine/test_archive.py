"""The archive policy (issue 16, part 4) on real recordings, SQLite and PostgreSQL: FLAC
decodes sample for sample to the WAV, Opus to exactly its length, the row names the verified
copy and its SHA-256, and a ``kill -9`` at any step leaves a playable catalogued file."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog import integrity as integrity_chain
from callrec.catalog.archives import DONE, ArchiveStore
from callrec.catalog.jobs import JobStore
from callrec.config import Settings
from callrec.engine.archive import STEPS, archive_sweep, new_holder, transcode_one
from callrec.engine.journalfile import sidecar_path
from callrec.engine.rebuild import rebuild_catalogue
from callrec.integrity.verify import verify
from callrec.media.decode import layout, read_all
from callrec.media.wav import sha256_file
from callrec.service import Service
from tests.support.recording import record
from tests.support.settings import server_settings
from tests.support.waiting import wait_for
from tests.support.web import CALLS, make_call

LATER = timedelta(days=1)


async def record_calls(settings: Settings, *names: str) -> dict[str, int]:
    server = Service(settings)
    await server.start()
    try:
        return {name: await make_call(server, **CALLS[name]) for name in names}
    finally:
        await server.stop()


def policy(settings: Settings, fmt: str, **more: object) -> Settings:
    return dataclasses.replace(settings, archive_format=fmt, archive_after_days=0.5, **more)


def samples_of(path: Path) -> np.ndarray:
    return read_all(path)[1]


def envelope_error(reference: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """How far the 20 ms loudness of the two differs (RMS of the difference over RMS of the
    reference's): the same sound at the same time gives a few hundredths."""
    window = rate // 50
    usable = len(reference) // window * window

    def loudness(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(x[:usable].astype(np.float64).reshape(-1, window) ** 2, axis=1))

    r, d = loudness(reference), loudness(decoded)
    return float(np.sqrt(np.mean((r - d) ** 2)) / np.sqrt(np.mean(r**2)))


def no_leftovers(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if ".archiving" in p.name or p.name.endswith(".tmp")
    )


@pytest.fixture
def settings(tmp_path: Path, catalog_url: str) -> Settings:
    return server_settings(tmp_path, database_url=catalog_url)


async def test_flac_is_sample_exact_and_catalogued(settings: Settings) -> None:
    ids = await record_calls(settings, "ivan", "alice")  # G.722 16 kHz, PCMA 8 kHz
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        before = {name: catalog.get(rec_id) for name, rec_id in ids.items()}
        originals = {name: samples_of(root / rec.path) for name, rec in before.items() if rec}
        # Not old enough yet: nothing happens.
        young = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC))
        assert young.outcomes == []
        report = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        assert sorted(o.result for o in report.outcomes) == ["archived", "archived"]
        for name, rec_id in ids.items():
            old, rec = before[name], catalog.get(rec_id)
            assert old is not None and rec is not None
            assert rec.path == old.path.removesuffix(".wav") + ".flac"
            path = root / rec.path
            assert rec.sha256 == sha256_file(path) and rec.size_bytes == path.stat().st_size
            assert rec.size_bytes < (old.size_bytes or 0)
            found = layout(path)
            assert (found.sample_rate, found.channels) == (old.sample_rate, old.channels)
            np.testing.assert_array_equal(samples_of(path), originals[name])
            assert rec.extra["archive"]["original_sha256"] == old.sha256
            assert rec.extra["archive"]["format"] == "flac"
            # The WAV and its sidecar went; the archive's sidecar names it.
            assert not (root / old.path).exists()
            assert not sidecar_path(root / old.path).exists()
            assert sidecar_path(path).is_file()
            state = ArchiveStore(catalog).get(rec_id)
            assert state is not None and state.state == DONE
            assert state.wav_sha256 == old.sha256 and state.archive_sha256 == rec.sha256
        # Idempotent: a second sweep finds nothing to do.
        again = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        assert again.outcomes == [] and again.cleaned == []
        totals = ArchiveStore(catalog).totals()
        assert totals.formats == {"flac": 2} and totals.saved_bytes > 0
        # The hash chain follows the switch (an `updated` entry naming the archive):
        # `callrec verify` finds nothing wrong with archived recordings.
        checked = verify(catalog, root, None)
        assert checked.findings == [] and checked.files == 2
        for rec_id in ids.values():
            entries = [e.kind for e in chain_entries(catalog, rec_id)]
            assert entries == ["recorded", "updated"]
    assert no_leftovers(root) == []


def chain_entries(catalog: Catalog, rec_id: int) -> list[Any]:
    with catalog.transaction("read the chain") as session:
        return list(integrity_chain.entries_of(session.connection(), rec_id))


async def test_opus_decodes_to_exactly_the_wavs_length(settings: Settings) -> None:
    ids = await record_calls(settings, "alice", "ivan")
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        before = {name: catalog.get(rec_id) for name, rec_id in ids.items()}
        originals = {name: samples_of(root / rec.path) for name, rec in before.items() if rec}
        report = archive_sweep(catalog, policy(settings, "opus"), datetime.now(UTC) + LATER)
        assert [o.result for o in report.outcomes] == ["archived", "archived"]
        for name, rec_id in ids.items():
            old, rec = before[name], catalog.get(rec_id)
            assert old is not None and rec is not None
            assert rec.path.endswith(".opus") and rec.sha256 == sha256_file(root / rec.path)
            decoded = samples_of(root / rec.path)
            assert decoded.shape == originals[name].shape
            assert envelope_error(originals[name][:, 0], decoded[:, 0], old.sample_rate) < 0.15
            # Opus at 20 kbit/s: a tenth of the 8 kHz WAV, a twentieth of the 16 kHz one.
            assert (rec.size_bytes or 0) < (old.size_bytes or 0) / 5


async def test_dry_run_and_ids(settings: Settings) -> None:
    ids = await record_calls(settings, "alice", "bob")
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        dry = archive_sweep(
            catalog, policy(settings, "flac"), datetime.now(UTC) + LATER, dry_run=True
        )
        assert sorted(o.recording_id for o in dry.outcomes) == sorted(ids.values())
        assert {o.result for o in dry.outcomes} == {"would"}
        assert all((root / o.path).suffix == ".wav" for o in dry.outcomes)
        assert ArchiveStore(catalog).totals().states == {}
        # --ids: that one only, young as it is.
        only = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC), ids=[ids["bob"]])
        assert [(o.recording_id, o.result) for o in only.outcomes] == [(ids["bob"], "archived")]
        alice = catalog.get(ids["alice"])
        assert alice is not None and alice.path.endswith(".wav")


async def test_a_recording_claimed_by_a_live_process_is_left_alone(settings: Settings) -> None:
    ids = await record_calls(settings, "bob")
    root = settings.recordings_dir.resolve()
    now = datetime.now(UTC) + LATER
    with Catalog(settings.database_url) as catalog:
        store = ArchiveStore(catalog)
        other = new_holder()
        got = store.claim(
            ids["bob"],
            fmt="flac",
            holder=other,
            until=now + timedelta(hours=1),
            now=now,
            stale=lambda *_: False,
        )
        assert got is not None
        outcome = transcode_one(catalog, root, ids["bob"], fmt="flac", opus_bitrate=20000, now=now)
        assert outcome.result == "skipped"
        rec = catalog.get(ids["bob"])
        assert rec is not None and rec.path.endswith(".wav")
        # Its holder lets go: the next sweep takes it.
        store.release(ids["bob"], other)
        report = archive_sweep(catalog, policy(settings, "flac"), now)
        assert [o.result for o in report.outcomes] == ["archived"]


async def test_a_changed_wav_is_not_archived(settings: Settings) -> None:
    ids = await record_calls(settings, "bob")
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        rec = catalog.get(ids["bob"])
        assert rec is not None
        wav = root / rec.path
        data = bytearray(wav.read_bytes())
        data[-1] ^= 0xFF
        wav.write_bytes(bytes(data))
        report = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        (outcome,) = report.outcomes
        assert outcome.result == "failed" and "SHA-256 differs" in outcome.error
        after = catalog.get(ids["bob"])
        assert after is not None and after.path == rec.path and wav.is_file()
        state = ArchiveStore(catalog).get(ids["bob"])
        assert state is not None and state.state == "failed"
        # Not retried by every sweep (the WAV is as it is); by --ids it is.
        later = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        assert later.outcomes == []
    assert no_leftovers(root) == []


async def test_rebuild_from_the_disk_names_the_archive(settings: Settings, tmp_path: Path) -> None:
    ids = await record_calls(settings, "alice")
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        archived = catalog.get(ids["alice"])
    assert archived is not None
    with Catalog(f"sqlite:///{tmp_path / 'rebuilt.db'}") as fresh:
        fresh.migrate()
        report = rebuild_catalogue(fresh, root)
        assert report.added == 1 and report.archived == 1
        (row,) = fresh.find(limit=10)
        assert (row.path, row.sha256, row.size_bytes) == (
            archived.path,
            archived.sha256,
            archived.size_bytes,
        )
        assert (
            row.extra["archive"]["original_sha256"] == archived.extra["archive"]["original_sha256"]
        )
        # Rebuilding again changes nothing.
        assert rebuild_catalogue(fresh, root).archived == 0


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from callrec.catalog import Catalog
    from callrec.config import Settings
    from callrec.engine.archive import archive_sweep

    url, root, fmt, at = sys.argv[1:5]
    settings = Settings(
        recordings_dir=Path(root), database_url=url, archive_format=fmt, archive_after_days=0
    )

    def step(name):
        if name == at:
            os.kill(os.getpid(), signal.SIGKILL)

    archive_sweep(Catalog(url), settings, datetime.now(UTC) + timedelta(days=1), step=step)
    """
)


@pytest.mark.parametrize("at", STEPS)
async def test_kill_9_at_each_step_leaves_a_playable_catalogued_file(
    settings: Settings, at: str
) -> None:
    ids = await record_calls(settings, "bob")
    root = settings.recordings_dir.resolve()
    with Catalog(settings.database_url) as catalog:
        old = catalog.get(ids["bob"])
        assert old is not None
        original = samples_of(root / old.path)
        done = subprocess.run(
            [sys.executable, "-c", CRASH_SCRIPT, settings.database_url, str(root), "flac", at],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == -9, done.stderr.decode()
        # Killed: whichever the row names is there, whole, and decodes to the call.
        rec = catalog.get(ids["bob"])
        assert rec is not None
        assert sha256_file(root / rec.path) == rec.sha256
        np.testing.assert_array_equal(samples_of(root / rec.path), original)
        switched = STEPS.index(at) >= STEPS.index("switched")
        assert rec.path.endswith(".flac" if switched else ".wav")
        # The next sweep takes the dead process's claim over and finishes the job.
        report = archive_sweep(catalog, policy(settings, "flac"), datetime.now(UTC) + LATER)
        if switched:
            assert report.outcomes == []
        else:
            assert [o.result for o in report.outcomes] == ["archived"]
        final = catalog.get(ids["bob"])
        assert final is not None and final.path.endswith(".flac")
        assert sha256_file(root / final.path) == final.sha256
        np.testing.assert_array_equal(samples_of(root / final.path), original)
        state = ArchiveStore(catalog).get(ids["bob"])
        assert state is not None and state.state == DONE
    assert no_leftovers(root) == []
    # One recording, one audio file, one sidecar.
    files = sorted(p.name for p in root.rglob("*") if p.is_file() and ".callrec" not in p.parts)
    name = Path(final.path).name
    assert files == [name, name + ".json"]


def test_the_pid_of_a_claim_is_checked_on_this_host() -> None:
    from callrec.engine.archive import claim_is_stale

    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    assert not claim_is_stale(new_holder(), later, now)  # this process
    assert claim_is_stale(new_holder(), now - timedelta(seconds=1), now)  # ran out
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = new_holder().split(":")[0]
    assert claim_is_stale(f"{host}:{dead}:x", later, now)
    assert not claim_is_stale(f"elsewhere:{os.getpid()}:x", later, now)  # cannot tell: wait


async def test_serve_archives_on_its_own_and_stops_cleanly(settings: Settings) -> None:
    server = Service(
        dataclasses.replace(
            settings, archive_format="flac", archive_after_days=0, archive_interval=0.2
        )
    )
    await server.start()
    try:
        rec_id = await make_call(server, **CALLS["bob"])

        def archived() -> RecordingInfo | None:
            rec = server.catalog.get(rec_id)
            return rec if rec is not None and rec.path.endswith(".flac") else None

        rec = await wait_for(archived, what="serve's archive sweep", timeout=60)
        assert sha256_file(server.root / rec.path) == rec.sha256
        # The sweeps are jobs of the runner (one per period), visible like any other.
        store = JobStore(server.catalog)

        def sweep_job() -> bool:
            done = store.list_jobs(kind="archive.sweep", state="done", limit=1000)
            details = [a.detail for job in done for a in store.attempts(job.id)]
            return any(d.startswith("1 archived as flac") for d in details)

        await wait_for(sweep_job, what="the archive.sweep job's history", timeout=30)
        # ...and so is the hash chain's signature (integrity.sign), at its own period.
        assert store.list_jobs(kind="integrity.sign")
    finally:
        await server.stop()
    assert no_leftovers(settings.recordings_dir.resolve()) == []


SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from callrec.catalog import Catalog
    from callrec.config import Settings
    from callrec.engine.archive import archive_sweep

    url, root = sys.argv[1:3]
    settings = Settings(
        recordings_dir=Path(root), database_url=url, archive_format="flac", archive_after_days=0
    )
    report = archive_sweep(Catalog(url), settings, datetime.now(UTC) + timedelta(days=1))
    print(json.dumps([[o.recording_id, o.result] for o in report.outcomes]))
    """
)


async def test_two_processes_at_once_archive_each_recording_once(settings: Settings) -> None:
    ids = await record_calls(settings, "alice", "bob", "ivan", "carol")
    root = settings.recordings_dir.resolve()
    argv = [sys.executable, "-c", SWEEP_SCRIPT, settings.database_url, str(root)]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outcomes: list[tuple[int, str]] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        outcomes += [(rec_id, result) for rec_id, result in json.loads(out)]
    archived = sorted(rec_id for rec_id, result in outcomes if result == "archived")
    assert archived == sorted(ids.values())  # each once, by one of the two
    assert {result for _, result in outcomes} <= {"archived", "skipped"}
    with Catalog(settings.database_url) as catalog:
        for rec_id in ids.values():
            rec = catalog.get(rec_id)
            assert rec is not None and rec.path.endswith(".flac")
            assert sha256_file(root / rec.path) == rec.sha256
            state = ArchiveStore(catalog).get(rec_id)
            assert state is not None and state.state == DONE and state.attempts == 1
    assert no_leftovers(root) == []


async def test_a_recording_without_audio_is_left_as_it_is(settings: Settings) -> None:
    server = Service(settings)
    await server.start()
    try:
        await record(server, "PCMA", [], session_id="empty")
        (rec,) = server.catalog.find(limit=10)
    finally:
        await server.stop()
    assert rec.size_bytes == 44
    with Catalog(settings.database_url) as catalog:
        swept = archive_sweep(catalog, policy(settings, "opus"), datetime.now(UTC) + LATER)
        assert swept.outcomes == []
        asked = archive_sweep(catalog, policy(settings, "opus"), datetime.now(UTC), ids=[rec.id])
        assert asked.outcomes == []
        root = settings.recordings_dir.resolve()
        one = transcode_one(
            catalog, root, rec.id, fmt="flac", opus_bitrate=20000, now=datetime.now(UTC)
        )
        assert one.result == "skipped"
        assert ArchiveStore(catalog).get(rec.id) is None
        after = catalog.get(rec.id)
        assert after is not None and after.path == rec.path


async def test_a_claim_taken_over_or_a_recording_deleted_meanwhile(settings: Settings) -> None:
    ids = await record_calls(settings, "alice", "bob")
    root = settings.recordings_dir.resolve()
    now = datetime.now(UTC) + LATER
    with Catalog(settings.database_url) as catalog:
        store = ArchiveStore(catalog)

        def steal(name: str) -> None:
            if name == "verified":  # another process took the claim over (it ran out)
                store.claim(
                    ids["alice"],
                    fmt="flac",
                    holder="elsewhere:1:x",
                    until=now + timedelta(hours=1),
                    now=now,
                    stale=lambda *_: True,
                )

        stolen = transcode_one(
            catalog, root, ids["alice"], fmt="flac", opus_bitrate=20000, now=now, step=steal
        )
        assert stolen.result == "skipped" and "claim" in stolen.error
        alice = catalog.get(ids["alice"])
        assert alice is not None and alice.path.endswith(".wav")
        assert sha256_file(root / alice.path) == alice.sha256

        def delete(name: str) -> None:
            if name == "sidecar":
                catalog.delete_recording(ids["bob"])

        gone = transcode_one(
            catalog, root, ids["bob"], fmt="flac", opus_bitrate=20000, now=now, step=delete
        )
        assert gone.result == "skipped" and "deleted" in gone.error
    # The deleted recording's archive and its sidecar went with it.
    assert not list(root.rglob("*.flac")) and not list(root.rglob("*.flac.json"))
    assert no_leftovers(root) == []


def test_a_name_another_archive_holds_is_not_taken(catalog: Catalog, tmp_path: Path) -> None:
    """The engine may give a later call the name a removed WAV freed: its archive gets the
    recording's id in its name instead of replacing the other's."""
    from callrec.media.wav import WavWriter
    from tests.support.catalog import finish_values, new_recording

    root = tmp_path / "recordings"
    ids = []
    for n, path in enumerate(("2026-03-01/call.wav", "2026-03-01/call.wav")):
        wav = root / path
        wav.parent.mkdir(parents=True, exist_ok=True)
        with WavWriter(wav, sample_rate=8000) as writer:
            writer.write(np.full(8000, 1000 * (n + 1), dtype="<i2").tobytes())
        info = writer.close()
        rec_id = catalog.create_recording(new_recording(n, path=path))
        catalog.finish_recording(
            rec_id, **finish_values(size_bytes=info.size_bytes, sha256=info.sha256)
        )
        ids.append(rec_id)
        settings = Settings(recordings_dir=root, database_url="sqlite://", archive_format="flac")
        report = archive_sweep(catalog, settings, datetime.now(UTC), ids=[rec_id])
        assert [o.result for o in report.outcomes] == ["archived"]
    first, second = (catalog.get(i) for i in ids)
    assert first is not None and second is not None
    assert first.path == "2026-03-01/call.flac"
    assert second.path == f"2026-03-01/call.{ids[1]}.flac"
    for rec, level in ((first, 1000), (second, 2000)):
        assert sha256_file(root / rec.path) == rec.sha256
        assert set(samples_of(root / rec.path)[:, 0]) == {level}
