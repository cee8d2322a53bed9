"""Search latency of the recordings list with many rows, on SQLite and PostgreSQL.

Fills a fresh catalogue with synthetic recordings (default 1,000,000), then times typical
searches through :meth:`Catalog.search`, the query behind ``GET /api/v1/recordings`` and the
recordings page: one page of 50 plus the (capped) count and, past the first page, whether
there is a page before and how many rows (capped) come before it, as the UI asks. Prints the median
and 95th percentile per query and backend.

    .venv/bin/python benchmarks/search.py                       # both backends, 1M rows
    .venv/bin/python benchmarks/search.py --rows 100000 --backend sqlite
    .venv/bin/python benchmarks/search.py --pg-url postgresql+psycopg://postgres@127.0.0.1/postgres

A PostgreSQL database named ``callrec_bench_<random>`` is created on the server of
``--pg-url`` and dropped afterwards; the SQLite file lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from callrec.catalog import Catalog, Scope, SearchQuery, search_index
from callrec.catalog.models import Recording
from callrec.catalog.webmodels import RecordingTag

BATCH = 20_000
END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_DAYS = 730
NAMES = [
    "Müller",
    "Schmidt",
    "Meier",
    "Smith",
    "Johnson",
    "Rossi",
    "Dupont",
    "Novak",
    "Kowalski",
    "Garcia",
    "Ivanov",
    "Andersen",
    "Nguyen",
    "Tanaka",
    "Silva",
    "O'Brien",
]
FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas"]


def synthetic(rows: int, seed: int = 4) -> Iterator[list[dict[str, Any]]]:
    """Batches of recording rows: 200 phones (one extension each, 3000-3199), a few busy
    callers and many one-off ones, speech-like durations, two years of calls."""
    rng = np.random.default_rng(seed)
    start_seconds = np.sort(rng.uniform(0, SPAN_DAYS * 86400, rows))
    base = END - timedelta(days=SPAN_DAYS)
    regulars = [f"0{rng.integers(20, 99)}{rng.integers(1_000_000, 9_999_999)}" for _ in range(500)]
    for first in range(0, rows, BATCH):
        n = min(BATCH, rows - first)
        phone = rng.integers(0, 200, n)
        regular = rng.random(n) < 0.3
        remote_pick = rng.integers(0, len(regulars), n)
        remote_random = rng.integers(10**9, 10**10 - 1, n)
        durations = np.round(rng.exponential(150, n) + 3, 2)
        directions = rng.random(n) < 0.55
        codecs = rng.choice(["PCMA", "PCMU", "G722"], n, p=[0.6, 0.15, 0.25])
        named = rng.random(n) < 0.6
        surname = rng.integers(0, len(NAMES), n)
        given = rng.integers(0, len(FIRST), n)
        failed = rng.random(n) < 0.002
        batch = []
        for i in range(n):
            index = first + i
            start = base + timedelta(seconds=float(start_seconds[index]))
            ext = 3000 + int(phone[i])
            remote = regulars[remote_pick[i]] if regular[i] else f"0{remote_random[i]}"
            batch.append(
                {
                    "source": "server",
                    "session_id": str(10000 + index % 90000),
                    "device": f"0c383e{ext:06x}",
                    "direction": "in" if directions[i] else "out",
                    "local_number": str(ext),
                    "local_name": f"Desk {ext}",
                    "remote_number": remote,
                    "remote_name": f"{FIRST[given[i]]} {NAMES[surname[i]]}" if named[i] else "",
                    "codec": str(codecs[i]),
                    "peer_address": f"10.1.{ext // 256 % 256}.{ext % 256}",
                    "peer_port": 50000,
                    "media_port": 41000 + index % 2000,
                    "start_time": start,
                    "end_time": start + timedelta(seconds=float(durations[i])),
                    "duration": float(durations[i]),
                    "sample_rate": 16000 if codecs[i] == "G722" else 8000,
                    "channels": 1,
                    "size_bytes": int(durations[i] * 16000),
                    "sha256": None,
                    "path": f"{start:%Y-%m-%d}/{index}.wav",
                    "status": "failed" if failed[i] else "complete",
                    "stop_reason": "phone_stop",
                    "extra": {},
                    "packets_received": int(durations[i] * 50),
                    "packets_lost": 0,
                    "packets_late": 0,
                    "packets_duplicate": 0,
                    "packets_foreign": 0,
                    "packets_malformed": 0,
                    "packets_other": 0,
                    "ssrc_changes": 0,
                    "created_at": start,
                    "updated_at": start,
                }
            )
        yield batch


def fill(catalog: Catalog, rows: int) -> float:
    """Bulk load, as an upgrade of a big catalogue meets it: rows first, then the search
    index is built over them (what migration 0003 does)."""
    began = time.perf_counter()
    engine = catalog._write_engine  # straight through SQLAlchemy Core
    with engine.begin() as connection:
        search_index.drop(connection)
    rng = np.random.default_rng(9)
    done = 0
    for batch in synthetic(rows):
        with engine.begin() as connection:
            connection.execute(insert(Recording), batch)
            tagged = [
                {"recording_id": done + int(i) + 1, "tag": "complaint"}
                for i in np.nonzero(rng.random(len(batch)) < 0.01)[0]
            ]
            if tagged:
                connection.execute(insert(RecordingTag), tagged)
        done += len(batch)
        print(f"\r  {done:>9,} rows", end="", flush=True)
    print("\n  building the search index", flush=True)
    with engine.begin() as connection:
        search_index.create(connection)
        connection.execute(text("ANALYZE"))
    return time.perf_counter() - began


@dataclass(frozen=True)
class Case:
    name: str
    query: Callable[[Catalog], SearchQuery]
    scope: Scope | None = None


def cases(catalog: Catalog) -> list[Case]:
    newest = catalog.search(SearchQuery(limit=1, with_total=False)).items[0]
    some = catalog.search(SearchQuery(limit=1, q="0", page=5000, with_total=False)).items[0]
    rare = some.remote_number[-7:]
    day = (END - timedelta(days=40)).replace(hour=0)

    def third_page(c: Catalog) -> SearchQuery:
        first = c.search(SearchQuery(limit=50, with_total=False))
        second = c.search(SearchQuery(limit=50, cursor=first.next_cursor, with_total=False))
        return SearchQuery(limit=50, cursor=second.next_cursor)

    def back_from_third(c: Catalog) -> SearchQuery:
        return SearchQuery(limit=50, cursor=c.search(third_page(c)).prev_cursor)

    def meier_second_page(c: Catalog) -> SearchQuery:
        first = c.search(SearchQuery(limit=50, q="meier", with_total=False))
        return SearchQuery(limit=50, q="meier", cursor=first.next_cursor)

    return [
        Case("newest 50 (landing page)", lambda c: SearchQuery()),
        Case("third page by cursor", third_page),
        Case("second page by previous cursor", back_from_third),
        Case("page 10 by number", lambda c: SearchQuery(page=10)),
        Case("jump to a date (at)", lambda c: SearchQuery(at=day)),
        Case("jump a year back (at)", lambda c: SearchQuery(at=END - timedelta(days=365))),
        Case("extension '3042' (free text)", lambda c: SearchQuery(q="3042")),
        Case(f"rare number part {rare!r}", lambda c: SearchQuery(q=rare)),
        Case("name 'meier'", lambda c: SearchQuery(q="meier")),
        Case("name 'meier', second page", meier_second_page),
        Case("name + extension 'anna 3007'", lambda c: SearchQuery(q="anna 3007")),
        Case(
            "one day",
            lambda c: SearchQuery(since=day, until=day + timedelta(days=1)),
        ),
        Case(
            "device, last 30 days",
            lambda c: SearchQuery(device=newest.device, since=END - timedelta(days=30), until=END),
        ),
        Case("incoming, over 10 min", lambda c: SearchQuery(direction="in", min_duration=600)),
        Case("status failed", lambda c: SearchQuery(status="failed")),
        Case("tag 'complaint'", lambda c: SearchQuery(tag="complaint")),
        Case(
            "restricted user (2 extensions)",
            lambda c: SearchQuery(),
            Scope(extensions=("3001", "3002")),
        ),
        Case(
            "restricted user + name",
            lambda c: SearchQuery(q="smith"),
            Scope(extensions=("3001", "3002")),
        ),
    ]


def measure(catalog: Catalog, repeat: int) -> list[tuple[str, float, float, int, bool]]:
    out = []
    for case in cases(catalog):
        query = case.query(catalog)
        catalog.search(query, case.scope)  # warm the cache, as a running server would be
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            page = catalog.search(query, case.scope)
            times.append(time.perf_counter() - began)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        out.append((case.name, statistics.median(times), p95, page.total or 0, page.total_exact))
        print(
            f"  {case.name:<34} median {statistics.median(times) * 1000:8.1f} ms"
            f"   p95 {p95 * 1000:8.1f} ms   matches {page.total:>6,}"
            f"{'' if page.total_exact else '+'}",
            flush=True,
        )
    return out


def run_backend(name: str, url: str, rows: int, repeat: int) -> None:
    print(f"\n== {name}: {rows:,} recordings ==")
    with Catalog(url) as catalog:
        catalog.migrate()
        seconds = fill(catalog, rows)
        print(f"  filled in {seconds:.0f} s")
        measure(catalog, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20, help="Timed runs per query.")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            run_backend("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows, args.repeat)
    if args.backend in ("postgresql", "both"):
        admin_url = make_url(args.pg_url)
        name = f"callrec_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            run_backend("PostgreSQL", url, args.rows, args.repeat)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
