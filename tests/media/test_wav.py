from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.exceptions import CallrecError
from callrec.media import wav as wav_module
from callrec.media.wav import (
    HEADER_SIZE,
    WavError,
    WavHeader,
    WavInfo,
    WavRepairError,
    WavTooLargeError,
    WavWriter,
    read_wav_info,
    repair_wav,
    sha256_file,
)


def tone(frames: int, channels: int = 1, *, start: int = 0) -> np.ndarray:
    """Distinct, deterministic int16 samples (shape frames x channels)."""
    index = np.arange(start * channels, (start + frames) * channels, dtype=np.int64)
    samples = ((index * 7919) % 65536 - 32768).astype("<i2")
    return samples.reshape(frames, channels)


def read_with_wave(path: Path) -> tuple[int, int, int, np.ndarray]:
    with wave.open(str(path), "rb") as reader:
        rate = reader.getframerate()
        channels = reader.getnchannels()
        assert reader.getsampwidth() == 2
        frames = reader.getnframes()
        data = np.frombuffer(reader.readframes(frames), dtype="<i2").reshape(-1, channels)
    return rate, channels, frames, data


def read_with_soundfile(path: Path) -> tuple[int, np.ndarray]:
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return rate, data


def test_header_round_trip() -> None:
    header = WavHeader(sample_rate=8000, channels=1, data_size=320)
    data = header.serialize()
    assert len(data) == HEADER_SIZE
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVE" + b"fmt " and data[36:40] == b"data"
    assert WavHeader.parse(data) == header
    assert WavHeader.parse(data).serialize() == data
    stereo = WavHeader(sample_rate=48000, channels=2, data_size=4 * 480)
    assert WavHeader.parse(stereo.serialize()) == stereo
    assert stereo.byte_rate == 192000 and stereo.block_align == 4 and stereo.frames == 480


@pytest.mark.parametrize(
    ("offset", "patch", "message"),
    [
        (0, b"RIFX", "not a RIFF/WAVE file"),
        (12, b"LIST", "WAV does not start with a 16-byte 'fmt ' chunk"),
        (20, b"\x03\x00", r"WAV format tag 3 is not PCM \(1\)"),
        (22, b"\x06\x00", "WAV has 6 channels, not 1 or 2"),
        (34, b"\x18\x00", "WAV has 24 bits per sample, not 16"),
        (28, b"\x00\x00\x00\x00", "WAV block align or byte rate does not match its format"),
        (36, b"LIST", "WAV has no 'data' chunk right after 'fmt '"),
        (4, b"\x00\x00\x00\x00", "WAV RIFF size 0 does not match its data size 320"),
    ],
)
def test_header_parse_errors(offset: int, patch: bytes, message: str) -> None:
    data = bytearray(WavHeader(sample_rate=8000, channels=1, data_size=320).serialize())
    data[offset : offset + len(patch)] = patch
    with pytest.raises(WavError, match=message):
        WavHeader.parse(bytes(data))


def test_header_parse_truncated() -> None:
    with pytest.raises(WavError, match="WAV header is truncated: 10 of 44 bytes"):
        WavHeader.parse(b"RIFF" + bytes(6))


def test_header_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="channels must be 1 or 2, not 3"):
        WavHeader(sample_rate=8000, channels=3)
    with pytest.raises(ValueError, match="sample rate 0 out of range"):
        WavHeader(sample_rate=0, channels=1)
    with pytest.raises(ValueError, match="not a whole number of frames"):
        WavHeader(sample_rate=8000, channels=2, data_size=6)


