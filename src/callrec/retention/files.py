"""The files of a deleted recording, and removing them.

A recording is its WAV, its companions (the SIP mono mix), an import's original and the
sidecar ``<file>.json`` (which must go too: left behind, it would bring the recording back in
a catalogue rebuild). The tombstone lists all but the sidecar, whose name is the engine's
(:func:`callrec.engine.journalfile.sidecar_path`).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from callrec.catalog import TombstoneInfo
from callrec.engine.journalfile import SIDECAR_SUFFIX

logger = logging.getLogger(__name__)


def _absolute(root: Path) -> str:
    """``os.path.abspath(root)``; of an absolute root once (a sweep removes a million
    recordings' files under the same one); a relative one depends on the working directory."""
    return _normalised(root) if root.is_absolute() else os.path.abspath(root)


@functools.lru_cache(maxsize=16)
def _normalised(root: Path) -> str:
    return os.path.abspath(root)


def recording_paths(root: Path, tomb: TombstoneInfo) -> list[str]:
    """Every file of the deleted recording that lies under ``root`` (as absolute path
    strings), the sidecar last."""
    base = _absolute(root)
    main = os.path.normpath(os.path.join(base, tomb.path))
    paths = [main, *(os.path.normpath(os.path.join(base, f)) for f in tomb.files)]
    paths.append(main + SIDECAR_SUFFIX)  # sidecar_path(), on the text
    # A path in the catalogue is ours to remove only inside the recordings directory
    # (checked on the text: a sweep may remove a million, and resolving each costs more
    # than the removal; the directory's own symbolic links are the administrator's).
    return [p for p in paths if p.startswith(base + os.sep)]


def remove_files(root: Path, tomb: TombstoneInfo) -> list[str]:
    """Remove the recording's files; returns those removed (relative to ``root``). A file
    already gone is no error (a delete finished twice, or removed by hand); any other failure
    is raised, and the tombstone stays pending for the next sweep."""
    removed: list[str] = []
    cut = len(_absolute(root)) + 1
    for path in recording_paths(root, tomb):
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed.append(path[cut:])
    return removed
