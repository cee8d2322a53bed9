"""The REST API under ``/api/v1`` (moving to one module per group of routes)."""

from callrec.web.api.accounts import (
    audit_rows,
    bearer,
    bulk_response,
    change_tag,
    create_note,
    drop_token,
    issue_token,
    public,
    remove_note,
    remove_recording,
    router,
)

__all__ = [
    "audit_rows",
    "bearer",
    "bulk_response",
    "change_tag",
    "create_note",
    "drop_token",
    "issue_token",
    "public",
    "remove_note",
    "remove_recording",
    "router",
]
