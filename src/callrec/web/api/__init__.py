"""The REST API under ``/api/v1``; its OpenAPI description is served at ``/api/openapi.json``
and rendered at ``/api/docs``.

Every route but ``/health`` needs a user: an API token (``Authorization: Bearer crt_...``,
made with ``callrec user token`` or on the account page) or a browser session (then changes
need the ``X-CSRF-Token`` header).

One module per group of routes, each with its router, included by
:func:`callrec.web.app.create_app` in this order: :mod:`~callrec.web.api.status`,
:mod:`~callrec.web.api.recordings`, :mod:`~callrec.web.api.notes`,
:mod:`~callrec.web.api.live`, :mod:`~callrec.web.api.accounts`. This module holds what they
share: the bearer scheme and the caller's dependencies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPBearer

from callrec.web.auth import Principal, require_admin, require_user

bearer = HTTPBearer(auto_error=False, description="An API token: `Bearer crt_...`")

User = Annotated[Principal, Depends(require_user)]
Admin = Annotated[Principal, Depends(require_admin)]

__all__ = ["Admin", "User", "bearer"]
