"""Rebuilding the catalogue from the disk alone: the recordings' sidecars.

Every recording the engine makes has a sidecar beside its file (``<file>.json``, see
:mod:`callrec.engine.journalfile`) holding the start and, once it ended, the finish the
journal gave the catalogue. Applying them again is idempotent, so a rebuild can run on an
empty catalogue (the database was lost), on a current one (nothing changes), or on one that
missed some recordings. A sidecar without a finish belongs to a recording a crash cut short:
start-up recovery repairs its file and finishes its row. A recording the archive policy
transcoded has its sidecar beside the archive (``<file>.flac.json``): the same entries, then
the switch to the archive (:mod:`callrec.engine.archive`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from callrec.catalog import Catalog
from callrec.catalog.replay import JournalEntry, JournalStart
from callrec.engine import journalfile
from callrec.engine.archive import adopt_archives, is_archive_sidecar
from callrec.engine.journal import MAX_BATCH, apply_checked
from callrec.engine.recovery import recover_unfinished

logger = logging.getLogger(__name__)

#: Most file names a report lists for one kind of problem.
REPORT_NAMES: Final = 20


@dataclass(slots=True)
class RebuildReport:
    """What a rebuild found and did."""

    sidecars: int = 0
    #: Rows the catalogue did not have before.
    added: int = 0
    #: Recordings a crash had cut short (repaired and finished by recovery).
    recovered: list[str] = field(default_factory=list)
    #: Sidecars that could not be read (path: why).
    damaged: list[str] = field(default_factory=list)
    #: WAV files that no sidecar describes (from before sidecars, or not callrec's).
    without_sidecar: list[str] = field(default_factory=list)
    #: Rows switched to the FLAC or Opus archive that replaced their WAV (issue 16 part 4).
    archived: int = 0

    def lines(self) -> list[str]:
        out = [
            f"{self.sidecars} sidecars read, {self.added} recordings added to the catalogue",
        ]
        if self.archived:
            out.append(f"{self.archived} recordings named by their archive (FLAC or Opus)")
        if self.recovered:
            out.append(f"{len(self.recovered)} recordings cut short by a crash, recovered:")
            out.extend(f"  {line}" for line in self.recovered[:REPORT_NAMES])
        if self.damaged:
            out.append(f"{len(self.damaged)} sidecars unreadable:")
            out.extend(f"  {line}" for line in self.damaged[:REPORT_NAMES])
        if self.without_sidecar:
            out.append(f"{len(self.without_sidecar)} WAV files without a sidecar (not catalogued):")
            out.extend(f"  {name}" for name in self.without_sidecar[:REPORT_NAMES])
        return out


def has_sidecars(root: Path) -> bool:
    """True when at least one sidecar is under ``root`` (stops at the first)."""
    return next(_sidecars(root), None) is not None


def rebuild_catalogue(catalog: Catalog, root: Path, node: str | None = None) -> RebuildReport:
    """Apply every sidecar under ``root`` to ``catalog`` (blocking), then recover the
    recordings cut short; see the module docstring. ``node``: the node whose disk ``root``
    is: sidecars from before nodes become its recordings, and only its open rows (and those
    of no node) are recovered (docs/scaling.md)."""
    report = RebuildReport()
    before = catalog.count_recordings()
    described: set[str] = set()
    batch: list[JournalEntry] = []
    archives: list[Path] = []
    # Recordings deleted whose files are not all gone yet (a delete that crashed half-way;
    # the next retention sweep removes them): their sidecars must not bring them back.
    deleted = catalog.pending_tombstone_paths()
    for path in _sidecars(root):
        if is_archive_sidecar(path):
            archives.append(path)  # applied once every start and finish is in
        try:
            start, finish = journalfile.read_sidecar(path)
        except ValueError as exc:
            report.damaged.append(f"{path.relative_to(root).as_posix()}: {exc}")
            continue
        if start.rec.path in deleted:
            described.add(start.rec.path)
            continue
        report.sidecars += 1
        if node is not None and start.rec.node is None:
            start = JournalStart(dataclasses.replace(start.rec, node=node))
        described.add(start.rec.path)
        for companion in start.rec.extra.get("companions", ()):
            if isinstance(companion, dict) and isinstance(companion.get("path"), str):
                described.add(companion["path"])
        batch.append(start)
        if finish is not None:
            batch.append(finish)
        if len(batch) >= MAX_BATCH:
            apply_checked(catalog, batch)
            batch = []
    if batch:
        apply_checked(catalog, batch)
    report.archived = adopt_archives(catalog, archives)
    report.added = catalog.count_recordings() - before
    report.recovered = recover_unfinished(catalog, root, node=node)
    for wav in _files(root, ".wav"):
        relative = wav.relative_to(root).as_posix()
        if relative not in described:
            report.without_sidecar.append(relative)
    for line in report.lines():
        logger.info("catalogue rebuild: %s", line)
    return report


def _files(root: Path, suffix: str) -> Iterator[Path]:
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != journalfile.STATE_DIR)
        for name in sorted(names):
            if name.endswith(suffix):
                yield Path(directory, name)


def _sidecars(root: Path) -> Iterator[Path]:
    """Every recording's sidecar: of its WAV, or of the archive that replaced it."""
    suffixes = tuple(s + journalfile.SIDECAR_SUFFIX for s in (".wav", ".flac", ".opus"))
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != journalfile.STATE_DIR)
        for name in sorted(names):
            if name.endswith(suffixes):
                yield Path(directory, name)
