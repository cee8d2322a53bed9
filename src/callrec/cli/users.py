"""``callrec user``: web UI users and API tokens, from the server's shell.

Changes are written to the audit log as made by ``cli:<login name>`` from ``local``.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from callrec.cli import ConfigOption, _catalog, app, console, err_console
from callrec.exceptions import CallrecError

users_app = typer.Typer(
    help="Web UI users (admin, listener) and their API tokens.", no_args_is_help=True
)
app.add_typer(users_app, name="user")

RoleOpt = Annotated[str, typer.Option(help="admin (everything) or listener (search, play).")]
ExtensionOpt = Annotated[
    list[str] | None,
    typer.Option("--extension", "-e", help="Only calls of this extension (repeatable)."),
]
DeviceOpt = Annotated[
    list[str] | None,
    typer.Option("--device", "-d", help="Only calls recorded by this device MAC (repeatable)."),
]
StdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
GenerateOpt = Annotated[
    bool,
    typer.Option(
        "--generate", help="Make a one-time password (printed); they choose theirs at sign-in."
    ),
]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _audit(catalog: Any, action: str, **detail: Any) -> None:
    from callrec.catalog import NewAuditEntry

    catalog.audit(
        NewAuditEntry(action=action, username=_actor(), client_address="local", detail=detail)
    )


def _password(stdin: bool, generate: bool) -> tuple[str, bool]:
    """(password, generated)."""
    from callrec.web.security import check_password_policy, new_one_time_password

    if generate:
        return new_one_time_password(), True
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_password_policy(password)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    return password, False


def _open(config: Path | None) -> Any:
    _settings, catalog = _catalog(config)
    return catalog


def _user_or_exit(catalog: Any, name: str) -> Any:
    user = catalog.get_user_by_name(name)
    if user is None:
        err_console.print(f"[red]no user {name!r}[/red]")
        raise typer.Exit(1)
    return user


@users_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (a-z 0-9 . _ @ -).")],
    config: ConfigOption = None,
    role: RoleOpt = "listener",
    extension: ExtensionOpt = None,
    device: DeviceOpt = None,
    password_stdin: StdinOpt = False,
    generate: GenerateOpt = False,
) -> None:
    """Add a user; asks for the password (or reads it, or makes a one-time one)."""
    from callrec.web.security import hash_password

    password, generated = _password(password_stdin, generate)
    catalog = _open(config)
    try:
        user = catalog.create_user(
            name,
            password_hash=hash_password(password),
            role=role,
            extensions=extension or [],
            devices=device or [],
            must_change_password=generated,
        )
        _audit(catalog, "user_add", target=user.username, role=user.role)
    except CallrecError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(f"added {user.role} [bold]{user.username}[/bold]")
    if generated:
        console.print(f"one-time password: {password}")


@users_app.command("list")
def user_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every user, with role and restrictions."""
    catalog = _open(config)
    try:
        users = catalog.list_users()
    finally:
        catalog.close()
    if as_json:
        rows = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "extensions": list(u.extensions),
                "devices": list(u.devices),
                "must_change_password": u.must_change_password,
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "role", "extensions", "devices", "last sign-in")
    for u in users:
        table.add_row(
            u.username + (" (one-time password)" if u.must_change_password else ""),
            u.role,
            " ".join(u.extensions) or "all",
            " ".join(u.devices) or "all",
            u.last_login_at.astimezone().strftime("%Y-%m-%d %H:%M") if u.last_login_at else "",
        )
    console.print(table)
    if not users:
        console.print("no users yet: `callrec user add NAME --role admin`")


@users_app.command("set")
def user_set(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOption = None,
    role: Annotated[str | None, typer.Option(help="admin or listener.")] = None,
    extension: ExtensionOpt = None,
    device: DeviceOpt = None,
    unrestricted: Annotated[
        bool, typer.Option("--unrestricted", help="Remove every extension/device restriction.")
    ] = False,
) -> None:
    """Change a user's role or restrictions (given lists replace the old ones)."""
    catalog = _open(config)
    try:
        user = _user_or_exit(catalog, name)
        extensions = [] if unrestricted else extension
        devices = [] if unrestricted else device
        user = catalog.update_user(user.id, role=role, extensions=extensions, devices=devices)
        _audit(
            catalog,
            "user_update",
            target=user.username,
            role=user.role,
            extensions=list(user.extensions),
            devices=list(user.devices),
        )
    except CallrecError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    scope = " ".join((*user.extensions, *user.devices)) or "everything"
    console.print(f"{user.username}: {user.role}, sees {scope}")


