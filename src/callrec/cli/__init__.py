"""The ``callrec`` command: serve, phone, config, recordings."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from callrec import __version__, filemodes
from callrec.config import Settings, load_settings
from callrec.exceptions import CallrecError, ConfigError
from callrec.filemodes import FileModes
from callrec.spreadsheet import SafeDictWriter

app = typer.Typer(
    help="callrec: a call-recording server for Fanvil/Becke SIP phones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the configuration.", no_args_is_help=True)
recordings_app = typer.Typer(help="Find, inspect and export recordings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(recordings_app, name="recordings")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML settings file (else $CALLREC_CONFIG).", show_default=False
    ),
]


def _settings(config: Path | None, **overrides: Any) -> tuple[Settings, dict[str, str]]:
    try:
        settings, sources = load_settings(config, overrides=overrides)
        filemodes.configure(FileModes.from_settings(settings.file_mode, settings.file_group))
        return settings, sources
    except CallrecError as exc:
        err_console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _version(value: bool) -> None:
    if value:
        console.print(f"callrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


@app.command()
def serve(
    config: ConfigOption = None,
    control_port: Annotated[int | None, typer.Option(help="TCP control port.")] = None,
    recordings_dir: Annotated[Path | None, typer.Option(help="Where recordings go.")] = None,
    database_url: Annotated[str | None, typer.Option(help="Catalogue URL.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Recording processes sharing the calls (each with a slice of the media ports); "
            "with 2 or more, the control port stays served if the main process dies."
        ),
    ] = None,
) -> None:
    """Run the recording server until SIGTERM/SIGINT (then finalise every open recording).

    One server per recordings directory (a second is refused). As a service: docs/install.md.
    """
    settings, _ = _settings(
        config,
        control_port=control_port,
        recordings_dir=recordings_dir,
        database_url=database_url,
        workers=workers,
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every plugin it loads at INFO; only its warnings matter to an operator.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))
    from callrec.service import run
    from callrec.service.supervision import main_lock

    try:
        # The whole life of the main process: orphaned media workers of an earlier server
        # hand over when they see it held, and a second server on these recordings is refused.
        with main_lock(settings):
            run(settings)
    except ConfigError as exc:  # found at start: a certificate, the file group
        err_console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except OSError as exc:
        err_console.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def phone(
    play: Annotated[Path, typer.Option(help="WAV file: the local party (or the phone's mix).")],
    server: Annotated[str, typer.Option(help="Recording server as HOST:PORT.")] = "127.0.0.1:10000",
    codec: Annotated[
        str,
        typer.Option(help="PCMA, PCMU, G722, G726-32 (or -16, -24, -40) or G723 (30 ms packets)."),
    ] = "PCMA",
    play_remote: Annotated[
        Path | None, typer.Option(help="WAV file: the remote party, mixed in as the phone does.")
    ] = None,
    fast: Annotated[bool, typer.Option(help="Send as fast as possible, not in real time.")] = False,
    duration: Annotated[
        float | None, typer.Option(help="Seconds to stream (cut or padded with silence).")
    ] = None,
    session_id: Annotated[str | None, typer.Option("--id", help="Session id (random).")] = None,
    device: Annotated[str, typer.Option(help="MAC address sent as device=.")] = "0c383e0e709a",
    local_number: Annotated[str, typer.Option()] = "3001",
    local_name: Annotated[str, typer.Option()] = "",
    remote_number: Annotated[str, typer.Option()] = "2011",
    remote_name: Annotated[str, typer.Option()] = "",
    direction: Annotated[str, typer.Option("--dir", help="in or out.")] = "out",
    terminator: Annotated[
        str, typer.Option(help="Message terminator: none (as phones do), crlf, lf, nul.")
    ] = "none",
    bind_ip: Annotated[str | None, typer.Option(help="Source IP for TCP and RTP.")] = None,
    local_record: Annotated[
        Path | None,
        typer.Option(help="Also record to Record_*.wav files in this directory, as to USB."),
    ] = None,
    local_rtp_headers: Annotated[
        bool, typer.Option(help="Local units are whole RTP packets, or bare payloads.")
    ] = True,
    local_max_bytes: Annotated[
        int | None, typer.Option(help="Local file-size limit; then a new file (16 MiB).")
    ] = None,
    pause_at: Annotated[
        list[float] | None, typer.Option(help="Pause local recording at S s (repeatable).")
    ] = None,
    resume_at: Annotated[
        list[float] | None, typer.Option(help="Resume it at S s (repeatable).")
    ] = None,
    local_only: Annotated[
        bool, typer.Option(help="Record only to --local-record; contact no server.")
    ] = False,
) -> None:
    """Behave like a phone recording one call to a server; print what the server answered."""
    from callrec.media.localrecord import DEFAULT_MAX_BYTES
    from callrec.sim.call import run_phone

    try:
        result = run_phone(
            server,
            codec=codec,
            play=play,
            play_remote=play_remote,
            fast=fast,
            duration=duration,
            session_id=session_id,
            device=device,
            local_number=local_number,
            local_name=local_name,
            remote_number=remote_number,
            remote_name=remote_name,
            direction=direction,
            terminator=terminator,
            bind_ip=bind_ip,
            local_record=local_record,
            local_rtp_headers=local_rtp_headers,
            local_max_bytes=DEFAULT_MAX_BYTES if local_max_bytes is None else local_max_bytes,
            pause_at=pause_at or (),
            resume_at=resume_at or (),
            local_only=local_only,
        )
    except (CallrecError, OSError, ValueError) as exc:
        err_console.print(f"[red]phone failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    for local_file in result.local_files:
        console.print(f"local file: {local_file}", highlight=False)
    if local_only:
        return
    console.print(f"start answer: {result.start_answer}")
    if result.stop_answer is not None:
        console.print(f"stop answer:  {result.stop_answer}")
    console.print(f"sent {result.packets_sent} RTP packets in {result.duration:.2f} s")
    if not result.ok:
        err_console.print(f"[red]recording failed:[/red] {result.error}")
        raise typer.Exit(1)


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the effective settings, where each came from, and what it means."""
    settings, source = _settings(config)
    if as_json:
        data = {k: _plain(_hidden(k, v)) for k, v in dataclasses.asdict(settings).items()}
        print(json.dumps(data, indent=2))
        return
    table = Table("setting", "value", "from", "meaning")
    for name, doc, _default in Settings.fields_doc():
        value = _hidden(name, getattr(settings, name))
        shown = ", ".join(value) if isinstance(value, tuple) else str(value)
        table.add_row(name, shown, source[name], doc)
    console.print(table)


