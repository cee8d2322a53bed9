"""Retention, disk quota and legal hold: the file side of deleting recordings (issue 16, R).

The catalogue decides what may go and keeps the record (:mod:`callrec.catalog.retirement`,
:mod:`callrec.catalog.holds`); this package removes the files, in the crash-safe order, and
drives the sweeps:

* :func:`sweep` deletes what the retention policy (or ``--before``) expires, and finishes
  what an earlier delete left half done (:func:`finish_pending`);
* :func:`quota_sweep` deletes the oldest recordings while the disk quota is exceeded;
* :class:`~callrec.retention.task.RetentionTask` runs both inside ``serve`` (daily, and every
  few minutes); the job runner takes them over later: they are plain, idempotent functions.

Every delete path (the web, the API, the CLI, these sweeps) refuses a held recording in the
catalogue's one check. See docs/retention.md.
"""

from callrec.retention.files import recording_paths, remove_files
from callrec.retention.sweep import (
    QuotaResult,
    SweepResult,
    finish_pending,
    policy_of,
    quota_limit,
    quota_sweep,
    sweep,
)

__all__ = [
    "QuotaResult",
    "SweepResult",
    "finish_pending",
    "policy_of",
    "quota_limit",
    "quota_sweep",
    "recording_paths",
    "remove_files",
    "sweep",
]