def test_empty_file_is_a_valid_wav(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "empty.wav"  # parent directories are created
    writer = WavWriter(path, sample_rate=8000)
    assert path.stat().st_size == HEADER_SIZE
    assert read_with_wave(path)[:3] == (8000, 1, 0)  # valid before any write or flush
    info = writer.close()
    assert info == WavInfo(
        path=path,
        sample_rate=8000,
        channels=1,
        frames=0,
        duration=0.0,
        size_bytes=HEADER_SIZE,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert soundfile.info(str(path)).frames == 0


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (48000, 2), (8000, 2)])
def test_written_samples_read_back(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "call.wav"
    audio = tone(rate * 2 + 13, channels)
    with WavWriter(path, sample_rate=rate, channels=channels) as writer:
        for start in range(0, len(audio), 160):
            writer.write(audio[start : start + 160].tobytes())
        assert writer.frames_written == len(audio)
        assert writer.duration == len(audio) / rate
    assert writer.closed
    assert read_with_wave(path)[:3] == (rate, channels, len(audio))
    np.testing.assert_array_equal(read_with_wave(path)[3], audio)
    sf_rate, sf_data = read_with_soundfile(path)
    assert sf_rate == rate
    np.testing.assert_array_equal(sf_data, audio)


def test_close_returns_info_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    writer = WavWriter(path, sample_rate=16000, channels=2)
    writer.write(tone(16000, 2).tobytes())
    info = writer.close()
    assert info.path == path
    assert (info.sample_rate, info.channels, info.frames) == (16000, 2, 16000)
    assert info.duration == 1.0
    assert info.size_bytes == path.stat().st_size == HEADER_SIZE + 16000 * 4
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)
    assert writer.close() is info  # closing twice is harmless
    assert read_wav_info(path) == info


