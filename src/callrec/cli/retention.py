"""``callrec retention``, ``callrec hold`` and ``callrec recordings delete`` (issue 16, R).

Deletes from here go through the catalogue's one delete, which refuses a held recording and
leaves a tombstone; they are audited as made by ``cli:<login name>`` from ``local``. See
docs/retention.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from callrec.cli import (
    ConfigOption,
    _catalog,
    _day_start,
    app,
    console,
    err_console,
    recordings_app,
)
from callrec.cli.users import _actor
from callrec.exceptions import CallrecError
from callrec.jobs.events import webhook_events

retention_app = typer.Typer(
    help="Retention: the effective policy, and sweeps by hand.", no_args_is_help=True
)
hold_app = typer.Typer(
    help="Legal holds: recordings no one and nothing may delete.", no_args_is_help=True
)
app.add_typer(retention_app, name="retention")
app.add_typer(hold_app, name="hold")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(exc: CallrecError) -> typer.Exit:
    err_console.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


# -- callrec recordings delete -------------------------------------------------------------


@recordings_app.command("delete")
def recordings_delete(
    ids: Annotated[list[int], typer.Argument(help="Recording ids.")],
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Delete recordings: row, files (WAV, companions, original, sidecar), notes and tags; a
    tombstone stays. A recording under legal hold, or still being recorded, is refused."""
    from callrec.retention import remove_files

    settings, catalog = _catalog(config)
    failed = 0
    try:
        if not yes and not typer.confirm(f"Delete {len(ids)} recording(s) for good?"):
            raise typer.Exit(1)
        for rec_id in ids:
            try:
                rec, tomb = catalog.retire_recording(
                    rec_id,
                    by=_actor(),
                    reason="deleted from the command line",
                    events=webhook_events(settings),
                )
            except CallrecError as exc:
                err_console.print(f"[red]{exc}[/red]")
                failed += 1
                continue
            removed: list[str] = []
            if tomb.node in (None, settings.node_name):
                removed = remove_files(settings.recordings_dir.resolve(), tomb)
                catalog.mark_files_removed([tomb.id])
            # else its node removes the files it holds (docs/scaling.md)
            _audit_delete(
                catalog,
                rec.id,
                path=rec.path,
                sha256=rec.sha256,
                start_time=rec.start_time.isoformat(),
                local_number=rec.local_number,
                remote_number=rec.remote_number,
                files_removed=removed,
                tombstone=tomb.id,
            )
            console.print(f"deleted recording {rec.id} ({len(removed)} files)")
    finally:
        catalog.close()
    if failed:
        raise typer.Exit(1)


def _audit_delete(catalog: Any, rec_id: int, **detail: Any) -> None:
    from callrec.catalog import NewAuditEntry

    catalog.audit(
        NewAuditEntry(
            action="delete",
            username=_actor(),
            recording_id=rec_id,
            client_address="local",
            detail=detail,
        )
    )


# -- callrec hold ---------------------------------------------------------------------------


def _audit_hold(catalog: Any, action: str, hold: Any, **more: Any) -> None:
    from callrec.catalog import NewAuditEntry

    catalog.audit(
        NewAuditEntry(
            action=action,
            username=_actor(),
            client_address="local",
            detail={
                "hold": hold.id,
                "kind": hold.kind,
                "value": hold.value,
                "reason": hold.reason,
                **more,
            },
        )
    )


