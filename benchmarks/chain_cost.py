"""What appending to the hash chain costs a finish (issue 16 part 5): finishes per second in
the journal's batches, on SQLite.

Catalogues ``--rows`` recordings, then finishes them in batches of ``--batch`` (one
transaction each, as the journal's applier does) and prints µs per finish, every run. It uses
only :class:`callrec.catalog.Catalog`, so the same script measures the code before the chain:

    .venv/bin/python benchmarks/chain_cost.py --rows 5000 --runs 3
    PYTHONPATH=/path/to/older/checkout/src .venv/bin/python benchmarks/chain_cost.py
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import UTC, datetime, timedelta

import callrec
from callrec.catalog import Catalog, FinishRecording, NewRecording


def one_run(rows: int, batch: int) -> float:
    """Seconds to finish ``rows`` recordings in batches of ``batch``."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp, Catalog(f"sqlite:///{tmp}/c.db") as catalog:
        catalog.migrate()
        news = [
            NewRecording(
                session_id=str(n),
                device="0c383e0e709a",
                codec="PCMA",
                start_time=t0,
                sample_rate=8000,
                path=f"r/{n}.wav",
            )
            for n in range(rows)
        ]
        ids = [i for i in catalog.create_recordings(news) if isinstance(i, int)]
        items = [
            FinishRecording(
                rec_id=rec_id,
                status="complete",
                stop_reason="phone_stop",
                end_time=t0 + timedelta(seconds=60),
                duration=60.0,
                size_bytes=960_044,
                sha256=hashlib.sha256(str(rec_id).encode()).hexdigest(),
                counters=None,
            )
            for rec_id in ids
        ]
        began = time.perf_counter()
        for start in range(0, len(items), batch):
            catalog.finish_recordings(items[start : start + batch])
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"callrec from {callrec.__file__}")
    for run in range(1, args.runs + 1):
        took = one_run(args.rows, args.batch)
        print(
            f"run {run}: {args.rows} finishes in batches of {args.batch}: {took:.3f} s, "
            f"{1e6 * took / args.rows:.0f} us per finish"
        )


if __name__ == "__main__":
    main()
