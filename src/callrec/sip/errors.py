"""The SIP side's own exception, in the tree of :mod:`callrec.exceptions`::

    RemoteProtocolError
    └── SipProtocolError   a SIP message we refuse; carries the status we answer with

A request that raises it while being parsed or examined is answered with ``status`` (400 for
a malformed message, 505 for another SIP version, ...) and ``str(exc)`` as the reason phrase
detail; a malformed response is dropped. Any other exception from the SIP cores is a bug.
"""

from __future__ import annotations

from callrec.exceptions import RemoteProtocolError


class SipProtocolError(RemoteProtocolError):
    """A SIP message that cannot be accepted. ``status`` is the response code to answer."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message, reason="bad_request")
        self.status = status
