"""``callrec file``: phone-local (USB) recordings: info, convert, play, import.

Every command takes files and directories; a directory stands for every ``*.wav`` under it
(standard RIFF/WAVE files there are skipped: they are not phone recordings). A batch goes on
past a bad file and lists every error at the end; the exit status is 1 if any file failed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from callrec.cli import ConfigOption, _settings, app, console, err_console
from callrec.exceptions import CallrecError

if TYPE_CHECKING:
    from callrec.media.convert import ConvertResult
    from callrec.media.localfile import LocalFileInfo

# The media modules (numpy, codecs) are imported inside the commands: `callrec --help` and
# the other command groups should not pay for them.

file_app = typer.Typer(
    help="Phone-local (USB) recordings, Record_*.wav: inspect, convert, play, import.",
    no_args_is_help=True,
)
app.add_typer(file_app, name="file")

T = TypeVar("T")

#: What a directory argument stands for: the phone's files are named ``Record_*.wav``.
SUFFIX = ".wav"
_RIFF = b"RIFF"


class OutputFormat(StrEnum):
    wav = "wav"
    flac = "flac"
    opus = "opus"


@dataclass(frozen=True, slots=True)
class Item:
    """One file of a batch and where its output goes, relative to the output directory."""

    source: Path
    relative: Path


@dataclass(slots=True)
class Batch:
    items: list[Item] = field(default_factory=list)
    #: (path, why) of files a directory walk passed over.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: (path, message) of files that failed.
    errors: list[tuple[Path, str]] = field(default_factory=list)


def collect(paths: Sequence[Path], *, exclude: Path | None = None) -> Batch:
    """Expand arguments into files: a file as given, a directory into its ``*.wav`` tree
    (sorted; hidden files, standard WAVs and anything under ``exclude`` left out)."""
    batch = Batch()
    excluded = exclude.resolve() if exclude is not None else None
    for path in paths:
        if path.is_dir():
            for found in sorted(_walk(path)):
                if excluded is not None and found.resolve().is_relative_to(excluded):
                    continue
                if _is_riff(found):
                    batch.skipped.append((found, "a standard WAV, not a phone recording"))
                    continue
                batch.items.append(Item(found, found.relative_to(path)))
        elif path.exists():
            batch.items.append(Item(path, Path(path.name)))
        else:
            batch.errors.append((path, "no such file or directory"))
    return batch


def _walk(root: Path) -> Iterator[Path]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(SUFFIX):
                yield Path(directory) / name


def _is_riff(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _RIFF
    except OSError:
        return False


def run_batch(batch: Batch, label: str, work: Callable[[Item], T]) -> list[tuple[Item, T]]:
    """Run ``work`` on every item, with a progress bar for more than one; a
    :class:`CallrecError` or ``OSError`` is recorded in ``batch.errors`` and the batch goes on."""
    done: list[tuple[Item, T]] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=len(batch.items) < 2,
    )
    with progress:
        task = progress.add_task(label, total=len(batch.items))
        for item in batch.items:
            try:
                done.append((item, work(item)))
            except (CallrecError, OSError) as exc:
                batch.errors.append((item.source, _message(exc)))
            progress.advance(task)
    return done


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def report(batch: Batch, summary: str) -> None:
    """Print what was skipped and what failed, then the summary; exit 1 if anything failed."""
    for path, why in batch.skipped:
        console.print(
            f"[yellow]skipped[/yellow] {escape(f'{path}: {why}')}", highlight=False, soft_wrap=True
        )
    for path, message in batch.errors:
        err_console.print(
            f"[red]error[/red] {escape(f'{path}: {message}')}", highlight=False, soft_wrap=True
        )
    console.print(summary, highlight=False, soft_wrap=True)
    if batch.errors:
        raise typer.Exit(1)


def read(path: Path) -> tuple[bytes, LocalFileInfo]:
    from callrec.media.localfile import scan

    data = path.read_bytes()
    return data, scan(data)


def info_dict(path: Path, info: LocalFileInfo) -> dict[str, Any]:
    header = info.header
    return {
        "path": str(path),
        "codec": header.codec,
        "sample_rate": info.sample_rate,
        "byte_order": header.byte_order,
        "unit_size": header.unit_size,
        "payload_size": info.payload_size,
        "rtp_headers": info.rtp_headers,
        "increment": header.increment,
        "units": info.units,
        "duration": info.duration,
        "announced_duration": header.announced_duration,
        "data_size": header.data_size,
        "file_size": info.file_size,
        "damaged": info.damaged,
        "problems": list(info.problems),
        "error": None,
    }


FilesArg = Annotated[
    list[Path],
    typer.Argument(
        help="Phone-local files, or directories (every *.wav under them).",
        metavar="FILE|DIR...",
        show_default=False,
    ),
]


@file_app.command("info")
def file_info(
    paths: FilesArg,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Codec, unit size, increment, units, duration, RTP headers and problems of each file."""
    batch = collect(paths)
    rows: list[dict[str, Any]] = []
    for item, (_, info) in run_batch(batch, "reading", lambda item: read(item.source)):
        rows.append(info_dict(item.source, info))
    if as_json:
        failed = [{"path": str(p), "error": message} for p, message in batch.errors]
        print(json.dumps(rows + failed, indent=2))
        raise typer.Exit(1 if batch.errors else 0)
    for row in rows:
        _print_info(row)
    report(batch, f"{len(rows)} read, {len(batch.errors)} failed")