def _hidden(name: str, value: Any) -> Any:
    """A secret's value as ``***`` (``config show`` output ends up in bug reports)."""
    secret = name.endswith(("_secret", "_secret_key"))
    if secret and value:
        return "***"
    if name == "database_url" and value:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            return value
        # The password of a database URL is a secret too; the rest helps a bug report.
        return url.render_as_string(hide_password=True) if url.password else value
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _catalog(config: Path | None) -> Any:
    from callrec.catalog import Catalog

    settings, _ = _settings(config)
    catalog = Catalog(settings.database_url)
    catalog.migrate(node=settings.node_name)
    return settings, catalog


def _day_start(d: datetime | None, *, end: bool = False) -> datetime | None:
    if d is None:
        return None
    if d.time() == time(0) and end:
        d = datetime.combine(date.fromordinal(d.toordinal() + 1), time(0))
    return (
        d.astimezone(UTC)
        if d.tzinfo
        else d.replace(tzinfo=datetime.now().astimezone().tzinfo).astimezone(UTC)
    )


def _find(
    config: Path | None,
    number: str | None,
    device: str | None,
    since: datetime | None,
    until: datetime | None,
    status: str | None,
    limit: int,
) -> tuple[Settings, list[Any]]:
    settings, catalog = _catalog(config)
    try:
        rows = catalog.find(
            number=number,
            device=device,
            since=_day_start(since),
            until=_day_start(until, end=True),
            status=status,
            limit=limit,
        )
    finally:
        catalog.close()
    return settings, rows


