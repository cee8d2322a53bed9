"""The recordings' hash chain in the catalogue (SQLite and PostgreSQL): what finishing,
re-finishing, deleting and the catch-up append, the append-only triggers, signatures, a chain
row altered behind callrec's back, and two processes appending at once."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import stat
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import SQLAlchemyError

from callrec.catalog import Catalog, FinishRecording
from callrec.catalog import integrity as chain
from callrec.catalog.replay import JournalFinish, JournalStart
from callrec.integrity import keys, signing
from callrec.integrity.verify import verify
from tests.support.catalog import T0, finish_values, new_recording
from tests.support.integrity import (
    bodies,
    chain_rows,
    drop_triggers,
    finish_many,
    third_party_verify,
)

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def _finished(catalog: Catalog, n: int, sha: str | None = SHA_A, **kw: object) -> int:
    rec_id = catalog.create_recording(new_recording(n))
    catalog.finish_recording(rec_id, **finish_values(sha256=sha, **kw))
    return rec_id


@pytest.fixture
def key(tmp_path: Path) -> keys.SigningKey:
    return keys.load_or_create(tmp_path / "keys" / "signing-key.pem")


def test_finishing_appends_one_entry_in_canonical_form(catalog: Catalog) -> None:
    first = _finished(catalog, 1)
    second = _finished(catalog, 2, SHA_B, status="recovered", stop_reason="crash")
    assert third_party_verify(chain_rows(catalog)) == 2
    one, two = bodies(catalog)
    assert one["prev"] == chain.GENESIS
    assert (one["kind"], one["recording_id"], one["sha256"], one["size"]) == (
        "recorded",
        first,
        SHA_A,
        960_044,
    )
    assert (one["path"], one["start_time"], one["duration_ms"]) == (
        "2026-03-01/in_1.wav",
        "2026-03-01T12:01:00.000000Z",
        60_000,
    )
    numbers = (one["local_number"], one["remote_number"], one["codec"])
    assert numbers == ("201", "0301234001", "PCMA")
    assert (two["recording_id"], two["status"]) == (second, "recovered")
    with catalog._engine.connect() as connection:
        assert chain.head(connection) == (2, chain_rows(catalog)[-1][2])


def test_unfinished_and_failed_recordings_are_not_chained(catalog: Catalog) -> None:
    catalog.create_recording(new_recording(1))
    _finished(catalog, 2, None, status="failed")
    assert chain_rows(catalog) == []


def test_a_crash_guess_replaced_by_the_journal_appends_an_update(catalog: Catalog) -> None:
    rec = new_recording(1, uid="u" * 32)
    ids = catalog.apply_journal([JournalStart(rec)])
    catalog.finish_recording(
        ids[rec.uid or ""],
        **finish_values(sha256=SHA_A, status="recovered", stop_reason="crash"),
    )
    finish = FinishRecording(rec_id=0, **finish_values(sha256=SHA_B))
    catalog.apply_journal([JournalFinish(rec.uid or "", finish)])
    catalog.apply_journal([JournalFinish(rec.uid or "", finish)])  # applied twice: no change
    assert [(b["kind"], b["sha256"]) for b in bodies(catalog)] == [
        ("recorded", SHA_A),
        ("updated", SHA_B),
    ]


def test_catch_up_appends_what_was_finished_before_the_chain(catalog: Catalog) -> None:
    # Rows written as an older callrec did: finished, without any entry.
    values = {**finish_values(), "sha256": SHA_B}
    with catalog._engine.begin() as connection:
        for n in (3, 4):
            row = {
                **{k: getattr(new_recording(n), k) for k in ("session_id", "device", "codec")},
                "path": f"old/{n}.wav",
                "start_time": T0,
                "sample_rate": 8000,
                "status": "complete",
                "stop_reason": "phone_stop",
                "end_time": values["end_time"],
                "duration": 1.0,
                "size_bytes": 44,
                "sha256": SHA_B,
                "extra": {},
            }
            connection.execute(insert(chain.RECORDINGS).values(row))
    _finished(catalog, 1)
    assert signing.catch_up(catalog) == 2
    assert signing.catch_up(catalog) == 0
    assert [b["path"] for b in bodies(catalog)] == ["2026-03-01/in_1.wav", "old/3.wav", "old/4.wav"]
    third_party_verify(chain_rows(catalog))


def test_deleting_appends_who_and_why(catalog: Catalog) -> None:
    rec_id = _finished(catalog, 1)
    catalog.delete_recording(rec_id, reason="retention: 90 days", by="anna")
    last = bodies(catalog)[-1]
    assert (last["kind"], last["recording_id"], last["sha256"]) == ("deleted", rec_id, SHA_A)
    assert (last["reason"], last["actor"]) == ("retention: 90 days", "anna")
    third_party_verify(chain_rows(catalog))


def test_a_retention_sweep_chains_every_deletion(catalog: Catalog, tmp_path: Path) -> None:
    """The sweeps delete in batches (retire_rows): each deletion gets its entry too."""
    from datetime import timedelta

    from callrec.config import Settings
    from callrec.retention.sweep import sweep

    ids = [_finished(catalog, n) for n in (1, 2, 3)]
    settings = Settings(recordings_dir=tmp_path, database_url=catalog.url)
    result = sweep(catalog, settings, T0 + timedelta(days=1), before=T0 + timedelta(days=1))
    assert result.deleted == len(ids)
    deleted = [b for b in bodies(catalog) if b["kind"] == "deleted"]
    assert sorted(b["recording_id"] for b in deleted) == ids
    assert {b["actor"] for b in deleted} == {"retention"}
    third_party_verify(chain_rows(catalog))


@pytest.mark.parametrize("table", ["integrity_chain", "integrity_signatures"])
def test_chain_tables_are_append_only(catalog: Catalog, key: keys.SigningKey, table: str) -> None:
    _finished(catalog, 1)
    signing.sign_head(catalog, key, T0)
    statements = [f"UPDATE {table} SET hash = 'x'", f"DELETE FROM {table}"]
    if catalog._engine.dialect.name == "postgresql":
        statements.append(f"TRUNCATE {table}")
    for statement in statements:
        with (
            pytest.raises(SQLAlchemyError, match="append-only"),
            catalog._engine.begin() as connection,
        ):
            connection.execute(text(statement))
    assert len(chain_rows(catalog)) == 1


def test_signing_is_idempotent_and_verifies(
    catalog: Catalog, key: keys.SigningKey, tmp_path: Path
) -> None:
    assert signing.sign_head(catalog, key, T0) is None  # nothing to sign yet
    _finished(catalog, 1)
    made = signing.sign_head(catalog, key, T0)
    assert made is not None and made.seq == 1
    assert signing.sign_head(catalog, key, T0) is None  # nothing new since
    assert keys.verify_signature(key.public, made.signature, made.body)
    assert json.loads(made.body)["hash"] == chain_rows(catalog)[0][2]
    report = verify(catalog, tmp_path / "nothing", key.public, ids=[], record=False)
    assert (report.signatures, report.signed_seq) == (1, 1)
    assert report.findings == []


def test_key_file_is_private_and_its_public_key_exported(tmp_path: Path) -> None:
    path = tmp_path / "rec" / ".callrec" / "integrity" / "signing-key.pem"
    made = keys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = keys.load_public_pem(keys.public_file(path).read_bytes())
    assert keys.key_id(public) == made.key_id
    assert keys.load_or_create(path).key_id == made.key_id  # read, not made again


def test_a_chain_row_altered_in_the_database_is_found(
    catalog: Catalog, key: keys.SigningKey, tmp_path: Path
) -> None:
    for n in range(1, 4):
        _finished(catalog, n, hashlib.sha256(str(n).encode()).hexdigest())
    signing.sign_head(catalog, key, T0)
    drop_triggers(catalog)
    # An administrator swaps recording 2's hash for the hash of a doctored file ...
    body = json.loads(chain_rows(catalog)[1][1])
    body["sha256"] = SHA_B
    forged = chain.canonical(body)
    with catalog._engine.begin() as connection:
        connection.execute(
            text("UPDATE integrity_chain SET body = :b, sha256 = :s WHERE seq = 2"),
            {"b": forged, "s": SHA_B},
        )
    found = verify(catalog, tmp_path, key.public, ids=[], record=False).findings
    assert [(f.kind, f.detail) for f in found] == [
        ("chain", "entry #2: its hash is not the SHA-256 of its body")
    ]
    # ... and, knowing the canonical form, recomputes every hash after it and the head:
    # the chain is whole again, but no longer what was signed.
    rows = chain_rows(catalog)
    prev = rows[0][2]
    with catalog._engine.begin() as connection:
        for seq, old_body, _ in rows[1:]:
            fields = json.loads(forged if seq == 2 else old_body)
            fields["prev"] = prev
            new_body = chain.canonical(fields)
            prev = chain.body_hash(new_body)
            connection.execute(
                text("UPDATE integrity_chain SET body = :b, hash = :h WHERE seq = :q"),
                {"b": new_body, "h": prev, "q": seq},
            )
        connection.execute(text("UPDATE integrity_head SET hash = :h"), {"h": prev})
    third_party_verify(chain_rows(catalog))
    found = verify(catalog, tmp_path, key.public, ids=[], record=False).findings
    assert [(f.kind, f.detail) for f in found] == [
        ("signature", "the chain up to the signed entry was changed after it was signed")
    ]


def test_two_processes_appending_at_once_never_fork_the_chain(catalog_url: str) -> None:
    with Catalog(catalog_url) as catalog:
        catalog.migrate()
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    each = 25
    workers = [
        spawn.Process(target=finish_many, args=(catalog_url, 1000 * (i + 1), each, go))
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    with Catalog(catalog_url) as catalog:
        rows = chain_rows(catalog)
        assert third_party_verify(rows) == 2 * each
        ids = [json.loads(body)["recording_id"] for _, body, _ in rows]
        assert len(set(ids)) == 2 * each
        with catalog._engine.connect() as connection:
            assert chain.head(connection) == (2 * each, rows[-1][2])


def test_the_docs_third_party_check_accepts_a_real_chain_and_catches_a_change(
    catalog: Catalog, key: keys.SigningKey
) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "integrity.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/integrity.md", "exec"), namespace)
    check_chain = namespace["check_chain"]
    assert callable(check_chain)
    for n in range(1, 4):
        _finished(catalog, n, hashlib.sha256(str(n).encode()).hexdigest())
    catalog.delete_recording(1, reason="test", by="anna")
    signing.sign_head(catalog, key, T0)
    with catalog._engine.connect() as connection:
        signatures = [(row.body, row.signature) for row in chain.signatures(connection)]
    pem = keys.public_pem(key.public).encode()
    rows = chain_rows(catalog)
    assert check_chain(rows, signatures, pem) == rows[-1][2]
    # An entry rewritten with every later hash recomputed passes the links, not the signature.
    body = json.loads(rows[1][1])
    body["sha256"] = SHA_B
    forged = chain.canonical(body)
    prev, changed = rows[0][2], [rows[0]]
    for seq, old, _ in rows[1:]:
        fields = json.loads(forged if seq == 2 else old)
        fields["prev"] = prev
        text_ = chain.canonical(fields)
        prev = chain.body_hash(text_)
        changed.append((seq, text_, prev))
    with pytest.raises(AssertionError, match="#4 changed"):
        check_chain(changed, signatures, pem)


def test_who_and_why_with_unstorable_characters_still_hash_as_stored(catalog: Catalog) -> None:
    rec_id = _finished(catalog, 1)
    catalog.delete_recording(rec_id, reason="bad \ud800 \x00 text", by="ann\x00a")
    third_party_verify(chain_rows(catalog))
    assert bodies(catalog)[-1]["actor"] == "ann\ufffda"


def test_the_key_file_setting_names_the_key() -> None:
    root = Path("/srv/rec")
    assert keys.key_file(root, "") == root / ".callrec" / "integrity" / "signing-key.pem"
    assert keys.key_file(root, "/etc/callrec/key.pem") == Path("/etc/callrec/key.pem")


def test_an_id_given_again_after_a_deletion_starts_a_new_record(catalog: Catalog) -> None:
    first = _finished(catalog, 1)
    catalog.delete_recording(first, reason="test", by="anna")
    again = _finished(catalog, 2, SHA_B)
    kinds = [(b["kind"], b["recording_id"], b["sha256"]) for b in bodies(catalog)]
    expected_last = ("recorded", again, SHA_B)
    assert kinds == [("recorded", first, SHA_A), ("deleted", first, SHA_A), expected_last]
