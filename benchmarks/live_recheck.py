"""What the live feed's re-check costs (issue 15): before every snapshot an open
``/api/v1/live/events`` asks the catalogue again whether its token or session still holds.

This times that question as the web asks it (the catalogue read on a worker thread, as
``WebContext.db`` runs it), for a token and for a browser session, on a SQLite catalogue in a
temporary directory holding ``--users`` users with a token and a session each. Every run is
printed: median and p95 in microseconds over ``--checks`` questions. One open live page costs
one question a second (and one per call started or ended).

    .venv/bin/python benchmarks/live_recheck.py
    .venv/bin/python benchmarks/live_recheck.py --users 1000 --checks 5000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callrec.catalog import Catalog
from callrec.web.security import digest, new_api_token, new_secret


def fill(catalog: Catalog, users: int) -> tuple[str, str]:
    """``users`` users with a token and a session each; the last one's token and session."""
    token_hash = session_hash = ""
    expires = datetime.now(UTC) + timedelta(hours=12)
    for i in range(users):
        user = catalog.create_user(f"user{i}", password_hash="x", role="listener")
        _token, token_hash, prefix = new_api_token()
        catalog.create_token(user.id, name="bench", token_hash=token_hash, prefix=prefix)
        session_hash = digest(new_secret())
        catalog.create_web_session(
            session_hash, user_id=user.id, csrf_token=new_secret(), expires_at=expires
        )
    return token_hash, session_hash


async def time_checks(catalog: Catalog, kind: str, secret_hash: str, checks: int) -> list[float]:
    check = catalog.check_token if kind == "token" else catalog.check_web_session
    took: list[float] = []
    for _ in range(checks):
        start = time.perf_counter()
        found = await asyncio.to_thread(check, secret_hash, datetime.now(UTC))
        took.append(time.perf_counter() - start)
        assert found is not None
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(f"sqlite:///{Path(tmp) / 'callrec.db'}")
        catalog.migrate()
        token_hash, session_hash = fill(catalog, args.users)
        print(f"SQLite, {args.users} users with a token and a session each; µs per check")
        for run in range(1, args.runs + 1):
            for kind, secret_hash in (("token", token_hash), ("session", session_hash)):
                took = asyncio.run(time_checks(catalog, kind, secret_hash, args.checks))
                took.sort()
                median = statistics.median(took) * 1e6
                p95 = took[int(len(took) * 0.95)] * 1e6
                print(f"run {run} {kind:7s} median {median:7.0f}  p95 {p95:7.0f}")
        catalog.close()


if __name__ == "__main__":
    main()
