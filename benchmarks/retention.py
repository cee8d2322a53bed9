"""A retention sweep over a big catalogue, on SQLite and PostgreSQL (issue 16, part R).

Fills a fresh catalogue with synthetic recordings (default 1,000,000 rows over two years,
200 extensions, 1% tagged ``complaint``, a few held), puts real files (WAV and sidecar) on
disk for a sample of them (every ``--file-every``-th row), then times, with the policy
"default 90 days, extension 3001 ten years, tag complaint seven years":

* a dry run (the count ``callrec retention run --dry-run`` prints);
* the sweep itself (:func:`callrec.retention.sweep`: rows deleted in batches, a tombstone,
  an audit row, a hash-chain entry and a queued ``recording.deleted`` webhook each, the
  sample's files removed);
* a second sweep, which finds nothing (what the daily run costs on most days).

Prints every figure, and writes them to ``benchmarks/results/retention-*.json``.

    .venv/bin/python benchmarks/retention.py                        # both backends, 1M rows
    .venv/bin/python benchmarks/retention.py --rows 100000 --backend sqlite

A PostgreSQL database named ``callrec_bench_<random>`` is created on the server of
``--pg-url`` and dropped afterwards; the SQLite file lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from callrec.catalog import Catalog, JobStore, search_index
from callrec.catalog.models import Recording
from callrec.catalog.webmodels import RecordingTag
from callrec.config import Settings
from callrec.retention import sweep

BATCH = 20_000
NOW = datetime(2026, 12, 1, tzinfo=UTC)
SPAN_DAYS = 730
RULES = ("extension=3001:3650", "tag=complaint:2555")
RESULTS = Path(__file__).resolve().parent / "results"


def synthetic(rows: int, seed: int = 4) -> Iterator[list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    start_seconds = np.sort(rng.uniform(0, SPAN_DAYS * 86400, rows))
    base = NOW - timedelta(days=SPAN_DAYS)
    for first in range(0, rows, BATCH):
        n = min(BATCH, rows - first)
        phone = rng.integers(0, 200, n)
        remote = rng.integers(10**9, 10**10 - 1, n)
        durations = np.round(rng.exponential(150, n) + 3, 2)
        batch = []
        for i in range(n):
            index = first + i
            start = base + timedelta(seconds=float(start_seconds[index]))
            ext = 3000 + int(phone[i])
            batch.append(
                {
                    "uid": uuid.uuid4().hex,
                    "source": "server",
                    "session_id": str(10000 + index % 90000),
                    "device": f"0c383e{ext:06x}",
                    "direction": "in",
                    "local_number": str(ext),
                    "local_name": "",
                    "remote_number": f"0{remote[i]}",
                    "remote_name": "",
                    "codec": "PCMA",
                    "peer_address": "10.1.0.1",
                    "peer_port": 50000,
                    "media_port": 41000,
                    "start_time": start,
                    "end_time": start + timedelta(seconds=float(durations[i])),
                    "duration": float(durations[i]),
                    "sample_rate": 8000,
                    "channels": 1,
                    "size_bytes": int(durations[i] * 16000),
                    "sha256": "0" * 64,
                    "path": f"{start:%Y-%m-%d}/{index}.wav",
                    "status": "complete",
                    "stop_reason": "phone_stop",
                    "extra": {},
                    "created_at": start,
                    "updated_at": start,
                }
            )
        yield batch


def fill(catalog: Catalog, root: Path, rows: int, file_every: int) -> tuple[float, int]:
    """Rows in bulk (then the search index, as migration 0003 builds it over old rows),
    1% tagged complaint, and real files for every ``file_every``-th row."""
    began = time.perf_counter()
    engine = catalog._write_engine
    with engine.begin() as connection:
        search_index.drop(connection)
    rng = np.random.default_rng(9)
    done = files = 0
    for batch in synthetic(rows):
        with engine.begin() as connection:
            connection.execute(insert(Recording), batch)
            tagged = [
                {"recording_id": done + int(i) + 1, "tag": "complaint"}
                for i in np.nonzero(rng.random(len(batch)) < 0.01)[0]
            ]
            if tagged:
                connection.execute(insert(RecordingTag), tagged)
        for i in range(0, len(batch), file_every):
            wav = root / batch[i]["path"]
            wav.parent.mkdir(parents=True, exist_ok=True)
            wav.write_bytes(b"RIFF" + bytes(40))
            wav.with_name(wav.name + ".json").write_text("{}")
            files += 1
        done += len(batch)
        print(f"\r  {done:>9,} rows", end="", flush=True)
    print("\n  building the search index", flush=True)
    with engine.begin() as connection:
        search_index.create(connection)
        connection.execute(text("ANALYZE"))
    return time.perf_counter() - began, files


def run_backend(name: str, url: str, root: Path, rows: int, file_every: int) -> dict[str, Any]:
    print(f"{name}: {rows:,} recordings", flush=True)
    # A webhook URL: every deletion queues its recording.deleted (nothing delivers them here;
    # the outbox rows are what the sweep pays for).
    settings = Settings(
        recordings_dir=root,
        database_url=url,
        retention_days=90,
        retention_rules=RULES,
        webhook_url=("http://127.0.0.1:9/hook",),
        webhook_secret="bench",
    )
    with Catalog(url) as catalog:
        catalog.migrate()
        fill_seconds, files = fill(catalog, root, rows, file_every)
        print(f"  filled in {fill_seconds:.1f} s ({files:,} recordings with files)")
        catalog.add_hold("number", value="3002", reason="bench", by="bench")
        catalog.add_hold("recording", recording_ids=range(1, 1001), reason="bench", by="bench")
        t0 = time.perf_counter()
        preview = sweep(catalog, settings, NOW, dry_run=True)
        dry = time.perf_counter() - t0
        print(f"  dry run: {preview.deleted:,} to delete, {dry:.2f} s")
        t0 = time.perf_counter()
        result = sweep(catalog, settings, NOW)
        seconds = time.perf_counter() - t0
        print(
            f"  sweep: deleted {result.deleted:,} in {seconds:.1f} s "
            f"({result.deleted / seconds:,.0f} recordings/s), {result.files_removed:,} files"
        )
        t0 = time.perf_counter()
        again = sweep(catalog, settings, NOW)
        idle = time.perf_counter() - t0
        print(f"  second sweep: {again.deleted} deleted, {idle:.2f} s")
        left = catalog.count_recordings()
        tombs = len(catalog.tombstones(limit=10))
        queued = JobStore(catalog).counts()
    assert again.deleted == 0 and tombs == 10
    events = sum(n for (kind, state), n in queued.items() if kind.startswith("webhook:"))
    assert events == result.deleted, (events, result.deleted)
    return {
        "backend": name,
        "rows": rows,
        "files": files,
        "fill_seconds": round(fill_seconds, 1),
        "dry_run_seconds": round(dry, 3),
        "to_delete": preview.deleted,
        "deleted": result.deleted,
        "sweep_seconds": round(seconds, 2),
        "per_second": round(result.deleted / seconds),
        "files_removed": result.files_removed,
        "second_sweep_seconds": round(idle, 3),
        "left": left,
        "deleted_events_queued": events,
        "by_rule": dict(result.by_reason),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file-every", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    out: list[dict[str, Any]] = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            out.append(
                run_backend(
                    "sqlite",
                    f"sqlite:///{Path(tmp) / 'bench.db'}",
                    Path(tmp) / "recordings",
                    args.rows,
                    args.file_every,
                )
            )
    if args.backend in ("postgresql", "both"):
        admin_url = make_url(args.pg_url)
        name = f"callrec_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                url = admin_url.set(database=name).render_as_string(hide_password=False)
                out.append(
                    run_backend(
                        "postgresql", url, Path(tmp) / "recordings", args.rows, args.file_every
                    )
                )
        finally:
            with admin.connect() as connection:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            admin.dispose()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"retention-{args.backend}-{args.rows}-{stamp}.json"
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other work on the machine, which the figures depend on (1, 5, 15 min averages).
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "runs": out,
    }
    path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
