"""An independent re-verification of the hash chain, as docs/integrity.md tells a third party
to write it (kept in step with the doc: the test of the doc's canonical form uses it), and
helpers for a malicious administrator who drops the append-only triggers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import text

from callrec.catalog import Catalog

GENESIS = "0" * 64


def third_party_verify(rows: list[tuple[int, str, str]]) -> int:
    """(seq, body, hash) rows in seq order, checked as docs/integrity.md says; the head seq.
    Raises AssertionError at the first entry that does not check out."""
    prev, expected = GENESIS, 1
    for seq, body, digest in rows:
        assert seq == expected, f"gap before #{seq}"
        assert hashlib.sha256(body.encode("utf-8")).hexdigest() == digest, f"#{seq} hash"
        fields = json.loads(body)
        assert fields["seq"] == seq and fields["prev"] == prev, f"#{seq} link"
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical == body, f"#{seq} is not in canonical form"
        prev, expected = digest, seq + 1
    return expected - 1


def chain_rows(catalog: Catalog) -> list[tuple[int, str, str]]:
    with catalog._engine.connect() as connection:
        result = connection.execute(
            text("SELECT seq, body, hash FROM integrity_chain ORDER BY seq")
        )
        return [(int(seq), body, digest) for seq, body, digest in result]


def bodies(catalog: Catalog) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body, _ in chain_rows(catalog)]


def drop_triggers(catalog: Catalog) -> None:
    """What an administrator with write access to the database can do."""
    with catalog._engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            for table in ("integrity_chain", "integrity_signatures"):
                connection.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
                connection.execute(text(f"DROP TRIGGER {table}_no_truncate ON {table}"))
        else:
            for table in ("integrity_chain", "integrity_signatures"):
                for verb in ("update", "delete"):
                    connection.execute(text(f"DROP TRIGGER {table}_no_{verb}"))


def finish_many(url: str, first: int, count: int, go: Any) -> None:
    """A process that catalogues ``count`` finished recordings one transaction each, from
    ``go`` (a multiprocessing Event) on: the concurrent appender of the fork test."""
    from tests.support.catalog import finish_values, new_recording

    with Catalog(url) as catalog:
        go.wait(30)
        for n in range(first, first + count):
            rec_id = catalog.create_recording(new_recording(n))
            sha = hashlib.sha256(str(n).encode()).hexdigest()
            catalog.finish_recording(rec_id, **finish_values(sha256=sha))
