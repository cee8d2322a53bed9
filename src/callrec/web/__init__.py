"""The web front end: REST API, server-rendered pages, metrics.

It runs inside ``callrec serve`` (see :class:`WebComponent`), on its own port, over the same
catalogue and the recording server's live sessions.
"""

from callrec.web.app import create_app
from callrec.web.component import WebComponent, ensure_first_admin

__all__ = ["WebComponent", "create_app", "ensure_first_admin"]
