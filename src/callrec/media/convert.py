"""Phone-local (USB) files to standard audio: WAV by our own writer, FLAC and Opus by the
encoders PyAV bundles (:mod:`callrec.media.encode`; no FFmpeg program needed).

Output is mono at the codec's rate (8 kHz for G.711, 16 kHz for G.722, never downsampled);
Opus, whose decoders always run at 48 kHz, is encoded from that. A conversion writes a hidden
temporary file beside the output and renames it into place at the end, so an interrupted run
never leaves a half-written file under the output's name, and an existing output is replaced
only when asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from callrec import filemodes
from callrec.exceptions import CallrecError
from callrec.media.encode import FLAC, OPUS_FILE, EncodeError, Encoding, Samples, encode_file
from callrec.media.localfile import LocalFileInfo, decode, scan
from callrec.media.wav import WavInfo, WavWriter

#: Output formats and their file suffixes.
FORMATS: Final = {"wav": ".wav", "flac": ".flac", "opus": ".opus"}
#: Encoders per format (WAV is written by :class:`WavWriter`).
ENCODINGS: Final[dict[str, Encoding]] = {"flac": FLAC, "opus": OPUS_FILE}
#: Decoded bytes buffered before they are written out, bounding memory on long files.
_FLUSH_BYTES: Final = 1 << 20


class ConvertError(CallrecError):
    """A conversion that could not be done: output exists, encoder missing or failing."""


class OutputExistsError(ConvertError):
    """The output file exists and replacing it was not asked for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvertResult:
    """One converted file."""

    output: Path
    format: str
    #: Rate of the audio written (the Opus stream is encoded from audio at this rate).
    sample_rate: int
    #: Seconds of audio written.
    duration: float
    #: What the source held.
    info: LocalFileInfo


def output_suffix(fmt: str) -> str:
    """The file suffix of an output format; :class:`ConvertError` for an unknown one."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ConvertError(
            f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}"
        ) from None


def write_wav(info: LocalFileInfo, data: bytes | bytearray | memoryview, path: Path) -> WavInfo:
    """Decode the units :func:`~callrec.media.localfile.scan` found into a new WAV at
    ``path`` (created exclusively); on any error the partial file is removed."""
    codec = info.require_codec()
    writer = WavWriter(path, sample_rate=codec.sample_rate)
    try:
        for chunk in decode(info, data):
            writer.write(chunk)
            if writer.bytes_buffered >= _FLUSH_BYTES:
                writer.flush()
        return writer.close()
    except BaseException:
        writer.abort()
        Path(path).unlink(missing_ok=True)
        raise


def convert_bytes(
    data: bytes | bytearray | memoryview,
    output: Path,
    *,
    fmt: str = "wav",
    overwrite: bool = False,
) -> ConvertResult:
    """Convert a phone-local file held in ``data`` to ``output`` in ``fmt``.

    Raises :class:`~callrec.exceptions.LocalFileError` for a file that cannot be read or
    decoded, :class:`OutputExistsError` when ``output`` exists and ``overwrite`` is False, and
    :class:`ConvertError` when the encoder is missing or fails.
    """
    output_suffix(fmt)
    output = Path(output)
    if not overwrite and os.path.lexists(output):
        raise OutputExistsError(f"{output} exists (use --overwrite to replace it)")
    info = scan(data)
    codec = info.require_codec()
    filemodes.make_dirs(output.parent)
    temp = _temp_path(output, FORMATS[fmt])
    try:
        if fmt == "wav":
            wav = write_wav(info, data, temp)
            rate, duration = wav.sample_rate, wav.duration
        else:
            rate = codec.sample_rate
            counted = _Counted(info, data)
            try:
                encode_file(counted, temp, encoding=ENCODINGS[fmt], sample_rate=rate)
            except EncodeError as exc:
                raise ConvertError(f"could not encode {fmt}: {exc}") from exc
            filemodes.apply(temp)  # PyAV made it under the umask
            duration = counted.frames / rate
        _move_into_place(temp, output, overwrite=overwrite)
    finally:
        temp.unlink(missing_ok=True)
    return ConvertResult(
        output=output,
        format=fmt,
        sample_rate=rate,
        duration=duration,
        info=info,
    )


def convert_file(
    source: Path, output: Path, *, fmt: str = "wav", overwrite: bool = False
) -> ConvertResult:
    """Convert the phone-local file at ``source``; see :func:`convert_bytes`."""
    source = Path(source)
    if _same_file(source, output):
        raise ConvertError(f"{output} is the source file itself; choose another output")
    return convert_bytes(source.read_bytes(), output, fmt=fmt, overwrite=overwrite)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def _temp_path(output: Path, suffix: str) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.part{suffix}")


class _Counted:
    """The decoded audio as int16 blocks, counting the samples that went by."""

    def __init__(self, info: LocalFileInfo, data: bytes | bytearray | memoryview) -> None:
        self._info = info
        self._data = data
        self.frames = 0

    def __iter__(self) -> Iterator[Samples]:
        pending: list[bytes] = []
        size = 0
        for chunk in decode(self._info, self._data):
            pending.append(bytes(chunk))
            size += len(chunk)
            if size >= _FLUSH_BYTES:
                yield self._block(pending)
                pending, size = [], 0
        if pending:
            yield self._block(pending)

    def _block(self, chunks: list[bytes]) -> Samples:
        block = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.int16, copy=False)
        self.frames += len(block)
        return block


def _move_into_place(temp: Path, output: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, output)
        return
    try:
        # A hard link fails if the name was taken meanwhile: no clobbering, even in a race.
        os.link(temp, output)
    except FileExistsError:
        raise OutputExistsError(f"{output} exists (use --overwrite to replace it)") from None
    except OSError:
        # Filesystems without hard links (FAT on a USB drive): check, then rename.
        if os.path.lexists(output):
            raise OutputExistsError(f"{output} exists (use --overwrite to replace it)") from None
        os.replace(temp, output)