@hold_app.command("add")
def hold_add(
    ids: Annotated[list[int] | None, typer.Argument(help="Recording ids to hold.")] = None,
    reason: Annotated[str, typer.Option(help="Why (a case, a request); required.")] = "",
    number: Annotated[
        str | None, typer.Option(help="Hold every call of this number, later ones too.")
    ] = None,
    tag: Annotated[
        str | None, typer.Option(help="Hold every recording with this tag, later ones too.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Put recordings (ids), a number or a tag under legal hold."""
    given = [bool(ids), number is not None, tag is not None]
    if sum(given) != 1:
        err_console.print("[red]give recording ids, or --number, or --tag (one of them)[/red]")
        raise typer.Exit(2)
    if not reason.strip():
        err_console.print("[red]--reason is required: say why the recordings are held[/red]")
        raise typer.Exit(2)
    settings, catalog = _catalog(config)
    # recording.held per recording newly held, queued in the hold's transaction.
    events = webhook_events(settings)
    try:
        if ids:
            hold = catalog.add_hold(
                "recording", recording_ids=ids, reason=reason, by=_actor(), events=events
            )
        elif number is not None:
            hold = catalog.add_hold(
                "number", value=number, reason=reason, by=_actor(), events=events
            )
        else:
            hold = catalog.add_hold(
                "tag", value=tag or "", reason=reason, by=_actor(), events=events
            )
        _audit_hold(catalog, "hold_add", hold, recordings=sorted(ids or [])[:1000])
    except CallrecError as exc:
        raise _fail(exc) from exc
    finally:
        catalog.close()
    console.print(f"legal hold {hold.id} set on {hold.target}")


@hold_app.command("remove")
def hold_remove(
    hold_id: Annotated[int, typer.Argument(help="The hold's id (callrec hold list).")],
    config: ConfigOption = None,
) -> None:
    """Release a legal hold (it stays listed, with who released it and when)."""
    _settings, catalog = _catalog(config)
    try:
        hold = catalog.release_hold(hold_id, by=_actor())
        _audit_hold(catalog, "hold_remove", hold)
    except CallrecError as exc:
        raise _fail(exc) from exc
    finally:
        catalog.close()
    console.print(f"legal hold {hold.id} released ({hold.target})")


@hold_app.command("list")
def hold_list(
    config: ConfigOption = None,
    released: Annotated[bool, typer.Option("--all", help="Released holds too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Legal holds, newest first."""
    _settings, catalog = _catalog(config)
    try:
        holds = catalog.holds(include_released=released)
    finally:
        catalog.close()
    if as_json:
        rows = [
            {
                "id": h.id,
                "kind": h.kind,
                "value": h.value,
                "query": h.query,
                "reason": h.reason,
                "created_by": h.created_by,
                "created_at": h.created_at.isoformat(),
                "released_at": h.released_at.isoformat() if h.released_at else None,
                "released_by": h.released_by,
                "recordings": h.recordings,
            }
            for h in holds
        ]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("id", "holds", "reason", "by", "since", "released")
    for h in holds:
        table.add_row(
            str(h.id),
            h.target,
            h.reason,
            h.created_by,
            h.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            f"{h.released_by} {h.released_at.astimezone():%Y-%m-%d %H:%M}" if h.released_at else "",
        )
    console.print(table)
    if not holds:
        console.print("no legal holds")


# -- callrec retention ----------------------------------------------------------------------


@retention_app.command("show")
def retention_show(config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """The effective retention policy, what each rule covers, the quota, the holds.

    A recording is kept for the longest retention among the rules that match it; the
    default applies when none matches. For each rule: the recordings it matches, and those
    it decides that are past it now."""
    from callrec.retention import policy_of, quota_limit

    settings, catalog = _catalog(config)
    now = datetime.now(UTC)
    try:
        policy = policy_of(settings)
        coverage = catalog.rule_coverage(policy, now)
        used = catalog.catalogued_bytes()
        limit = quota_limit(settings)
        holds = catalog.holds()
        pending = len(catalog.pending_tombstones())
    except CallrecError as exc:
        raise _fail(exc) from exc
    finally:
        catalog.close()
    data = {
        "retention_days": settings.retention_days,
        "rules": [str(r) for r in policy.rules],
        "coverage": [
            {"rule": c.label, "recordings": c.matching, "expired_now": c.expired} for c in coverage
        ],
        "disk_quota": {"setting": settings.disk_quota, "limit": limit, "used": used},
        "holds": len(holds),
        "pending_tombstones": pending,
    }
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(
        "A recording is kept for the longest retention among the rules that match it; the "
        "default applies when none matches. Held recordings are never deleted."
    )
    table = Table("rule", "recordings it matches", "past it now (it decides)")
    for c in coverage:
        table.add_row(c.label, f"{c.matching:,}", f"{c.expired:,}")
    console.print(table)
    if limit is None:
        console.print(f"disk quota: none (recordings take {used:,} bytes)")
    else:
        console.print(
            f"disk quota: {settings.disk_quota} = {limit:,} bytes; recordings take "
            f"{used:,} ({used / limit:.0%})"
        )
    console.print(f"legal holds: {len(holds)} active")
    if pending:
        console.print(f"[yellow]{pending} deletes whose files are not removed yet[/yellow]")


@retention_app.command("run")
def retention_run(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; change nothing.")
    ] = False,
    before: Annotated[
        datetime | None,
        typer.Option(
            help="Instead of the policy: delete every unheld recording that started before "
            "this date (local time), asking first unless --yes."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a retention sweep now (`serve` runs one daily).

    Deletes what the policy expires (or, with --before, everything older), oldest first,
    never a held recording or one being recorded, and finishes deletes a crash left half
    done. Each deletion leaves a tombstone and an audit entry."""
    from callrec.retention import sweep

    settings, catalog = _catalog(config)
    now = datetime.now(UTC)
    cutoff = _day_start(before)
    try:
        if cutoff is not None and not dry_run and not yes:
            preview = sweep(catalog, settings, now, dry_run=True, before=cutoff)
            if not preview.deleted:
                console.print("nothing to delete")
                return
            if not typer.confirm(
                f"Delete {preview.deleted:,} recordings that started before "
                f"{cutoff.astimezone():%Y-%m-%d %H:%M} for good?"
            ):
                raise typer.Exit(1)
        result = sweep(
            catalog,
            settings,
            now,
            dry_run=dry_run,
            before=cutoff,
            by=_actor() if cutoff else "retention",
        )
    except CallrecError as exc:
        raise _fail(exc) from exc
    finally:
        catalog.close()
    if as_json:
        print(
            json.dumps(
                {
                    "dry_run": result.dry_run,
                    "deleted": result.deleted,
                    "bytes": result.bytes,
                    "files_removed": result.files_removed,
                    "finished_pending": result.finished_pending,
                    "by_rule": dict(result.by_reason),
                    "preview": [
                        {
                            "id": r.id,
                            "start_time": r.start_time.isoformat(),
                            "path": r.path,
                            "rule": label,
                        }
                        for r, label in result.preview
                    ],
                },
                indent=2,
            )
        )
        return
    if dry_run:
        console.print(f"would delete {result.deleted:,} recordings (dry run: nothing changed)")
        for r, label in result.preview:
            console.print(
                f"  {r.id}  {r.start_time.astimezone():%Y-%m-%d %H:%M}  {r.path}  {label}"
            )
        return
    console.print(f"deleted {result.deleted:,} recordings ({result.bytes:,} bytes)")
    for label, n in result.by_reason.most_common():
        console.print(f"  {n:,} by {label}")
    if result.finished_pending:
        console.print(f"finished {result.finished_pending} earlier deletes")