def _print_info(row: dict[str, Any]) -> None:
    from callrec.media.localfile import HEADER_SIZE, RTP_CLOCK_RATE

    units = "RTP packets (12-byte header stripped)" if row["rtp_headers"] else "bare payloads"
    rate = f"{row['sample_rate']} Hz" if row["sample_rate"] else "not decodable"
    lines = [
        f"[bold]{escape(row['path'])}[/bold]",
        f"  codec        {row['codec']} ({rate})",
        f"  byte order   {row['byte_order']}-endian",
        f"  unit         {row['unit_size']} bytes: {units}, {row['payload_size']} bytes of audio",
        f"  increment    {row['increment']} ({row['increment'] * 1000 / RTP_CLOCK_RATE:g} ms)",
        f"  units        {row['units']}",
        f"  duration     {row['duration']:.2f} s (header announces "
        f"{row['announced_duration']:.2f} s)",
        f"  data         {row['file_size'] - HEADER_SIZE} bytes in a {row['file_size']}-byte file, "
        f"header announces {row['data_size']}",
    ]
    problems = row["problems"] or ["none"]
    lines.append(f"  problems     {escape(problems[0])}")
    lines += [f"               {escape(p)}" for p in problems[1:]]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


@file_app.command("convert")
def file_convert(
    paths: FilesArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory to write into.", show_default=False)
    ],
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format (wav, flac, opus).")
    ] = OutputFormat.wav,
    overwrite: Annotated[bool, typer.Option(help="Replace outputs that exist.")] = False,
) -> None:
    """Convert to WAV, FLAC or Opus (G.711 at 8 kHz, G.722 at 16 kHz), keeping folders.

    A directory's tree is recreated under the output directory; existing outputs are kept
    unless --overwrite is given.
    """
    from callrec.media.convert import OutputExistsError, convert_file, output_suffix

    suffix = output_suffix(fmt.value)
    batch = collect(paths, exclude=output)
    exists: list[tuple[Path, str]] = []

    def work(item: Item) -> ConvertResult | None:
        target = output / item.relative.with_suffix(suffix)
        try:
            return convert_file(item.source, target, fmt=fmt.value, overwrite=overwrite)
        except OutputExistsError as exc:
            exists.append((item.source, str(exc)))
            return None

    results = run_batch(batch, f"converting to {fmt.value}", work)
    converted = 0
    for item, result in results:
        if result is None:
            continue
        converted += 1
        damaged = (
            " [yellow](damaged: see `callrec file info`)[/yellow]" if result.info.damaged else ""
        )
        line = (
            f"{item.source} -> {result.output} ({result.duration:.2f} s, {result.sample_rate} Hz)"
        )
        console.print(escape(line) + damaged, highlight=False, soft_wrap=True)
    batch.skipped += exists
    report(
        batch,
        f"converted {converted}, skipped {len(batch.skipped)}, failed {len(batch.errors)}",
    )