NumberOpt = Annotated[str | None, typer.Option(help="Local or remote number contains this.")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device (MAC) is this.")]
SinceOpt = Annotated[datetime | None, typer.Option(help="Started on/after (local time).")]
UntilOpt = Annotated[
    datetime | None, typer.Option(help="Started before; a date includes that day.")
]
StatusOpt = Annotated[str | None, typer.Option(help="recording, complete, recovered or failed.")]


@recordings_app.command("list")
def recordings_list(
    config: ConfigOption = None,
    number: NumberOpt = None,
    device: DeviceOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    status: StatusOpt = None,
    said: Annotated[
        str | None,
        typer.Option(help="Words said in the call, in order (its transcript); shows them."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List recordings, newest first."""
    snippets: dict[int, str] = {}
    if said is not None:
        rows, snippets = _find_said(config, said, number, device, since, until, status, limit)
    else:
        _, rows = _find(config, number, device, since, until, status, limit)
    if as_json:
        out = [_row_dict(r) for r in rows]
        if said is not None:
            for item in out:
                item["snippet"] = snippets.get(item["id"])
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return
    columns = ["id", "start", "dir", "local", "remote", "device", "codec", "dur s", "status"]
    table = Table(*columns, *(["said"] if said is not None else []))
    for r in rows:
        table.add_row(
            str(r.id),
            r.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            r.direction,
            _party(r.local_number, r.local_name),
            _party(r.remote_number, r.remote_name),
            r.device,
            r.codec,
            f"{r.duration:.1f}" if r.duration is not None else "",
            r.status,
            # Text, not markup: the snippet's [brackets] are the words found.
            *([Text(snippets.get(r.id, ""))] if said is not None else []),
        )
    console.print(table)
    if not rows:
        console.print("no recordings match")


def _find_said(
    config: Path | None,
    said: str,
    number: str | None,
    device: str | None,
    since: datetime | None,
    until: datetime | None,
    status: str | None,
    limit: int,
) -> tuple[list[Any], dict[int, str]]:
    """The recordings whose transcript has ``said``, through the search the web uses (the
    number is then a word of the search: it also matches names)."""
    from callrec.catalog import SearchQuery
    from callrec.exceptions import CatalogError

    _, catalog = _catalog(config)
    try:
        page = catalog.search(
            SearchQuery(
                said=said,
                q=number or "",
                device=device,
                since=_day_start(since),
                until=_day_start(until, end=True),
                status=status,
                limit=limit,
                with_total=False,
            )
        )
    except CatalogError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        catalog.close()
    return page.items, page.snippets


def _party(number: str, name: str) -> str:
    return f"{number} ({name})" if name else number


def _row_dict(r: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in dataclasses.asdict(r).items()}


@recordings_app.command("show")
def recordings_show(
    rec_id: Annotated[int, typer.Argument(help="Recording id.")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every catalogued field of one recording."""
    settings, catalog = _catalog(config)
    rec = catalog.get(rec_id)
    catalog.close()
    if rec is None:
        err_console.print(f"[red]no recording {rec_id}[/red]")
        raise typer.Exit(1)
    data = _row_dict(rec)
    data["file"] = str(settings.recordings_dir.resolve() / rec.path)
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table("field", "value")
    for k, v in data.items():
        table.add_row(k, json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else str(v))
    console.print(table)


@recordings_app.command("export")
def recordings_export(
    to: Annotated[Path, typer.Option("--to", "-o", help="Directory to copy recordings into.")],
    config: ConfigOption = None,
    number: NumberOpt = None,
    device: DeviceOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    status: StatusOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 10000,
) -> None:
    """Copy matching recordings (keeping their folders) and write an index.csv beside them."""
    settings, rows = _find(config, number, device, since, until, status, limit)
    root = settings.recordings_dir.resolve()
    filemodes.make_dirs(to)
    copied = missing = 0
    index = to / "index.csv"
    index.unlink(missing_ok=True)  # replaced, with the configured mode
    with os.fdopen(filemodes.create(index, os.O_WRONLY), "w", newline="", encoding="utf-8") as fh:
        out: SafeDictWriter | None = None
        for r in rows:
            src = root / r.path
            data = _row_dict(r)
            data["extra"] = json.dumps(data["extra"], ensure_ascii=False)
            if out is None:
                out = SafeDictWriter(fh, list(data))
                out.writeheader()
            out.writerow(data)
            if not src.is_file():
                missing += 1
                err_console.print(f"[yellow]missing file for #{r.id}:[/yellow] {src}")
                continue
            dst = to / r.path
            filemodes.make_dirs(dst.parent)
            shutil.copy2(src, dst)
            filemodes.apply(dst)  # copy2 copied the source's mode
            copied += 1
    console.print(f"exported {copied} recordings to {to} ({missing} missing files)")
    if missing:
        raise typer.Exit(1)


# Command groups that live in their own modules register here, one line each.
# -- `callrec file ...` (issue 3) --
from callrec.cli import files as _files  # noqa: E402, F401, I001 - adds `callrec file`

# -- `callrec user ...` (issue 4) --
from callrec.cli import users as _users  # noqa: E402, F401 - adds `callrec user`

# -- `callrec sip ...` (issue 6) --
from callrec.cli import sip as _sip  # noqa: E402, F401 - adds `callrec sip`
from callrec.cli import loadtest as _loadtest  # noqa: E402, F401 - adds `callrec loadtest` (issue 5)

# -- `callrec catalogue ...` (issue 12) --
from callrec.cli import catalogue as _catalogue  # noqa: E402, F401 - adds `callrec catalogue`
from callrec.cli import integrity as _integrity  # noqa: E402, F401 - adds `callrec verify` (issue 16)

# -- `callrec jobs ...` (issue 16 part 3) --
from callrec.cli import jobs as _jobs  # noqa: E402, F401 - adds `callrec jobs`

# -- `callrec archive ...` (issue 16 part 4) --
from callrec.cli import archive as _archive  # noqa: E402, F401 - adds `callrec archive`

# -- `callrec retention`, `callrec hold`, `callrec recordings delete` (issue 16 R) --
from callrec.cli import retention as _retention  # noqa: E402, F401

# -- `callrec transcribe` (issue 18) --
from callrec.cli import transcribe as _transcribe  # noqa: E402, F401


def main() -> None:
    try:
        app()
    except CallrecError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
