"""ZIP streams, FLAC header completion, waveform peaks, quality grades, password hashing."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from callrec.media.encode import flac_with_total_samples
from callrec.web.media import (
    ZipMember,
    compute_peaks,
    wav_layout,
    zip_stream,
)
from callrec.web.recordings import quality
from callrec.web.security import (
    PasswordPolicyError,
    digest,
    hash_password,
    new_api_token,
    verify_password,
)
from tests.support.audio import write_wav

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_zip_stream_is_a_valid_stored_archive_built_in_pieces(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    write_wav(big, (np.arange(200_000) % 3000).astype(np.int16))
    small = tmp_path / "small.wav"
    write_wav(small, np.zeros(10, np.int16))
    pieces = list(
        zip_stream(
            [
                ZipMember(big, "2026-03-01/big.wav", T),
                ZipMember(tmp_path / "gone.wav", "2026-03-01/gone.wav", T),
                ZipMember(small, "2026-03-01/small.wav", T),
            ],
            index_rows=[{"id": 1, "path": "2026-03-01/big.wav"}],
        )
    )
    # Produced as it goes: no piece holds much more than a chunk of the 400 kB file.
    assert len(pieces) > 5 and max(len(p) for p in pieces) < 140_000
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.testzip() is None
    assert archive.read("2026-03-01/big.wav") == big.read_bytes()
    assert archive.read("2026-03-01/small.wav") == small.read_bytes()
    assert archive.getinfo("2026-03-01/big.wav").compress_type == zipfile.ZIP_STORED
    assert archive.read("MISSING.txt") == b"2026-03-01/gone.wav\n"
    assert archive.read("index.csv").decode().splitlines() == ["id,path", "1,2026-03-01/big.wav"]


def test_zip_index_never_holds_a_formula(tmp_path: Path) -> None:
    """CSV injection: a phone-supplied name a spreadsheet would run is written as text."""
    hostile = '=HYPERLINK("http://evil.example/","click me")'
    rows = [{"id": 1, "remote_name": hostile, "remote_number": "+4930123"}]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(zip_stream([], index_rows=rows))))
    index = list(csv.DictReader(io.StringIO(archive.read("index.csv").decode())))
    assert index == [{"id": "1", "remote_name": "'" + hostile, "remote_number": "+4930123"}]


def test_flac_total_samples_is_filled_in_once() -> None:
    head = bytearray(b"fLaC" + bytes([0x80, 0, 0, 34]) + bytes(34) + b"frames")
    head[8 + 10 : 8 + 14] = bytes([0x03, 0xE8, 0x00, 0xF0])  # 16 kHz, mono, 16 bit
    patched = flac_with_total_samples(bytes(head), 0x1_2345_6789)
    assert patched[8 + 13] == 0xF1 and patched[8 + 14 : 8 + 18] == bytes.fromhex("23456789")
    assert patched[:21] == bytes(head[:21]) and patched.endswith(b"frames")
    assert flac_with_total_samples(patched, 5) == patched  # already known: left alone
    assert flac_with_total_samples(b"OggS" + bytes(40), 5) == b"OggS" + bytes(40)


def test_peaks_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    signal = np.concatenate([np.zeros(8000), np.full(8000, 16384), np.full(8000, -32768)])
    write_wav(path, signal.astype(np.int16))
    assert wav_layout(path) == (8000, 1, 44, 48000)
    peaks = compute_peaks(path, 3)
    assert peaks.duration == 3.0 and peaks.sample_rate == 8000
    assert peaks.buckets == [(0.0, 0.0), (0.5, 0.5), (-1.0, -1.0)]
    assert len(compute_peaks(path, 10_000).buckets) == 10_000
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.int16))
    assert compute_peaks(empty, 100).buckets == []


def test_quality_grades() -> None:
    base = dict(received=1000, lost=0, late=0, duplicate=0, foreign=0, malformed=0, other=0)
    assert quality(base).grade == "good"
    lossy = quality(base | {"lost": 30})
    assert (lossy.expected, lossy.loss_percent, lossy.grade) == (1030, 2.91, "fair")
    assert quality(base | {"lost": 100}).grade == "poor"
    assert quality(base | {"received": 10, "foreign": 10}).grade == "unknown"
    assert quality(base | {"other": 500, "duplicate": 10}).expected == 490
    # The tail of a call the kernel dropped (no later packet shows a gap): still lost.
    tail = quality(base | {"kernel_dropped": 100})
    assert (tail.expected, tail.lost, tail.grade) == (1100, 100, "poor")
    # Dropped in mid-call: the gap counts them already; counted once.
    middle = quality(base | {"lost": 30, "kernel_dropped": 20})
    assert (middle.expected, middle.lost) == (1030, 30)


def test_passwords_and_tokens() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "anything")
    assert not verify_password("not a hash", "x")
    with pytest.raises(PasswordPolicyError, match="at least 8"):
        hash_password("short")
    token, token_hash, prefix = new_api_token()
    assert token.startswith("crt_") and len(token) > 40
    assert token_hash == digest(token) and len(token_hash) == 64 and token not in token_hash
    assert token.startswith(prefix)
