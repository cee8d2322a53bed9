"""``callrec archive``: the archive policy by hand (issue 16, part 4).

``run`` transcodes the finished recordings older than ``archive_after_days`` to
``archive_format`` (FLAC or Opus), replacing each WAV only once its copy is verified, as
``callrec serve`` does every ``archive_interval``; ``show`` counts what was archived and the
bytes saved. Safe while ``callrec serve`` runs: a recording is claimed before it is
transcoded, so two processes never work on one. See docs/archive.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from callrec.cli import ConfigOption, _catalog, app, console, err_console

archive_app = typer.Typer(
    help="Archive formats: transcode old recordings to FLAC or Opus.", no_args_is_help=True
)
app.add_typer(archive_app, name="archive")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{count} B"  # pragma: no cover - the loop always returns


@archive_app.command("run")
def archive_run(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be archived; change nothing.")
    ] = False,
    ids: Annotated[
        list[int] | None,
        typer.Option("--ids", help="Only these recordings, whatever their age (repeatable)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="flac or opus (default: the archive_format setting)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Transcode the finished recordings older than archive_after_days (or --ids) to FLAC
    or Opus; each WAV is removed only once its copy decodes back to it."""
    from callrec.engine.archive import archive_sweep

    settings, catalog = _catalog(config)
    chosen = settings.archive_format if fmt is None else fmt
    if chosen not in ("flac", "opus"):
        catalog.close()
        err_console.print(
            "[red]no archive format:[/red] set archive_format (flac or opus) or pass --format"
        )
        raise typer.Exit(2)
    try:
        report = archive_sweep(
            catalog, settings, datetime.now(UTC), dry_run=dry_run, ids=ids or None, fmt=chosen
        )
    finally:
        catalog.close()
    if as_json:
        data: dict[str, Any] = {
            "format": report.format,
            "dry_run": dry_run,
            "outcomes": [
                {
                    "id": o.recording_id,
                    "result": o.result,
                    "path": o.path,
                    "wav_bytes": o.wav_bytes,
                    "archive_bytes": o.archive_bytes,
                    "error": o.error,
                }
                for o in report.outcomes
            ],
            "cleaned": report.cleaned,
            "saved_bytes": report.saved_bytes,
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for o in report.outcomes:
            line = f"#{o.recording_id} {o.result}: {o.path}"
            if o.result == "archived":
                line += f" ({_size(o.wav_bytes)} -> {_size(o.archive_bytes)})"
            if o.error:
                line += f": {o.error}"
            console.print(line, highlight=False, markup=False)
        for path in report.cleaned:
            console.print(f"removed {path} (left by an interrupted run)", markup=False)
        verb = "would archive" if dry_run else "archived"
        count = report.count("would") if dry_run else report.count("archived")
        console.print(
            f"{verb} {count} recordings as {report.format}"
            + ("" if dry_run else f", {_size(report.saved_bytes)} saved")
            + (f", {report.count('failed')} failed" if report.count("failed") else ""),
            highlight=False,
        )
    if report.count("failed"):
        raise typer.Exit(1)


@archive_app.command("show")
def archive_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """How many recordings are archived, as what, and the bytes saved."""
    from callrec.catalog.archives import ArchiveStore

    settings, catalog = _catalog(config)
    try:
        totals = ArchiveStore(catalog).totals()
    finally:
        catalog.close()
    if as_json:
        data = {
            "policy": {
                "archive_format": settings.archive_format,
                "archive_after_days": settings.archive_after_days,
                "archive_opus_bitrate": settings.archive_opus_bitrate,
            },
            "states": totals.states,
            "formats": totals.formats,
            "wav_bytes": totals.wav_bytes,
            "archive_bytes": totals.archive_bytes,
            "saved_bytes": totals.saved_bytes,
        }
        print(json.dumps(data, indent=2))
        return
    policy = (
        f"{settings.archive_format} after {settings.archive_after_days:g} days"
        if settings.archive_format
        else "off (archive_format is empty)"
    )
    console.print(f"policy: {policy}", highlight=False)
    table = Table("state", "recordings")
    for state, count in sorted(totals.states.items()):
        table.add_row(state, str(count))
    console.print(table)
    for name, count in sorted(totals.formats.items()):
        console.print(f"{count} archived as {name}", highlight=False)
    console.print(
        f"WAV {_size(totals.wav_bytes)} -> archives {_size(totals.archive_bytes)}: "
        f"{_size(totals.saved_bytes)} saved",
        highlight=False,
    )