def test_header_valid_after_every_flush(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    audio = tone(8000, 1)
    writer = WavWriter(path, sample_rate=8000)
    for step in range(1, 6):
        writer.write(audio[(step - 1) * 1000 : step * 1000].tobytes())
        assert writer.bytes_buffered == 2000
        assert path.stat().st_size == HEADER_SIZE + (step - 1) * 2000  # write() is memory only
        writer.flush()
        assert writer.bytes_buffered == 0
        # Read while the writer still holds the file open.
        rate, channels, frames, data = read_with_wave(path)
        assert (rate, channels, frames) == (8000, 1, step * 1000)
        np.testing.assert_array_equal(data, audio[: step * 1000])
        assert soundfile.info(str(path)).frames == step * 1000
        assert read_wav_info(path).frames == step * 1000
    writer.flush()  # nothing buffered: nothing changes
    assert read_wav_info(path).frames == 5000
    writer.close()


def test_write_after_close_or_abort_is_refused(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "a.wav", sample_rate=8000)
    writer.close()
    with pytest.raises(ValueError, match="write to a closed WavWriter"):
        writer.write(b"\x00\x00")
    with pytest.raises(ValueError, match="flush of a closed WavWriter"):
        writer.flush()
    other = WavWriter(tmp_path / "b.wav", sample_rate=8000)
    other.abort()
    other.abort()
    with pytest.raises(ValueError, match="close of an aborted WavWriter"):
        other.close()


def test_partial_frames_are_refused(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "a.wav", sample_rate=8000, channels=2) as writer:
        with pytest.raises(ValueError, match="6 bytes of PCM is not a whole number of 4-byte"):
            writer.write(bytes(6))
        writer.write(bytes(8))
        assert writer.frames_written == 2


def test_accepts_buffers(tmp_path: Path) -> None:
    audio = tone(100, 1)
    with WavWriter(tmp_path / "a.wav", sample_rate=8000) as writer:
        writer.write(audio[:50].data)  # an int16 buffer, not only bytes
        writer.write(bytearray(audio[50:].tobytes()))
    np.testing.assert_array_equal(read_with_wave(tmp_path / "a.wav")[3], audio)


def test_never_clobbers(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        WavWriter(path, sample_rate=8000)
    assert path.read_bytes() == b"precious"
    target = tmp_path / "target"
    link = tmp_path / "link.wav"
    link.symlink_to(target)  # dangling: O_EXCL refuses it rather than following it
    with pytest.raises(FileExistsError):
        WavWriter(link, sample_rate=8000)
    assert not target.exists()


def test_context_manager_aborts_on_error(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    with pytest.raises(RuntimeError), WavWriter(path, sample_rate=8000) as writer:
        writer.write(tone(100).tobytes())
        writer.flush()
        writer.write(tone(50).tobytes())
        raise RuntimeError
    assert writer.closed
    assert writer.frames_written == 100  # the buffered 50 frames were dropped
    assert read_wav_info(path).frames == 100


def test_abort_keeps_flushed_audio(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    audio = tone(300)
    writer = WavWriter(path, sample_rate=8000)
    writer.write(audio[:200].tobytes())
    writer.flush()
    writer.write(audio[200:].tobytes())
    writer.abort()
    np.testing.assert_array_equal(read_with_wave(path)[3], audio[:200])


def test_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real cap is ~4 GiB; shrink it to test the refusal without writing gigabytes.
    monkeypatch.setattr(wav_module, "max_data_size", lambda channels: 8 * channels)
    with WavWriter(tmp_path / "a.wav", sample_rate=8000, channels=2) as writer:
        writer.write(bytes(12))
        with pytest.raises(WavTooLargeError, match="a WAV file holds at most 16 bytes of audio"):
            writer.write(bytes(8))
        writer.write(bytes(4))
    monkeypatch.undo()
    assert wav_module.max_data_size(1) == 0xFFFFFFFF - 36 - 1
    assert wav_module.max_data_size(2) == 0xFFFFFFFF - 36 - 3


def test_short_write_then_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut short by ENOSPC keeps the rest buffered; the next flush completes it."""
    path = tmp_path / "call.wav"
    audio = tone(1000)
    writer = WavWriter(path, sample_rate=8000)
    writer.write(audio.tobytes())
    real_write = os.write
    calls: list[int] = []

    def failing_write(fd: int, data: memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:301])  # short write, ending mid-frame
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="No space left on device") as caught:
        writer.flush()
    assert caught.value.errno == errno.ENOSPC
    assert writer.bytes_buffered == 2000 - 301
    # The header still announces nothing: the file is valid, with an unannounced tail.
    assert read_with_wave(path)[2] == 0
    monkeypatch.undo()
    writer.flush()
    assert writer.bytes_buffered == 0
    np.testing.assert_array_equal(read_with_wave(path)[3], audio)
    writer.close()


def test_flush_from_another_thread(tmp_path: Path) -> None:
    """write() on one thread while flush() runs on another loses and reorders nothing."""
    path = tmp_path / "call.wav"
    audio = tone(20000)
    writer = WavWriter(path, sample_rate=8000)
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            writer.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    for start in range(0, len(audio), 80):
        writer.write(audio[start : start + 80].tobytes())
    done.set()
    thread.join()
    writer.close()
    np.testing.assert_array_equal(read_with_wave(path)[3], audio)


# -- crashes and repair ------------------------------------------------------------------


def test_abandoned_writer_keeps_flushed_frames(tmp_path: Path) -> None:
    """A crash = the fd closed by the kernel with audio still buffered."""
    path = tmp_path / "call.wav"
    audio = tone(1500, 2)
    writer = WavWriter(path, sample_rate=8000, channels=2)
    writer.write(audio[:1000].tobytes())
    writer.flush()
    writer.write(audio[1000:].tobytes())
    os.close(writer._fd)  # what the kernel does when the process dies
    writer._fd = -1
    np.testing.assert_array_equal(read_with_wave(path)[3], audio[:1000])  # valid as is
    info = repair_wav(path)
    assert (info.frames, info.channels, info.sample_rate) == (1000, 2, 8000)
    np.testing.assert_array_equal(read_with_soundfile(path)[1], audio[:1000])
    assert info.sha256 == sha256_file(path)
    assert read_wav_info(path) == info


CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from callrec.media.wav import WavWriter

    writer = WavWriter(Path(sys.argv[1]), sample_rate=8000, channels=1)
    frame = bytes(range(256)) * 10  # 1280 frames
    for _ in range(5):
        writer.write(frame)
        writer.flush()
    writer.write(frame * 3)  # buffered, never flushed
    print("flushed", flush=True)
    time.sleep(60)  # until the test kills it: the crash is the point
    """
)


def test_sigkill_loses_only_unflushed_audio(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "flushed\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    expected = np.frombuffer(bytes(range(256)) * 50, dtype="<i2").reshape(-1, 1)
    # Valid straight after the kill, before any repair.
    rate, channels, frames, data = read_with_wave(path)
    assert (rate, channels, frames) == (8000, 1, 6400)
    np.testing.assert_array_equal(data, expected)
    info = repair_wav(path)
    assert info.frames == 6400
    np.testing.assert_array_equal(read_with_soundfile(path)[1], expected)


def write_flushed(path: Path, frames: int, channels: int = 1) -> np.ndarray:
    audio = tone(frames, channels)
    writer = WavWriter(path, sample_rate=8000, channels=channels)
    writer.write(audio.tobytes())
    writer.close()
    return audio


@pytest.mark.parametrize("channels", [1, 2])
def test_repair_stale_header(tmp_path: Path, channels: int) -> None:
    """Crash between the data write and the header rewrite: the tail is recovered."""
    path = tmp_path / "call.wav"
    audio = write_flushed(path, 100, channels)
    extra = tone(40, channels, start=100)
    with path.open("ab") as file:
        file.write(extra.tobytes())
    message = (
        f"header announces {200 * channels} data bytes but the file holds {280 * channels}; "
        "repair_wav fixes this"
    )
    with pytest.raises(WavError, match=message):
        read_wav_info(path)
    info = repair_wav(path)
    assert info.frames == 140
    np.testing.assert_array_equal(read_with_wave(path)[3], np.concatenate([audio, extra]))


@pytest.mark.parametrize(("channels", "tail"), [(1, 1), (2, 1), (2, 3)])
def test_repair_truncates_partial_frame(tmp_path: Path, channels: int, tail: int) -> None:
    path = tmp_path / "call.wav"
    audio = write_flushed(path, 100, channels)
    with path.open("ab") as file:
        file.write(b"\x7f" * tail)
    info = repair_wav(path)
    assert info.frames == 100
    assert path.stat().st_size == info.size_bytes == HEADER_SIZE + 100 * 2 * channels
    np.testing.assert_array_equal(read_with_soundfile(path)[1], audio)


def test_repair_zero_sizes(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    audio = write_flushed(path, 100, 2)
    with path.open("r+b") as file:  # the header as created, before any flush
        file.write(WavHeader(sample_rate=8000, channels=2).serialize())
    assert read_with_wave(path)[2] == 0
    assert repair_wav(path).frames == 100
    np.testing.assert_array_equal(read_with_wave(path)[3], audio)


def test_repair_valid_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    write_flushed(path, 100)
    before = path.read_bytes()
    info = repair_wav(path)
    assert path.read_bytes() == before
    assert info == read_wav_info(path)


@pytest.mark.parametrize("length", [0, 4, 20, 35])
def test_repair_short_file_gets_empty_header(tmp_path: Path, length: int) -> None:
    path = tmp_path / "call.wav"
    header = WavHeader(sample_rate=16000, channels=2).serialize()
    path.write_bytes(header[:length])
    info = repair_wav(path, sample_rate=16000, channels=2)
    assert (info.frames, info.size_bytes, info.sample_rate, info.channels) == (0, 44, 16000, 2)
    assert path.read_bytes() == header
    assert read_with_wave(path)[:3] == (16000, 2, 0)


def test_repair_short_file_keeps_its_own_format(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    header = WavHeader(sample_rate=48000, channels=2, data_size=400).serialize()
    path.write_bytes(header[:40])  # long enough to name its format
    info = repair_wav(path)  # the fallback 8000 Hz mono is not used
    assert (info.sample_rate, info.channels, info.frames) == (48000, 2, 0)
    assert read_with_wave(path)[:3] == (48000, 2, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello", "5-byte file is not the start of a WAV"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "16-byte file is not the start of a WAV"),
        (b"ID3\x04" + bytes(200), "cannot repair: not a RIFF/WAVE file"),
        (
            WavHeader(sample_rate=8000, channels=1).serialize()[:20] + b"\x03\x00" + bytes(100),
            r"cannot repair: WAV format tag 3 is not PCM \(1\)",
        ),
    ],
)
def test_repair_refuses_other_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "not.wav"
    path.write_bytes(content)
    with pytest.raises(WavRepairError, match=message) as caught:
        repair_wav(path)
    assert isinstance(caught.value, CallrecError)
    assert path.read_bytes() == content  # left untouched


def test_repair_refuses_a_foreign_wav(tmp_path: Path) -> None:
    path = tmp_path / "float.wav"
    soundfile.write(str(path), np.zeros(100, dtype=np.float32), 8000, subtype="FLOAT")
    before = path.read_bytes()
    with pytest.raises(WavRepairError, match="cannot repair"):
        repair_wav(path)
    assert path.read_bytes() == before


def test_read_wav_info_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"not a wav at all, but long enough to hold a header....")
    with pytest.raises(WavError, match=r"x\.wav: not a RIFF/WAVE file"):
        read_wav_info(path)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    content = bytes(range(251)) * 12_000  # spans several read chunks
    path.write_bytes(content)
    assert sha256_file(path) == hashlib.sha256(content).hexdigest()
