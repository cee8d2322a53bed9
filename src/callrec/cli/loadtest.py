"""``callrec loadtest``: many simulated phones against a server, and what it made of them.

The engine is :mod:`callrec.sim.loadtest`; this module parses options and shows the live progress
and the final table (both also used by ``benchmarks/ingest.py`` and
``benchmarks/peer_gstreamer.py``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from callrec.cli import ConfigOption, _settings, app, console, err_console
from callrec.exceptions import CallrecError

if TYPE_CHECKING:
    from callrec.sim.loadrun import Progress
    from callrec.sim.report import LoadReport

#: Seconds between two plain progress lines when the output is not a terminal.
PLAIN_PROGRESS_EVERY = 5.0


@app.command()
def loadtest(
    server: Annotated[
        str | None,
        typer.Argument(
            help="HOST:PORT of a running callrec server (or use --spawn).", show_default=False
        ),
    ] = None,
    spawn: Annotated[
        bool,
        typer.Option(
            help="Start `callrec serve` for the run (temp catalogue, web/SIP off) and measure it."
        ),
    ] = False,
    calls: Annotated[int, typer.Option(help="Simulated phones, one call each.")] = 100,
    seconds: Annotated[float, typer.Option(help="Seconds each call streams.")] = 30.0,
    ramp: Annotated[float, typer.Option(help="Calls started per second.")] = 100.0,
    codec: Annotated[
        str, typer.Option(help="PCMA, PCMU, G722 or G726-32 (-16, -24, -40).")
    ] = "PCMA",
    terminator: Annotated[
        str, typer.Option(help="Control message terminator: none (as phones), crlf, lf, nul.")
    ] = "none",
    verify: Annotated[
        int, typer.Option(help="Recordings to check sample by sample against the sent audio.")
    ] = 10,
    max_loss: Annotated[
        float, typer.Option(help="Fail when more than this percent of packets is lost.")
    ] = 0.0,
    audio: Annotated[
        Path | None, typer.Option(help="WAV file to loop (default: a built-in test signal).")
    ] = None,
    answer_timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 10.0,
    senders: Annotated[
        int, typer.Option(help="Sender processes (0: one per 1,500 calls, at most one per core).")
    ] = 0,
    server_pid: Annotated[
        int | None,
        typer.Option(help="Running server: its PID (default: whoever listens on PORT)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Running server: its catalogue URL (default: from the settings)."),
    ] = None,
    recordings_dir: Annotated[
        Path | None,
        typer.Option(help="Running server: its recordings directory (default: from the settings)."),
    ] = None,
    config: ConfigOption = None,
    server_args: Annotated[
        str, typer.Option(help="--spawn: extra arguments for `callrec serve`, one string.")
    ] = "",
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="--spawn: keep the catalogue, recordings and log here (default: temp, removed)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option(help="No live progress.")] = False,
) -> None:
    """N simulated phones record calls at once; report loss, CPU, memory, stop latency.

    Exit status 1 when a call fails, loss is over --max-loss or a recording does not match
    what was sent.
    """
    from callrec.sim.call import parse_server
    from callrec.sim.loadrun import TERMINATORS, LoadOptions
    from callrec.sim.loadtest import run_loadtest

    try:
        term = TERMINATORS[terminator.lower()]
    except KeyError:
        err_console.print(f"[red]--terminator must be one of {', '.join(TERMINATORS)}[/red]")
        raise typer.Exit(2) from None
    try:
        options = LoadOptions(
            calls=calls,
            seconds=seconds,
            ramp=ramp,
            codec=codec,
            terminator=term,
            verify=verify,
            max_loss=max_loss,
            answer_timeout=answer_timeout,
            audio=audio,
            senders=senders,
        )
        target = parse_server(server) if server is not None else None
        if target is not None:
            settings, _ = _settings(config)
            database_url = database_url or settings.database_url
            recordings_dir = (recordings_dir or settings.recordings_dir).resolve()
        with progress_view(err_console, quiet=quiet) as show:
            report = run_loadtest(
                options,
                server=target,
                spawn=spawn,
                server_pid=server_pid,
                database_url=database_url,
                recordings_dir=recordings_dir,
                server_args=shlex.split(server_args),
                workdir=workdir,
                progress=show,
            )
    except (CallrecError, OSError) as exc:
        err_console.print(f"[red]loadtest failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(report_table([report]))
    print_problems(err_console, [report])
    if not report.ok:
        raise typer.Exit(1)


# -- progress --------------------------------------------------------------------------------


def progress_line(p: Progress) -> str:
    parts = [
        f"{p.elapsed:6.1f} s",
        f"calls up {p.up}/{p.calls} (started {p.started}, done {p.done}, failed {p.failed})",
        f"{p.packets_per_second:,.0f} pkt/s ({p.packets_sent:,} sent)",
    ]
    if p.kernel_drops is not None:
        parts.append(f"dropped {p.kernel_drops:,}")
    if p.backlog_bytes is not None:
        parts.append(f"backlog {p.backlog_bytes / 1024:,.0f} KiB")
    if p.recorder_cpu_percent is not None:
        parts.append(f"server CPU {p.recorder_cpu_percent:.0f}%")
    if p.recorder_rss_kib is not None:
        parts.append(f"RSS {p.recorder_rss_kib / 1024:,.0f} MiB")
    parts.append(f"tick lag {p.tick_lag_ms:.0f} ms")
    return "  ".join(parts)


def progress_view(
    out: Console, *, quiet: bool = False
) -> AbstractContextManager[Callable[[Progress], None] | None]:
    """A context giving the progress callback: a live line on a terminal, a plain line every
    few seconds otherwise, nothing when quiet."""
    if quiet:
        return nullcontext(None)
    if out.is_terminal:
        return _LiveView(out)
    last = [-PLAIN_PROGRESS_EVERY]

    def plain(p: Progress) -> None:
        if p.elapsed - last[0] >= PLAIN_PROGRESS_EVERY:
            last[0] = p.elapsed
            out.print(progress_line(p), highlight=False)

    return nullcontext(plain)


class _LiveView:
    def __init__(self, out: Console) -> None:
        # Refreshed by our updates only: no refresh thread competing with the send loop.
        self._live = Live(console=out, auto_refresh=False, transient=False)

    def __enter__(self) -> Callable[[Progress], None]:
        self._live.__enter__()
        return self._update

    def __exit__(self, *exc_info: Any) -> None:
        self._live.__exit__(*exc_info)

    def _update(self, p: Progress) -> None:
        self._live.update(progress_line(p), refresh=True)


# -- the report ------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def _ms(median: float | None, p99: float | None) -> str:
    if median is None or p99 is None:
        return "-"
    return f"{median:,.1f} / {p99:,.1f}"


ROWS: list[tuple[str, Callable[[LoadReport], str]]] = [
    ("codec", lambda r: r.codec),
    ("calls (ok / asked)", lambda r: f"{r.calls_ok:,} / {r.calls:,}"),
    ("seconds per call, ramp", lambda r: f"{r.seconds:g} s, {r.ramp:g} calls/s"),
    (
        "packets sent",
        lambda r: (
            f"{r.packets_sent:,}" + (f" ({r.send_errors:,} send errors)" if r.send_errors else "")
        ),
    ),
    ("packets received", lambda r: _num(r.packets_received)),
    ("packets recorded", lambda r: _num(r.packets_recorded)),
    ("loss % (sent - received)", lambda r: _num(r.loss_percent, "{:.4f}")),
    ("late %", lambda r: _num(r.late_percent, "{:.4f}")),
    ("gaps (recorder's lost)", lambda r: _num(r.packets_lost)),
    ("kernel drops (full buffer)", lambda r: _num(r.kernel_drops)),
    (
        "CPU, % of one core",
        lambda r: (
            _num(r.cpu_percent, "{:.1f}") + f" ({r.cpu_window}, {r.cpu_window_seconds:.0f} s)"
        ),
    ),
    ("CPU per call, %", lambda r: _num(r.cpu_per_call_percent, "{:.4f}")),
    ("CPU per packet, us", lambda r: _num(r.cpu_us_per_packet, "{:.1f}")),
    ("RSS before / peak, MiB", lambda r: f"{_mib(r.rss_before_kib)} / {_mib(r.rss_peak_kib)}"),
    ("RSS per call, KiB", lambda r: _num(r.rss_per_call_kib, "{:,.1f}")),
    ("processes", lambda r: str(r.processes)),
    ("start answer ms (median / p99)", lambda r: _ms(r.start_ms_median, r.start_ms_p99)),
    ("stop -> answered ms (median / p99)", lambda r: _ms(r.stop_ms_median, r.stop_ms_p99)),
    (
        "stop -> row in catalogue ms (median / p99)",
        lambda r: _ms(r.stop_row_ms_median, r.stop_row_ms_p99),
    ),
    (
        "generator tick lag ms (p99 / max)",
        lambda r: f"{r.tick_lag_ms_p99:.1f} / {r.tick_lag_ms_max:.1f}",
    ),
    (
        "generator CPU % (nice)",
        lambda r: f"{_num(r.loadgen_cpu_percent, '{:.1f}')} ({r.loadgen_nice})",
    ),
    ("files verified (failed)", lambda r: f"{r.verified} ({r.verify_failed})"),
    ("result", lambda r: "[green]ok[/green]" if r.ok else "[red]FAILED[/red]"),
]


def report_table(reports: Sequence[LoadReport], *, title: str | None = None) -> Table:
    """One column per report (callrec, a peer...), one row per figure."""
    table = Table(title=title)
    table.add_column("figure")
    for report in reports:
        table.add_column(report.recorder, justify="right")
    for name, cell in ROWS:
        table.add_row(name, *(cell(r) for r in reports))
    return table


def print_problems(out: Console, reports: Sequence[LoadReport]) -> None:
    for report in reports:
        for note in report.notes:
            out.print(f"{report.recorder}: {note}", highlight=False)
        for problem in report.problems:
            out.print(f"[red]{report.recorder}: {problem}[/red]", highlight=False)
