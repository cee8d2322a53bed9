"""How fast ``callrec verify --all`` checks recordings: MB/s and files/s (issue 16 part 5).

Makes a catalogue (SQLite in a temporary directory, or ``--database-url``) of ``--files``
recordings of ``--seconds`` of 8 kHz mono WAV each (random audio, so no two files are alike),
catalogued as finished (so chained, each in its own transaction, as the server does), signs the
chain, then runs :func:`callrec.integrity.verify.verify` ``--runs`` times over all of them.
``--cold`` evicts every file from the page cache before each run (``posix_fadvise``), so the
disk is read; otherwise the files come from memory and the figure is hashing plus the
catalogue. Every run is printed, never only the best.

    .venv/bin/python benchmarks/verify.py
    .venv/bin/python benchmarks/verify.py --files 2000 --seconds 6 --runs 3 --cold
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from callrec.catalog import Catalog, NewRecording
from callrec.integrity import keys, signing
from callrec.integrity.verify import verify

HEADER_BYTES = 44


def wav(path: Path, seconds: float) -> tuple[int, str]:
    """A PCM WAV of random samples; its size and SHA-256."""
    frames = int(8000 * seconds)
    data = os.urandom(frames * 2)
    header = (
        b"RIFF"
        + (36 + len(data)).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + (8000).to_bytes(4, "little")
        + (16000).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + len(data).to_bytes(4, "little")
    )
    content = header + data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return len(content), hashlib.sha256(content).hexdigest()


def fill(catalog: Catalog, root: Path, files: int, seconds: float) -> float:
    """The recordings; seconds spent cataloguing them (with their chain entries)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spent = 0.0
    for n in range(files):
        rel = f"2026-01-01/rec_{n:06d}.wav"
        size, sha = wav(root / rel, seconds)
        began = time.perf_counter()
        rec_id = catalog.create_recording(
            NewRecording(
                session_id=str(n),
                device="0c383e0e709a",
                codec="PCMA",
                start_time=start + timedelta(seconds=n),
                sample_rate=8000,
                path=rel,
            )
        )
        catalog.finish_recording(
            rec_id,
            status="complete",
            stop_reason="phone_stop",
            end_time=start + timedelta(seconds=n + seconds),
            duration=seconds,
            size_bytes=size,
            sha256=sha,
            counters=None,
        )
        spent += time.perf_counter() - began
    return spent


def evict(root: Path) -> None:
    for directory, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the files from the cache")
    parser.add_argument("--database-url", default="", help="default: SQLite, temporary")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        root = where / "recordings"
        url = args.database_url or f"sqlite:///{where / 'catalog.db'}"
        with Catalog(url) as catalog:
            catalog.migrate()
            spent = fill(catalog, root, args.files, args.seconds)
            print(
                f"catalogued {args.files} finished recordings with their chain entries in "
                f"{spent:.2f} s ({1000 * spent / args.files:.2f} ms each, one transaction each)"
            )
            key = keys.load_or_create(where / "key.pem")
            signing.sign_head(catalog, key, datetime.now(UTC))
            for run in range(1, args.runs + 1):
                if args.cold:
                    evict(root)
                began = time.perf_counter()
                report = verify(catalog, root, key.public)
                took = time.perf_counter() - began
                assert report.ok, report.findings[:5]
                mb = report.bytes / 1e6
                print(
                    f"run {run}: {report.files} files, {mb:.1f} MB, {report.entries} entries, "
                    f"{report.signatures} signature in {took:.2f} s: {mb / took:.1f} MB/s, "
                    f"{report.files / took:.0f} files/s ({'cold' if args.cold else 'warm'} cache)"
                )


if __name__ == "__main__":
    main()
