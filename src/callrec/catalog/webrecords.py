"""Values of the web front end that cross the catalogue's boundary: plain, frozen, validated.

:class:`SearchQuery` and :class:`Scope` go in; :class:`UserInfo`, :class:`TokenInfo`,
:class:`AuditInfo`, :class:`NoteInfo` and :class:`SearchPage` come out. Like
:mod:`callrec.catalog.records`, a bad value is refused with a :class:`CatalogError` naming the
field before any SQL runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from callrec.catalog.records import (
    DIRECTIONS,
    SOURCES,
    STATUSES,
    RecordingInfo,
    require_aware,
    require_choice,
)
from callrec.exceptions import CatalogError

ROLE_ADMIN: Final = "admin"
ROLE_LISTENER: Final = "listener"
#: ``admin`` may do everything; ``listener`` may search, play and download.
ROLES: Final = frozenset({ROLE_ADMIN, ROLE_LISTENER})

#: What the audit log records. Sign-ins (and their failures), every access to audio, every
#: change to a recording's notes and tags, deletions, changes to users and tokens, and
#: ``denied``: a restricted user asked for a recording that exists outside their restriction.
AUDIT_ACTIONS: Final = frozenset(
    {
        "sign_in",
        "sign_in_failed",
        "sign_out",
        "play",
        "download",
        "bulk_download",
        "listen_live",
        "note_add",
        "note_delete",
        "tag_add",
        "tag_remove",
        "delete",
        "import",
        "user_add",
        "user_update",
        "user_delete",
        "password_change",
        "token_create",
        "token_revoke",
        "audit_export",
        "denied",
        "export",
        "bulk_delete",
        "job_retry",  # issue 16 part 3
        "transcript",  # issue 18: a transcript read (JSON, WebVTT, SRT)
        "transcribe",  # issue 18: a transcription asked for
        "verify",  # tamper evidence: a recording's file re-hashed (issue 16 part 5)
        # issue 16 R: legal holds set and released (deletes by retention and quota are
        # ``delete`` by ``retention`` / ``quota``)
        "hold_add",
        "hold_remove",
    }
)

#: Orders a search can return; ``-`` means descending. Ties are broken by id, same direction.
SORTS: Final = frozenset(
    {
        "-start_time",
        "start_time",
        "-duration",
        "duration",
        "local_number",
        "-local_number",
        "remote_number",
        "-remote_number",
    }
)
DEFAULT_SORT: Final = "-start_time"
#: Most rows one search page returns.
MAX_PAGE_SIZE: Final = 500
#: Above this many matches a search says "1,000+" instead of counting on: counting every
#: match of a broad filter would read most of a large catalogue on every page.
COUNT_CAP: Final = 1_000

#: The largest id a row can have (a signed 64-bit integer in every database we run on);
#: a larger one in a request is a bad request, never a query.
MAX_ID: Final = 2**63 - 1
#: The last page number a search takes: its row offset still fits a 64-bit integer.
MAX_PAGE: Final = MAX_ID // MAX_PAGE_SIZE

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
#: An extension or phone number in a restriction: digits, optionally after a leading +.
_EXTENSION = re.compile(r"\+?[0-9]{1,32}")
#: A device in a restriction: its MAC, 12 hex digits (':', '-' or '.' between them allowed).
_MAC = re.compile(r"[0-9a-f]{12}")
_TAG = re.compile(r"[^\W_][\w-]{0,31}")
MAX_NOTE_LENGTH: Final = 10_000
MAX_QUERY_LENGTH: Final = 200


def normalise_username(value: str) -> str:
    """Lower-cased ``value``, refused unless it is 1-64 of ``a-z 0-9 . _ @ -``."""
    name = value.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise CatalogError(
            f"user name {value!r} must be 1-64 characters of a-z, 0-9, '.', '_', '@', '-' "
            "starting with a letter or digit"
        )
    return name


def normalise_tag(value: str) -> str:
    """Lower-cased ``value``, refused unless it is one word of 1-32 letters, digits, - or _."""
    tag = value.strip().lower()
    if not _TAG.fullmatch(tag):
        raise CatalogError(
            f"tag {value!r} must be one word of 1-32 letters, digits, '-' or '_' "
            "starting with a letter or digit"
        )
    return tag


def check_extensions(values: Any) -> tuple[str, ...]:
    """A restriction's extensions as given by a person (page, API, CLI): each an extension or
    phone number, digits with an optional leading ``+``; matched exactly. Refuses the whole
    list, naming every bad entry, rather than store a restriction that matches nothing."""
    entries = _clean_list("extensions", values)
    bad = [v for v in entries if not _EXTENSION.fullmatch(v)]
    if bad:
        verb = "is not an extension" if len(bad) == 1 else "are not extensions"
        raise CatalogError(
            f"extensions: {_listed(bad)} {verb} (digits, optionally after a leading +; "
            "separate several with spaces or commas)"
        )
    return entries


def check_devices(values: Any) -> tuple[str, ...]:
    """A restriction's devices as given by a person: each a MAC, 12 hex digits in any case,
    with ':', '-' or '.' between them or not; stored as 12 lower-case digits."""
    entries = _clean_list("devices", values)
    macs = {v: v.lower().replace(":", "").replace("-", "").replace(".", "") for v in entries}
    bad = [v for v, mac in macs.items() if not _MAC.fullmatch(mac)]
    if bad:
        raise CatalogError(
            f"devices: {_listed(bad)} {'is not a MAC' if len(bad) == 1 else 'are not MACs'}"
            " (12 hex digits, e.g. 0c383e0e709a or 0C:38:3E:0E:70:9A)"
        )
    return tuple(sorted(set(macs.values())))


def _listed(values: list[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _clean_list(name: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise CatalogError(f"{name} must be a list of strings, got {values!r}")
    cleaned = tuple(sorted({v.strip() for v in values if v.strip()}))
    if any(len(v) > 64 for v in cleaned):
        raise CatalogError(f"{name}: each entry must be at most 64 characters")
    return cleaned


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """Which recordings a user may see: all, or only calls of some extensions / devices.

    A recording is visible when its local *or* remote number is one of ``extensions``, or its
    device is one of ``devices``. Both empty: everything is visible.
    """

    extensions: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", _clean_list("extensions", self.extensions))
        object.__setattr__(
            self, "devices", tuple(d.lower() for d in _clean_list("devices", self.devices))
        )

    @property
    def unrestricted(self) -> bool:
        return not self.extensions and not self.devices

    def allows(self, *, local_number: str, remote_number: str, device: str) -> bool:
        """The same test as the SQL filter, for things that are not rows (live sessions)."""
        if self.unrestricted:
            return True
        return (
            local_number in self.extensions
            or remote_number in self.extensions
            or device.lower() in self.devices
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInfo:
    """A user, without the password hash."""

    id: int
    username: str
    role: str
    extensions: tuple[str, ...]
    devices: tuple[str, ...]
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def scope(self) -> Scope:
        return Scope(extensions=self.extensions, devices=self.devices)


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """An API token, without the token (only its first characters)."""

    id: int
    user_id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordChange:
    """What a new password took with it."""

    user: UserInfo
    #: Ids of the user's API tokens, all revoked.
    tokens_revoked: tuple[int, ...]
    #: Browser sessions of the user that were ended.
    sessions_ended: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditInfo:
    id: int
    at: datetime
    user_id: int | None
    username: str
    action: str
    recording_id: int | None
    client_address: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteInfo:
    id: int
    recording_id: int
    user_id: int | None
    username: str
    text: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewAuditEntry:
    """One line for the audit log."""

    action: str
    user_id: int | None = None
    username: str = ""
    recording_id: int | None = None
    client_address: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_choice("action", self.action, AUDIT_ACTIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    """What the recordings list and ``GET /api/v1/recordings`` search for.

    ``q`` is free text: every whitespace-separated word must occur (case-insensitively, as a
    substring) in the local or remote number or name, or the device, or be said in the
    recording (a word of its transcript). ``said`` is a phrase said in it: its words one
    after another in the transcript. Times are
    ``since <= start_time < until``; durations are in seconds and inclusive. Paging is by
    ``cursor`` (opaque, from a neighbouring page's ``next_cursor`` or ``prev_cursor``; stable
    while rows are added), by ``page`` (1-based, for page links), or by ``at``: the page that
    starts at that moment in the order of ``sort`` (a time sort), from where ``cursor``s go
    on either way; one of the three.
    """

    q: str = ""
    said: str = ""
    since: datetime | None = None
    until: datetime | None = None
    direction: str | None = None
    device: str | None = None
    codec: str | None = None
    status: str | None = None
    source: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    tag: str | None = None
    #: The node that recorded it (``node_name``), exactly.
    node: str | None = None
    sort: str = DEFAULT_SORT
    limit: int = 50
    cursor: str | None = None
    page: int | None = None
    #: Start the page at this moment: newest first, the first row starts before it; oldest
    #: first, at or after it.
    at: datetime | None = None
    #: Count the matches (up to :data:`COUNT_CAP`), and the rows before this page; costs a
    #: query each.
    with_total: bool = True

    def __post_init__(self) -> None:
        if len(self.q) > MAX_QUERY_LENGTH:
            raise CatalogError(f"q must be at most {MAX_QUERY_LENGTH} characters")
        if len(self.said) > MAX_QUERY_LENGTH:
            raise CatalogError(f"said must be at most {MAX_QUERY_LENGTH} characters")
        if self.since is not None:
            require_aware("since", self.since)
        if self.until is not None:
            require_aware("until", self.until)
        if self.direction is not None:
            require_choice("direction", self.direction, DIRECTIONS)
        if self.status is not None:
            require_choice("status", self.status, STATUSES)
        if self.source is not None:
            require_choice("source", self.source, SOURCES)
        require_choice("sort", self.sort, SORTS)
        for name in ("min_duration", "max_duration"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise CatalogError(f"{name} must be >= 0, got {value}")
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise CatalogError(f"limit must be 1-{MAX_PAGE_SIZE}, got {self.limit}")
        if self.page is not None and not 1 <= self.page <= MAX_PAGE:
            raise CatalogError(f"page must be 1-{MAX_PAGE}, got {self.page}")
        if sum(v is not None for v in (self.page, self.cursor, self.at)) > 1:
            raise CatalogError("give one of cursor, page and at")
        if self.at is not None:
            require_aware("at", self.at)
            if self.sort.lstrip("-") != "start_time":
                raise CatalogError("at (jump to a date) needs a sort by start_time")
        if self.tag is not None:
            object.__setattr__(self, "tag", normalise_tag(self.tag))

    @property
    def words(self) -> list[str]:
        return self.q.split()


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchPage:
    """One page of a search."""

    items: list[RecordingInfo]
    #: Pass as ``cursor`` for the next page; None on the last page.
    next_cursor: str | None
    #: Matches in all pages, when counted; at most :data:`COUNT_CAP`.
    total: int | None
    #: False when there are more than :data:`COUNT_CAP` matches (``total`` is the cap).
    total_exact: bool
    #: Pass as ``cursor`` for the page before this one; None on the first page.
    prev_cursor: str | None = None
    #: Matches before this page's first row, when counted and at most :data:`COUNT_CAP`
    #: (with ``limit``, the page's number); None otherwise.
    offset: int | None = None
    #: Recording id -> the phrase of its transcript that matched ``q`` or ``said`` (the
    #: matched words in brackets), for the rows of this page found by what was said.
    snippets: dict[int, str] = field(default_factory=dict)
