"""``callrec verify``: the recordings' hash chain, its signatures and the files checked.

Exit status 0 when everything checks out, 1 on any finding (each printed: altered, missing,
truncated, swapped, unexpected, chain, signature, catalogue, unchained; docs/integrity.md),
2 on a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from callrec.cli import ConfigOption, _catalog, _settings, app, console, err_console
from callrec.config import Settings
from callrec.integrity.keys import installation_public_key, key_id, load_public_pem, public_pem


def _installation_key(settings: Settings) -> Ed25519PublicKey | None:
    return installation_public_key(settings.recordings_dir, settings.integrity_key_file)


@app.command("verify")
def verify(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Recording ids to check.", show_default=False)
    ] = None,
    all_: Annotated[
        bool,
        typer.Option("--all", help="Check every recording and look for WAV files no entry names."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="The public key (PEM) to check signatures with, e.g. a copy kept elsewhere. "
            "Default: the installation's.",
            show_default=False,
        ),
    ] = None,
    show_public_key: Annotated[
        bool,
        typer.Option("--public-key", help="Print the installation's public key (PEM) and exit."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Re-hash the recordings' files and check the hash chain and its signatures.

    Names every altered, missing, truncated, swapped or unexpected file, and any entry or
    signature that does not check out. Exit status 1 on any finding. With storage_url, a
    file whose local copy is gone is re-hashed as the object store returns it (its result
    says so)."""
    if show_public_key:
        settings, _ = _settings(config)
        installed = _installation_key(settings)
        if installed is None:
            err_console.print("[red]error:[/red] no signing key yet: start callrec serve once")
            raise typer.Exit(2)
        print(public_pem(installed), end="")
        return
    if not all_ and not ids:
        err_console.print("[red]error:[/red] give recording ids, or --all")
        raise typer.Exit(2)
    if all_ and ids:
        err_console.print("[red]error:[/red] give recording ids or --all, not both")
        raise typer.Exit(2)
    settings, catalog = _catalog(config)
    public: Ed25519PublicKey | None
    if key is not None:
        try:
            public = load_public_pem(key.read_bytes())
        except OSError as exc:
            err_console.print(f"[red]error:[/red] cannot read {key}: {exc.strerror}")
            raise typer.Exit(2) from exc
    else:
        public = _installation_key(settings)
    from callrec.integrity.verify import verify as run_verify
    from callrec.storage.client import store_from
    from callrec.storage.files import remote_hasher

    store = store_from(settings)

    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=as_json,
        transient=True,
    )
    try:
        with progress:
            task = progress.add_task("verify", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = run_verify(
                catalog,
                settings.recordings_dir,
                public,
                ids=None if all_ else ids,
                progress=advance,
                # A file whose local copy is gone is checked in the object store.
                remote=None if store is None else remote_hasher(catalog, store),
            )
    finally:
        catalog.close()
    if as_json:
        data = report.as_dict()
        data["key_id"] = None if public is None else key_id(public)
        print(json.dumps(data, indent=2))
    else:
        signed = (
            f"signed up to entry #{report.signed_seq} at {report.signed_at:%Y-%m-%d %H:%M:%S %Z}"
            if report.signed_seq is not None and report.signed_at is not None
            else "no signature checked"
        )
        console.print(
            f"{report.entries} chain entries (head #{report.head_seq}), {report.signatures} "
            f"signatures, {signed}; {report.files} recordings, "
            f"{report.bytes / 1e6:.1f} MB hashed",
            highlight=False,
        )
        if public is None:
            err_console.print(
                "[yellow]warning:[/yellow] no public key: signatures were not checked (--key)"
            )
        for finding in report.findings:
            console.print(finding.line(), highlight=False, markup=False)
        console.print(
            "all verified" if report.ok else f"{len(report.findings)} findings", highlight=False
        )
    if not report.ok:
        raise typer.Exit(1)
