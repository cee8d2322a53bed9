"""What the catalogue tells others inside the transaction of a change: the hook its delete and
hold paths take (``events=``) and call before they commit.

Whoever passes a hook writes its own rows in the same transaction (the webhooks' outbox,
:class:`callrec.jobs.events.WebhookEvents`), so what it queues commits, or rolls back, with
the delete or the hold: an event is never sent about a delete that did not happen, nor lost
about one that did. The catalogue knows nothing of webhooks (``catalog`` may not import
``jobs``, tools/check_imports.py); this protocol is all it sees.

Every delete goes through :func:`callrec.catalog.retirement.retire_rows`, every hold through
:meth:`callrec.catalog.holds.HoldQueries.add_hold`: the hook is called there, once per
transaction with all its recordings (a sweep's batch is thousands; the hook writes them
set-based).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from callrec.catalog.policy import HoldInfo

#: A recording as a hook is told of it: (id, uid).
Recorded = tuple[int, str | None]


class RecordingEvents(Protocol):
    """Called inside the transaction of a delete or a hold (see the module docstring)."""

    def deleted(
        self, connection: Connection, recordings: Sequence[Recorded], deleted_at: datetime
    ) -> int:
        """``recordings`` were tombstoned at ``deleted_at`` in this transaction (one tombstone
        each, with that ``deleted_at``); their rows are still there, and go before it
        commits. How many events were queued."""
        ...

    def held(self, connection: Connection, hold: HoldInfo, recordings: Sequence[Recorded]) -> int:
        """``hold`` was set in this transaction, and holds ``recordings`` that no other active
        hold held before it. How many events were queued."""
        ...
