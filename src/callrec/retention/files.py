"""The files of a deleted recording, and removing them.

A recording is its WAV, its companions (the SIP mono mix), an import's original and the
sidecar ``<file>.json`` (which must go too: left behind, it would bring the recording back in
a catalogue rebuild). The tombstone lists all but the sidecar, whose name is the engine's
(:func:`callrec.engine.journalfile.sidecar_path`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from callrec.catalog import TombstoneInfo
from callrec.engine.journalfile import sidecar_path

logger = logging.getLogger(__name__)


def recording_paths(root: Path, tomb: TombstoneInfo) -> list[Path]:
    """Every file of the deleted recording that lies under ``root``, the sidecar last."""
    base = root.resolve()
    main = base / tomb.path
    paths = [main, *(base / f for f in tomb.files), sidecar_path(main)]
    # A path in the catalogue is ours to remove only inside the recordings directory.
    return [p for p in paths if p.resolve().is_relative_to(base)]


def remove_files(root: Path, tomb: TombstoneInfo) -> list[str]:
    """Remove the recording's files; returns those removed (relative to ``root``). A file
    already gone is no error (a delete finished twice, or removed by hand); any other failure
    is raised, and the tombstone stays pending for the next sweep."""
    removed: list[str] = []
    base = root.resolve()
    for path in recording_paths(root, tomb):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(str(path.relative_to(base)))
    return removed
