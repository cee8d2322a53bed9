"""Catalogued recordings with real files, aged as a retention test needs them."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callrec.catalog import Catalog
from callrec.config import Settings
from tests.support.catalog import finish_values, new_recording

#: The sweeps' "now" in these tests.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def settings_for(root: Path, url: str, **values: Any) -> Settings:
    return dataclasses.replace(Settings(recordings_dir=root, database_url=url), **values)


def recording(
    catalog: Catalog,
    root: Path,
    n: int,
    *,
    age_days: float,
    size: int = 1000,
    tags: tuple[str, ...] = (),
    finished: bool = True,
    companion: bool = False,
    **overrides: Any,
) -> int:
    """Recording ``n``, started ``age_days`` before :data:`NOW`, with its WAV and sidecar
    (and a companion file) on disk under ``root``; returns its id."""
    path = f"2026/rec_{n}.wav"
    extra: dict[str, Any] = {}
    if companion:
        extra["companions"] = [{"path": f"2026/rec_{n}_mix.wav", "kind": "mix"}]
    rec = new_recording(
        n, start_time=NOW - timedelta(days=age_days), path=path, extra=extra, **overrides
    )
    rec_id = catalog.create_recording(rec)
    if finished:
        catalog.finish_recording(rec_id, **finish_values(size_bytes=size))
    wav = root / path
    wav.parent.mkdir(parents=True, exist_ok=True)
    wav.write_bytes(b"RIFF" + bytes(size))
    wav.with_name(wav.name + ".json").write_text(json.dumps({"n": n}))
    if companion:
        (root / f"2026/rec_{n}_mix.wav").write_bytes(b"RIFF")
    for tag in tags:
        catalog.add_tag(rec_id, tag)
    return rec_id


def files_of(root: Path, n: int) -> list[str]:
    """The files of recording ``n`` still on disk."""
    return sorted(str(p.relative_to(root)) for p in root.glob(f"2026/rec_{n}[._]*"))


def ids(catalog: Catalog) -> set[int]:
    return {r.id for r in catalog.find(limit=100_000)}


def days(n: float) -> datetime:
    return NOW - timedelta(days=n)


__all__ = ["NOW", "UTC", "days", "files_of", "ids", "recording", "settings_for"]