@users_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOption = None,
    password_stdin: StdinOpt = False,
    generate: GenerateOpt = False,
) -> None:
    """Set a user's password; signs them out of every browser and revokes their API
    tokens."""
    from callrec.web.security import hash_password

    catalog = _open(config)
    try:
        user = _user_or_exit(catalog, name)
        password, generated = _password(password_stdin, generate)
        change = catalog.set_password(
            user.id, password_hash=hash_password(password), must_change_password=generated
        )
        _audit(
            catalog,
            "user_update",
            target=user.username,
            password_changed=True,
            tokens_revoked=list(change.tokens_revoked),
            sessions_ended=change.sessions_ended,
        )
    except CallrecError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(
        f"password of {user.username} changed; {len(change.tokens_revoked)} API token(s) "
        f"revoked, {change.sessions_ended} browser session(s) ended"
    )
    if generated:
        console.print(f"one-time password: {password}")


@users_app.command("delete")
def user_delete(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove a user and their API tokens (the audit log keeps their name)."""
    catalog = _open(config)
    try:
        user = _user_or_exit(catalog, name)
        if not yes and not typer.confirm(f"delete user {user.username}?"):
            raise typer.Exit(1)
        catalog.delete_user(user.id)
        _audit(catalog, "user_delete", target=user.username)
    except CallrecError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(f"deleted {user.username}")


@users_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(help="User name the token acts as.")],
    config: ConfigOption = None,
    label: Annotated[str, typer.Option("--name", help="What the token is for.")] = "",
    days: Annotated[
        float | None, typer.Option(help="Valid for this many days (default: no expiry).")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the user's tokens instead.")] = False,
    revoke: Annotated[int | None, typer.Option(help="Revoke the token with this id.")] = None,
) -> None:
    """Make an API token for scripts (printed once), or list / revoke a user's tokens.

    The one way, with the account page (which asks for the password), to make a token that
    never expires; `web_token_max_days`, when set, caps it."""
    from callrec.web.security import MAX_TOKEN_DAYS, new_api_token

    settings, catalog = _catalog(config)
    try:
        user = _user_or_exit(catalog, name)
        if list_:
            table = Table("id", "name", "token", "created", "last used", "expires")
            for t in catalog.list_tokens(user.id):
                table.add_row(
                    str(t.id),
                    t.name,
                    t.prefix + "…",
                    _when(t.created_at),
                    _when(t.last_used_at),
                    _when(t.expires_at),
                )
            console.print(table)
            return
        if revoke is not None:
            if not catalog.delete_token(revoke, user_id=user.id):
                err_console.print(f"[red]{user.username} has no token {revoke}[/red]")
                raise typer.Exit(1)
            _audit(catalog, "token_revoke", target=user.username, token_id=revoke)
            console.print(f"revoked token {revoke}")
            return
        if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
            err_console.print(f"[red]--days must be more than 0 and at most {MAX_TOKEN_DAYS}[/red]")
            raise typer.Exit(2)
        if user.must_change_password:
            err_console.print(
                f"[red]{user.username} still has a one-time password: no token until they "
                "choose their own (changing it revokes every token of theirs)[/red]"
            )
            raise typer.Exit(1)
        token, token_hash, prefix = new_api_token()
        now = datetime.now(UTC)
        expires = now + timedelta(days=days) if days else None
        max_days = settings.web_token_max_days
        if max_days and (expires is None or expires > now + timedelta(days=max_days)):
            expires = now + timedelta(days=max_days)
            err_console.print(f"web_token_max_days: the token expires in {max_days:g} days")
        info = catalog.create_token(
            user.id, name=label, token_hash=token_hash, prefix=prefix, expires_at=expires
        )
        _audit(
            catalog,
            "token_create",
            target=user.username,
            token_id=info.id,
            name=label,
            expires_at=expires.isoformat() if expires else None,
        )
    except CallrecError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    # The token alone on stdout, so `TOKEN=$(callrec user token bob)` works.
    print(token, flush=True)
    err_console.print(f"token {info.id} for {user.username}; it is not shown again")


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""
