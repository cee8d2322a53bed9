"""``callrec catalogue``: the catalogue rebuilt from the recordings on disk.

Every recording has a sidecar beside its file (``<file>.json``) with what its row holds, and
the journals of ended processes hold what they had not catalogued yet: together they rebuild
a lost catalogue, or complete one that missed recordings. Safe while ``callrec serve`` runs:
applying is idempotent and the recordings in progress are left alone.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from callrec.cli import ConfigOption, _catalog, app, console

catalogue_app = typer.Typer(
    help="The catalogue of recordings: rebuild it from the disk.", no_args_is_help=True
)
app.add_typer(catalogue_app, name="catalogue")


@catalogue_app.command("rebuild")
def catalogue_rebuild(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Put every recording on disk into the catalogue, and report what was found.

    From each recording's sidecar and the journals of ended processes; recordings a crash
    cut short are repaired. Recordings already catalogued are left as they are."""
    from callrec.engine.journal import replay_orphans
    from callrec.engine.journalfile import journal_dir
    from callrec.engine.rebuild import rebuild_catalogue

    settings, catalog = _catalog(config)
    root = settings.recordings_dir.resolve()
    try:
        replayed = replay_orphans(catalog, journal_dir(root), None, node=settings.node_name)
        report = rebuild_catalogue(catalog, root, settings.node_name)
    finally:
        catalog.close()
    if as_json:
        print(json.dumps({"journal_entries": replayed, **dataclasses.asdict(report)}, indent=2))
        return
    if replayed:
        console.print(f"{replayed} journal entries of ended processes replayed")
    for line in report.lines():
        console.print(line, highlight=False, markup=False)
