"""The files of a recording: writing PCM to them, flushing, closing, repairing, originals.

Blocking file work that the engine runs off the event loop: flushes on its media I/O thread,
closes (fsync, SHA-256) and repairs on the default executor. Only :func:`write_frames` runs on
the loop, and it only appends to memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callrec import filemodes
from callrec.media.wav import SAMPLE_WIDTH, WavInfo, WavTooLargeError, WavWriter, repair_wav

if TYPE_CHECKING:
    from callrec.engine.recording import Recording


def write_frames(
    writers: Sequence[WavWriter],
    frames: Sequence[bytes],
    cut_points: Callable[[], Sequence[int]],
) -> None:
    """Hand each output's PCM to its file (memory only). At a file's largest size what fits
    is kept, cut where ``cut_points`` allows (packet boundaries of the first output; else at
    a frame), and :class:`WavTooLargeError` is raised."""
    for index, (writer, pcm) in enumerate(zip(writers, frames, strict=False)):
        if not pcm:
            continue
        try:
            writer.write(pcm)
        except WavTooLargeError:
            room = writer.room
            cuts = cut_points() if index == 0 else ()
            if cuts:
                keep = max((c for c in cuts if c <= room), default=0)
            else:
                frame = SAMPLE_WIDTH * writer.channels
                keep = room - room % frame
            if keep:
                writer.write(memoryview(pcm)[:keep])
            raise


def flush_files(recordings: list[Recording[Any]]) -> list[tuple[Recording[Any], OSError]]:
    """Flush each recording's files (runs on the I/O thread); returns the failures."""
    failed: list[tuple[Recording[Any], OSError]] = []
    for rec in recordings:
        if rec.finishing:
            continue  # its close() flushes, on its own
        for writer in rec.writers:
            try:
                writer.flush()
            except ValueError:
                break  # closed meanwhile by its finish
            except OSError as exc:
                failed.append((rec, exc))
                break
    return failed


def close_files(writers: tuple[WavWriter, ...]) -> WavInfo:
    """Close every file (each fsynced); what the recording's own file holds."""
    info = writers[0].close()
    for writer in writers[1:]:
        writer.close()
    return info


def repair_files(writers: tuple[WavWriter, ...]) -> WavInfo:
    info = repair_wav(
        writers[0].path, sample_rate=writers[0].sample_rate, channels=writers[0].channels
    )
    for writer in writers[1:]:
        repair_wav(writer.path, sample_rate=writer.sample_rate, channels=writer.channels)
    return info


def write_original(path: Path, data: bytes) -> None:
    """The original file, exclusively created and on disk before its recording is."""
    filemodes.make_dirs(path.parent)
    with filemodes.create_binary(path) as out:
        try:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
