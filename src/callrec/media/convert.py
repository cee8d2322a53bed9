"""Phone-local (USB) files to standard audio: WAV by our own writer, FLAC and Opus by FFmpeg.

Output is mono at the codec's rate (8 kHz for G.711, 16 kHz for G.722, never downsampled);
Opus, whose decoders always run at 48 kHz, is encoded from that. A conversion writes a hidden
temporary file beside the output and renames it into place at the end, so an interrupted run
never leaves a half-written file under the output's name, and an existing output is replaced
only when asked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from callrec import filemodes
from callrec.exceptions import CallrecError
from callrec.media.localfile import LocalFileInfo, decode, scan
from callrec.media.wav import WavInfo, WavWriter

#: Output formats and their file suffixes.
FORMATS: Final = {"wav": ".wav", "flac": ".flac", "opus": ".opus"}
#: FFmpeg encoder arguments per format (WAV is written by :class:`WavWriter`, no FFmpeg).
#: 32 kbit/s Opus in VoIP mode is transparent for narrow- and wide-band telephone speech.
FFMPEG_ENCODE: Final = {
    "flac": ["-c:a", "flac", "-f", "flac"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-application", "voip", "-f", "opus"],
}
#: Seconds FFmpeg may take to encode one file before we give up on it.
FFMPEG_TIMEOUT: Final = 600.0
#: Decoded bytes buffered before they are written out, bounding memory on long files.
_FLUSH_BYTES: Final = 1 << 20


class ConvertError(CallrecError):
    """A conversion that could not be done: output exists, FFmpeg missing or failing."""


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
    :class:`ConvertError` when FFmpeg is missing or fails.
    """
    output_suffix(fmt)
    output = Path(output)
    if not overwrite and os.path.lexists(output):
        raise OutputExistsError(f"{output} exists (use --overwrite to replace it)")
    info = scan(data)
    info.require_codec()
    ffmpeg = None
    if fmt != "wav":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise ConvertError(
                f"{fmt} output needs FFmpeg, which is not installed; WAV output does not"
            )
    filemodes.make_dirs(output.parent)
    temp_wav = _temp_path(output, ".wav")
    temp_out = _temp_path(output, FORMATS[fmt])
    try:
        wav = write_wav(info, data, temp_wav)
        if ffmpeg is None:
            temp_out = temp_wav
        else:
            _ffmpeg_encode(ffmpeg, temp_wav, temp_out, fmt)
            filemodes.apply(temp_out)  # FFmpeg made it under the umask
        _move_into_place(temp_out, output, overwrite=overwrite)
    finally:
        temp_wav.unlink(missing_ok=True)
        temp_out.unlink(missing_ok=True)
    return ConvertResult(
        output=output,
        format=fmt,
        sample_rate=wav.sample_rate,
        duration=wav.duration,
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


def _ffmpeg_encode(ffmpeg: str, source: Path, output: Path, fmt: str) -> None:
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    command += ["-i", str(source), *FFMPEG_ENCODE[fmt], str(output)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ConvertError(f"FFmpeg took over {FFMPEG_TIMEOUT:g} s encoding {fmt}") from None
    except OSError as exc:
        raise ConvertError(f"cannot run FFmpeg: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise ConvertError(
            f"FFmpeg could not encode {fmt} (exit {done.returncode}): "
            f"{detail[-1] if detail else 'no message'}"
        )


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