@file_app.command("play")
def file_play(
    path: Annotated[Path, typer.Argument(help="A phone-local file.", show_default=False)],
) -> None:
    """Play through the system's audio output (PipeWire, PulseAudio, ALSA or macOS)."""
    from callrec.media import player as players
    from callrec.media.convert import write_wav

    chosen = players.find_player()
    if chosen is None:
        err_console.print(
            escape(
                "no audio output here: no PipeWire or PulseAudio server and no ALSA playback "
                "device (or no player program: pw-play, paplay, aplay, ffplay). Convert the "
                f"file and play it elsewhere:\n  callrec file convert {path} -o DIR"
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    try:
        data, info = read(path)
        with _temporary_dir() as tmp:
            wav = write_wav(info, data, tmp / (path.stem + ".wav"))
            console.print(
                escape(
                    f"playing {path} ({wav.duration:.2f} s, {wav.sample_rate} Hz) with "
                    f"{chosen.name}; Ctrl-C stops"
                ),
                highlight=False,
                soft_wrap=True,
            )
            players.play(wav.path, chosen)
    except (CallrecError, OSError) as exc:
        err_console.print(
            f"[red]error[/red] {escape(f'{path}: {_message(exc)}')}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@contextmanager
def _temporary_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="callrec-play-") as name:
        yield Path(name)


@file_app.command("import")
def file_import(
    paths: FilesArg,
    config: ConfigOption = None,
    device: Annotated[
        str, typer.Option(help="MAC of the phone the drive came from, if known.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Catalogue files beside the server's recordings, as source usb.

    Each becomes a playable WAV under recordings_dir/usb_import_dir with the phone's original
    kept beside it; a file imported before is recognised by its SHA-256.
    """
    import asyncio

    from callrec.service import importing
    from callrec.usb.importer import ImportResult

    settings, _ = _settings(config)
    batch = collect(paths)
    # One event loop for the whole batch: the importer's engine and catalogue writer live
    # on it between the files.
    with asyncio.Runner() as runner:
        context = importing(settings)
        importer = runner.run(context.__aenter__())
        try:

            def work(item: Item) -> ImportResult:
                return runner.run(importer.import_file(item.source, device=device))

            results = run_batch(batch, "importing", work)
        finally:
            runner.run(context.__aexit__(None, None, None))
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "path": str(item.source),
                "id": r.recording.id,
                "duplicate": r.duplicate,
                "file": r.recording.path,
                "original": r.recording.original_path,
                "duration": r.recording.duration,
                "status": r.recording.status,
                "problems": list(r.problems),
                "error": None,
            }
            for item, r in results
        ]
        rows += [{"path": str(p), "error": message} for p, message in batch.errors]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        raise typer.Exit(1 if batch.errors else 0)
    imported = duplicates = 0
    for item, r in results:
        rec = r.recording
        if r.duplicate:
            duplicates += 1
            line = f"{item.source}: already imported as #{rec.id} {rec.path}"
            console.print(escape(line), highlight=False, soft_wrap=True)
            continue
        imported += 1
        duration = f"{rec.duration:.2f} s" if rec.duration is not None else "?"
        line = f"{item.source}: imported as #{rec.id} {rec.path} ({duration}, {rec.status})"
        console.print(escape(line), highlight=False, soft_wrap=True)
        for problem in r.problems:
            console.print(f"  [yellow]{escape(problem)}[/yellow]", highlight=False, soft_wrap=True)
    report(
        batch,
        f"imported {imported}, already imported {duplicates}, skipped {len(batch.skipped)}, "
        f"failed {len(batch.errors)}",
    )
