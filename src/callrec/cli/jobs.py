"""``callrec jobs list|show|retry|run-once``: the job runner's queue from the server's shell
(issue 16 part 3; docs/jobs.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from callrec.catalog import JobInfo, JobStore
from callrec.catalog.jobs import JOB_STATES
from callrec.cli import ConfigOption, _catalog, app, console, err_console

jobs_app = typer.Typer(
    help="The job runner's queue: webhook deliveries, on_complete_command, periodic work.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")

#: Most passes of ``run-once``.
PASSES = 10


def _row(job: JobInfo) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "key": job.key,
        "url": job.payload.get("url"),
        "state": job.state,
        "attempts": job.attempts,
        "run_after": job.run_after.isoformat(),
        "last_error": job.last_error,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@jobs_app.command("list")
def jobs_list(
    config: ConfigOption = None,
    state: Annotated[
        str | None, typer.Option(help=f"Only jobs in this state ({', '.join(JOB_STATES)}).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only jobs of this kind ('webhook:*': every webhook's).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest jobs shown.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Jobs newest first, with state, attempts and last error."""
    if state is not None and state not in JOB_STATES:
        err_console.print(f"[red]--state must be one of {', '.join(JOB_STATES)}[/red]")
        raise typer.Exit(2)
    _settings, catalog = _catalog(config)
    try:
        jobs = JobStore(catalog).list_jobs(state=state, kind=kind, limit=limit)
    finally:
        catalog.close()
    if as_json:
        print(json.dumps([_row(job) for job in jobs], indent=2))
        return
    table = Table("id", "kind", "for", "state", "attempts", "next run", "last error")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.kind,
            str(job.payload.get("url") or job.key),
            job.state,
            str(job.attempts),
            job.run_after.isoformat(timespec="seconds") if job.state == "queued" else "",
            (job.last_error or "")[:80],
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: int, config: ConfigOption = None) -> None:
    """One job and the history of its attempts (a webhook's answers, a command's output)."""
    _settings, catalog = _catalog(config)
    try:
        store = JobStore(catalog)
        job = store.get(job_id)
        attempts = store.attempts(job_id) if job is not None else []
    finally:
        catalog.close()
    if job is None:
        err_console.print(f"[red]no job {job_id}[/red]")
        raise typer.Exit(1)
    console.print(json.dumps(_row(job), indent=2))
    table = Table("attempt", "finished", "runner", "outcome", "answer")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            a.finished_at.isoformat(timespec="seconds"),
            a.runner,
            a.outcome,
            a.detail,
        )
    console.print(table)


@jobs_app.command("retry")
def jobs_retry(job_id: int, config: ConfigOption = None) -> None:
    """Queue a job (a dead one, usually) to run now with a fresh count of attempts."""
    _settings, catalog = _catalog(config)
    try:
        store = JobStore(catalog)
        if not store.retry(job_id):
            job = store.get(job_id)
            err_console.print(
                f"[red]no job {job_id}[/red]"
                if job is None
                else f"[red]job {job_id} is running[/red]"
            )
            raise typer.Exit(1)
    finally:
        catalog.close()
    console.print(f"job {job_id} queued again")


@jobs_app.command("run-once")
def jobs_run_once(config: ConfigOption = None) -> None:
    """Run every due job now, in this process, and exit (with the kinds the settings give:
    webhooks, on_complete_command); also catches up recordings without a completion job.
    Safe next to a running `callrec serve`: each job is claimed by one runner."""
    from callrec.jobs.completion import build_runner
    from callrec.storage.client import store_from

    settings, catalog = _catalog(config)
    try:
        runner, completion = build_runner(
            settings,
            catalog,
            root=Path(settings.recordings_dir).resolve(),
            store=store_from(settings),
        )

        async def run() -> int:
            try:
                await completion.catch_up()
                # Again while a pass queued new due work (a completion's webhooks); retries
                # wait for their back-off, so this ends.
                total = 0
                for _ in range(PASSES):
                    count = await runner.run_once()
                    total += count
                    if not count:
                        break
                return total
            finally:
                await runner.stop()
                completion.close()

        count = asyncio.run(run())
    finally:
        catalog.close()
    console.print(f"{count} jobs run")
