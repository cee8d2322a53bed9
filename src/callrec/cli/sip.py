"""``callrec sip account add|list|policy|password|delete``: the SIP registrar's accounts.

Accounts live in the catalogue; a running ``callrec serve`` re-reads them every
``sip_account_refresh`` seconds, so changes take effect without a restart. Passwords are
stored as digest HA1 values for ``sip_realm`` (changing the realm means setting every
password again).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from callrec.cli import ConfigOption, _settings, app, console, err_console
from callrec.exceptions import CallrecError

sip_app = typer.Typer(help="The SIP side: registrar accounts.", no_args_is_help=True)
account_app = typer.Typer(
    help="SIP accounts (phones that register to callrec).", no_args_is_help=True
)
sip_app.add_typer(account_app, name="account")
app.add_typer(sip_app, name="sip")

PolicyOpt = Annotated[
    str,
    typer.Option(
        help="Recording policy: never (Record gets 403), on_demand (the Record key decides) "
        "or always (every answered call)."
    ),
]


def _store(config: Path | None) -> tuple[Any, Any, Any]:
    from callrec.catalog import Catalog, SipAccountStore

    settings, _ = _settings(config)
    catalog = Catalog(settings.database_url)
    try:
        catalog.migrate()
    except BaseException:
        catalog.close()
        raise
    return settings, catalog, SipAccountStore(catalog)


def _hashes(username: str, realm: str, password: str) -> dict[str, str]:
    from callrec.sip.auth import ha1

    return {
        "ha1_md5": ha1("MD5", username, realm, password),
        "ha1_sha256": ha1("SHA-256", username, realm, password),
    }


def _password(password: str | None, prompt: bool) -> str | None:
    if password is None and prompt:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if password is not None and not password:
        err_console.print("[red]the password must not be empty[/red]")
        raise typer.Exit(2)
    return password


@account_app.command("add")
def account_add(
    username: Annotated[str, typer.Argument(help="SIP user name (the phone's extension).")],
    password: Annotated[
        str | None,
        typer.Option(help="Digest password (asked for when omitted, unless --no-password)."),
    ] = None,
    no_password: Annotated[
        bool,
        typer.Option(
            "--no-password",
            help="Policy-only account: cannot register here (outbound-proxy mode).",
        ),
    ] = False,
    policy: PolicyOpt = "on_demand",
    display_name: Annotated[str, typer.Option(help="Name shown in recordings.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create a SIP account."""
    secret = None if no_password else _password(password, prompt=True)
    settings, catalog, store = _store(config)
    try:
        hashes = _hashes(username, settings.sip_realm, secret) if secret else {}
        info = store.add(
            username,
            realm=settings.sip_realm,
            ha1_md5=hashes.get("ha1_md5"),
            ha1_sha256=hashes.get("ha1_sha256"),
            policy=policy,
            display_name=display_name,
        )
    except CallrecError as exc:
        err_console.print(f"[red]cannot add account:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(f"SIP account {info.username} added (realm {info.realm}, policy {info.policy})")


@account_app.command("list")
def account_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the SIP accounts."""
    _, catalog, store = _store(config)
    try:
        rows = store.all()
    finally:
        catalog.close()
    if as_json:
        data = [
            {
                "username": r.username,
                "realm": r.realm,
                "policy": r.policy,
                "display_name": r.display_name,
                "has_password": r.has_password,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table("user", "display name", "policy", "realm", "password")
    for r in rows:
        table.add_row(
            r.username, r.display_name, r.policy, r.realm, "yes" if r.has_password else "no"
        )
    console.print(table)
    if not rows:
        console.print("no SIP accounts")


@account_app.command("policy")
def account_policy(
    username: Annotated[str, typer.Argument(help="SIP user name.")],
    policy: Annotated[str, typer.Argument(help="never, on_demand or always.")],
    config: ConfigOption = None,
) -> None:
    """Change an account's recording policy."""
    _, catalog, store = _store(config)
    try:
        info = store.update(username, policy=policy)
    except CallrecError as exc:
        err_console.print(f"[red]cannot change account:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(f"SIP account {info.username}: policy {info.policy}")


@account_app.command("password")
def account_password(
    username: Annotated[str, typer.Argument(help="SIP user name.")],
    password: Annotated[
        str | None, typer.Option(help="New password (asked for when omitted).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Set an account's password (for the configured sip_realm)."""
    secret = _password(password, prompt=True)
    assert secret is not None
    settings, catalog, store = _store(config)
    try:
        store.update(
            username, realm=settings.sip_realm, **_hashes(username, settings.sip_realm, secret)
        )
    except CallrecError as exc:
        err_console.print(f"[red]cannot change account:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        catalog.close()
    console.print(f"SIP account {username}: password set for realm {settings.sip_realm}")


@account_app.command("delete")
def account_delete(
    username: Annotated[str, typer.Argument(help="SIP user name.")],
    config: ConfigOption = None,
) -> None:
    """Delete a SIP account (its phones can no longer register or call)."""
    _, catalog, store = _store(config)
    try:
        deleted = store.delete(username)
    finally:
        catalog.close()
    if not deleted:
        err_console.print(f"[red]no SIP account {username}[/red]")
        raise typer.Exit(1)
    console.print(f"SIP account {username} deleted")
