"""The web front end: REST API, server-rendered pages, metrics.

It runs inside ``callrec serve`` (see :class:`WebServer`), on its own port, over the same
catalogue (written through the catalogue writer) and the recording engine's live view.
"""

from callrec.web.app import create_app
from callrec.web.server import WebServer, ensure_first_admin

__all__ = ["WebServer", "create_app", "ensure_first_admin"]
