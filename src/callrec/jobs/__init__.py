"""Work done after a call, durably: the job runner and what runs on it (issue 16 part 3).

* :mod:`callrec.jobs.runner`: :class:`JobRunner`, :class:`JobKind`, :class:`RetryPolicy`:
  claim due jobs from the catalogue (``catalog/jobs.py``), run them, retry them with back-off.
* :mod:`callrec.jobs.completion`: ``recording.completed``, enqueued by an engine observer.
* :mod:`callrec.jobs.webhooks`: signed deliveries to ``webhook_url``, and :func:`emit` for the
  other events (``recording.deleted``, ``recording.held``).
* :mod:`callrec.jobs.command`: ``on_complete_command``.

Only the composition root (``service/``) and the command line (``cli/``) build a runner; the
package uses the catalogue and the engine's observers, never a front end.
"""

from callrec.jobs.runner import JobDeferred, JobFailed, JobKind, JobRunner, RetryPolicy

__all__ = ["JobDeferred", "JobFailed", "JobKind", "JobRunner", "RetryPolicy"]
