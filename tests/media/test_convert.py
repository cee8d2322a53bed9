"""Conversion to WAV, FLAC and Opus, checked by FFmpeg: codec, rate, duration, samples."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.exceptions import LocalFileError
from callrec.media import convert as convert_module
from callrec.media.convert import (
    ConvertError,
    OutputExistsError,
    convert_bytes,
    convert_file,
    output_suffix,
)
from callrec.media.encode import Encoding
from callrec.media.localfile import build_file, decode, payloads, scan
from callrec.rtp.packet import RtpPacket
from tests.support.data import CODEC_DATA, LOCALFILE_DATA
from tests.support.ffmpeg import ffmpeg_samples, ffprobe, needs_ffmpeg, needs_ffprobe

#: Committed clean files: name -> (codec, rate of the audio).
CLEAN = {"pcma-rtp.wav": ("PCMA", 8000), "g722-bare.wav": ("G722", 16000)}


@needs_ffprobe
@pytest.mark.parametrize("name", sorted(CLEAN))
def test_wav_opens_in_ffmpeg_with_the_right_format(name: str, tmp_path: Path) -> None:
    _, rate = CLEAN[name]
    out = tmp_path / "out.wav"
    result = convert_file(LOCALFILE_DATA / name, out)
    assert result.output == out and result.format == "wav"
    assert result.sample_rate == rate and result.duration == 1.0
    assert ffprobe(out) == {
        "codec": "pcm_s16le",
        "sample_rate": rate,
        "channels": 1,
        "duration": 1.0,
        "format": "wav",
    }


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(CLEAN))
def test_wav_samples_are_ffmpegs_decoding_of_the_payloads(name: str, tmp_path: Path) -> None:
    codec, _ = CLEAN[name]
    data = (LOCALFILE_DATA / name).read_bytes()
    info = scan(data)
    raw = tmp_path / "payloads.raw"
    raw.write_bytes(b"".join(payloads(info, data)))
    out = convert_file(LOCALFILE_DATA / name, tmp_path / "out.wav").output
    samples, _ = soundfile.read(out, dtype="int16")
    reference = ffmpeg_samples(codec, raw)
    np.testing.assert_array_equal(samples, reference)


@needs_ffprobe
@pytest.mark.parametrize("name", sorted(CLEAN))
def test_flac_is_lossless_at_the_codec_rate(name: str, tmp_path: Path) -> None:
    _, rate = CLEAN[name]
    out = tmp_path / "out.flac"
    result = convert_file(LOCALFILE_DATA / name, out, fmt="flac")
    assert result.format == "flac"
    probe = ffprobe(out)
    assert probe["codec"] == "flac" and probe["format"] == "flac"
    assert probe["sample_rate"] == rate and probe["channels"] == 1
    assert probe["duration"] == pytest.approx(1.0)
    data = (LOCALFILE_DATA / name).read_bytes()
    expected = np.frombuffer(b"".join(decode(scan(data), data)), dtype="<i2")
    samples, flac_rate = soundfile.read(out, dtype="int16")
    assert flac_rate == rate
    np.testing.assert_array_equal(samples, expected)


def _opus_input_rate(path: Path) -> int:
    """The input sample rate stored in the OpusHead packet (RFC 7845 section 5.1)."""
    data = path.read_bytes()
    head = data.index(b"OpusHead")
    (rate,) = struct.unpack_from("<I", data, head + 12)
    return int(rate)


@needs_ffprobe
@pytest.mark.parametrize("name", sorted(CLEAN))
def test_opus_opens_in_ffmpeg(name: str, tmp_path: Path) -> None:
    _, rate = CLEAN[name]
    out = tmp_path / "out.opus"
    convert_file(LOCALFILE_DATA / name, out, fmt="opus")
    probe = ffprobe(out)
    assert probe["codec"] == "opus" and probe["format"] == "ogg" and probe["channels"] == 1
    # Opus always decodes at 48 kHz; the stream records the rate it was encoded from.
    assert probe["sample_rate"] == 48000
    assert _opus_input_rate(out) == rate
    assert probe["duration"] == pytest.approx(1.0, abs=0.02)


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="exists \\(use --overwrite to replace it\\)"):
        convert_file(LOCALFILE_DATA / "pcma-rtp.wav", out)
    assert out.read_bytes() == b"keep me"
    convert_file(LOCALFILE_DATA / "pcma-rtp.wav", out, overwrite=True)
    assert out.read_bytes()[:4] == b"RIFF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_output_taken_during_the_conversion_is_not_clobbered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.wav"
    real = convert_module.write_wav

    def slow_write(*args: object, **kwargs: object) -> object:
        info = real(*args, **kwargs)  # type: ignore[arg-type]
        out.write_bytes(b"someone else")
        return info

    monkeypatch.setattr(convert_module, "write_wav", slow_write)
    with pytest.raises(OutputExistsError):
        convert_file(LOCALFILE_DATA / "pcma-rtp.wav", out)
    assert out.read_bytes() == b"someone else"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("unknown-codec.wav", r"^codec 'iLBC' is not supported"),
        ("zero-length.wav", r"^file is empty \(0 bytes\): not a phone recording$"),
        ("not-this-format.wav", r"codec field has no NUL terminator"),
    ],
)
def test_unreadable_files_leave_nothing_behind(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(LocalFileError, match=message):
        convert_file(LOCALFILE_DATA / name, tmp_path / "out" / "x.flac", fmt="flac")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_damaged_file_converts_what_it_holds(tmp_path: Path) -> None:
    result = convert_file(LOCALFILE_DATA / "truncated.wav", tmp_path / "t.wav")
    assert result.info.damaged and result.duration == pytest.approx(0.6)


def test_refuses_to_replace_its_own_source(tmp_path: Path) -> None:
    source = tmp_path / "Record_1.wav"
    shutil.copy(LOCALFILE_DATA / "pcma-rtp.wav", source)
    with pytest.raises(ConvertError, match="is the source file itself"):
        convert_file(source, tmp_path / "." / "Record_1.wav", overwrite=True)
    assert source.read_bytes() == (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes()


def test_unknown_format() -> None:
    with pytest.raises(
        ConvertError, match="unknown output format 'mp3': use one of wav, flac, opus"
    ):
        output_suffix("mp3")
    assert output_suffix("opus") == ".opus"


def test_flac_and_opus_need_no_ffmpeg_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after `make run` on a fresh machine: nothing called ffmpeg on the PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    data = (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes()
    flac = convert_bytes(data, tmp_path / "x.flac", fmt="flac")
    assert flac.duration == 1.0 and flac.sample_rate == 8000
    assert soundfile.info(str(tmp_path / "x.flac")).frames == 8000
    assert convert_bytes(data, tmp_path / "x.opus", fmt="opus").duration == 1.0
    assert soundfile.info(str(tmp_path / "x.opus")).frames == 8000


def test_encoder_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Encoding(codec="libnothing", container="ogg")
    monkeypatch.setitem(convert_module.ENCODINGS, "opus", missing)
    data = (LOCALFILE_DATA / "pcma-rtp.wav").read_bytes()
    with pytest.raises(ConvertError, match=r"could not encode opus: .*no usable libnothing"):
        convert_bytes(data, tmp_path / "out" / "x.opus", fmt="opus")
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("codec", "filename", "unit_bytes", "increment", "payload_type"),
    [
        ("G726-32", "signal.g726-32", 80, 160, 112),
        ("G729", "noise.g729", 20, 160, 18),
        ("G723", "signal.g723", 24, 240, 4),
    ],
)
def test_a_local_file_of_an_ffmpeg_codec_converts_to_ffmpegs_decoding(
    codec: str, filename: str, unit_bytes: int, increment: int, payload_type: int, tmp_path: Path
) -> None:
    """A phone-local file whose header names G.726, G.729 or G.723.1: the WAV holds FFmpeg's
    decoding of its payloads, sample for sample."""
    encoded = (CODEC_DATA / filename).read_bytes()
    units = [
        RtpPacket(
            payload_type=payload_type,
            sequence_number=i,
            timestamp=i * increment,
            ssrc=9,
            payload=encoded[pos : pos + unit_bytes],
        ).serialize()
        for i, pos in enumerate(range(0, len(encoded), unit_bytes))
    ]
    source = tmp_path / "Record_20261202010203.wav"
    source.write_bytes(build_file(codec=codec, units=units, increment=increment))

    result = convert_file(source, tmp_path / "out.wav")

    samples, rate = soundfile.read(result.output, dtype="int16")
    assert rate == 8000 and result.sample_rate == 8000
    reference = np.frombuffer((CODEC_DATA / f"{filename}.ffmpeg.s16le").read_bytes(), "<i2")
    np.testing.assert_array_equal(samples, reference)
