"""Tampering with real recordings is found (SQLite and PostgreSQL): calls recorded through the
phone simulator and a USB import by a server in this process are chained and signed at its
stop; then files are flipped, truncated, removed, swapped and added, and ``callrec verify``
names each."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callrec.catalog import Catalog, RecordingInfo
from callrec.catalog import integrity as chain
from callrec.cli import app
from callrec.integrity import keys
from callrec.integrity.verify import check_one, state, verify
from callrec.service import Service
from tests.support import postgres
from tests.support.catalog import T0
from tests.support.data import LOCALFILE_DATA, encoded
from tests.support.integrity import chain_rows, third_party_verify
from tests.support.recording import record
from tests.support.rtp import rtp_packets
from tests.support.settings import server_settings

#: Packets per call: distinct lengths, so distinct files.
CALLS = (20, 30, 40, 50, 60, 70)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url: str = request.getfixturevalue("catalog_pg_database")
    postgres.reset_schema(url)
    return url


@pytest.fixture
async def recorded(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Path, str]]:
    """A server that recorded the calls of :data:`CALLS` and imported one USB file, then
    stopped (signing the chain); yields its recordings directory and database URL."""
    server = Service(server_settings(tmp_path, database_url=database_url))
    await server.start()
    try:
        packets = rtp_packets("PCMA", encoded("PCMA"))
        for n, count in enumerate(CALLS):
            await record(server, "PCMA", packets[:count], session_id=f"call{n}")
        await server.importer.import_file(LOCALFILE_DATA / "pcma-rtp.wav")
    finally:
        await server.stop()
    yield server.root, database_url


def _by_session(catalog: Catalog) -> dict[str, RecordingInfo]:
    return {rec.session_id: rec for rec in catalog.find(limit=100)}


def test_real_recordings_are_chained_and_signed(recorded: tuple[Path, str]) -> None:
    root, url = recorded
    key_path = root / ".callrec" / "integrity" / "signing-key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    public = keys.load_public_pem(keys.public_file(key_path).read_bytes())
    with Catalog(url) as catalog:
        assert third_party_verify(chain_rows(catalog)) == len(CALLS) + 1
        sources = sorted(json.loads(body)["source"] for _, body, _ in chain_rows(catalog))
        assert sources == ["server"] * len(CALLS) + ["usb"]
        report = verify(catalog, root, public)
        assert report.findings == []
        assert (report.files, report.signed_seq) == (len(CALLS) + 1, len(CALLS) + 1)
        one = _by_session(catalog)["call0"]
        now = state(catalog, one.id)
        assert (now.seq, now.signed_seq, now.covered, now.result) == (1, 7, True, "ok")


def test_tampering_is_named_file_by_file(recorded: tuple[Path, str]) -> None:
    root, url = recorded
    with Catalog(url) as catalog:
        recs = _by_session(catalog)
    flipped, cut, gone, left, right = (recs[f"call{n}"] for n in range(5))
    with (root / flipped.path).open("r+b") as file:
        file.seek(100)
        byte = file.read(1)
        file.seek(100)
        file.write(bytes([byte[0] ^ 0x01]))
    os.truncate(root / cut.path, (root / cut.path).stat().st_size - 160)
    (root / gone.path).unlink()
    a, b = root / left.path, root / right.path
    a.rename(root / "swap.tmp")
    b.rename(a)
    (root / "swap.tmp").rename(b)
    extra = root / "2026-01-01" / "planted.wav"
    extra.parent.mkdir()
    extra.write_bytes((root / recs["call5"].path).read_bytes())

    env = {"CALLREC_RECORDINGS_DIR": str(root), "CALLREC_DATABASE_URL": url}
    result = CliRunner().invoke(app, ["verify", "--all", "--json"], env=env)
    assert result.exit_code == 1, result.output
    found = {
        (f["kind"], f["recording_id"], f["path"]) for f in json.loads(result.output)["findings"]
    }
    assert found == {
        ("altered", flipped.id, flipped.path),
        ("truncated", cut.id, cut.path),
        ("missing", gone.id, gone.path),
        ("swapped", left.id, left.path),
        ("swapped", right.id, right.path),
        ("unexpected", None, "2026-01-01/planted.wav"),
    }
    # One recording at a time, as the web's "Verify now".
    with Catalog(url) as catalog:
        public = keys.load_key(root / ".callrec" / "integrity" / "signing-key.pem").public
        swapped, detail = check_one(catalog, root, left.id, public)
        assert swapped is not None
        assert detail == f"the file holds recording #{right.id}'s content"
        assert check_one(catalog, root, recs["call5"].id, public) == (
            None,
            "matches chain entry #6",
        )
        assert state(catalog, flipped.id).result == "altered"
    # Only the named recordings: an untouched one passes.
    fine = CliRunner().invoke(app, ["verify", str(recs["call5"].id)], env=env)
    assert fine.exit_code == 0, fine.output
    assert "all verified" in fine.output


def test_public_key_is_shown(recorded: tuple[Path, str]) -> None:
    root, url = recorded
    env = {"CALLREC_RECORDINGS_DIR": str(root), "CALLREC_DATABASE_URL": url}
    result = CliRunner().invoke(app, ["verify", "--public-key"], env=env)
    assert result.exit_code == 0
    exported = keys.public_file(root / ".callrec" / "integrity" / "signing-key.pem")
    assert result.output == exported.read_text()
    usage = CliRunner().invoke(app, ["verify"], env=env)
    assert usage.exit_code == 2


async def test_recordings_from_before_the_chain_are_caught_up_at_start(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, integrity_sign_interval=0.0)
    root = settings.recordings_dir
    (root / "old").mkdir(parents=True)
    content = b"RIFF" + bytes(range(200))
    (root / "old" / "call.wav").write_bytes(content)
    with Catalog(settings.database_url) as catalog:
        catalog.migrate()
        # As an older callrec left it: a finished row, no chain entry.
        with catalog._engine.begin() as connection:
            connection.execute(
                chain.RECORDINGS.insert().values(
                    session_id="old",
                    device="0c383e0e709a",
                    codec="PCMA",
                    path="old/call.wav",
                    start_time=T0,
                    end_time=T0,
                    duration=0.0,
                    sample_rate=8000,
                    status="complete",
                    stop_reason="phone_stop",
                    size_bytes=len(content),
                    sha256=hashlib.sha256(content).hexdigest(),
                    extra={},
                )
            )
        assert chain_rows(catalog) == []
    server = Service(settings)
    await server.start()
    await server.stop()  # the catch-up at the start appended it and signed the head
    public = keys.load_key(root / ".callrec" / "integrity" / "signing-key.pem").public
    with Catalog(settings.database_url) as catalog:
        assert [json.loads(b)["path"] for _, b, _ in chain_rows(catalog)] == ["old/call.wav"]
        report = verify(catalog, root, public)
        assert (report.findings, report.signed_seq) == ([], 1)
