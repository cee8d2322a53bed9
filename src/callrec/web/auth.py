"""Who is asking: the per-app context, principals, sign-in cookies, CSRF and audit helpers.

A request is authenticated by an API token (``Authorization: Bearer crt_...``) or by the
session cookie a browser got at sign-in. Requests that change something with the cookie must
carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``); token
requests need none (a browser never adds that header on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeVar

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from callrec.catalog import Catalog, NewAuditEntry, Scope, UserInfo
from callrec.config import Settings
from callrec.engine import CatalogWriter, LiveView
from callrec.exceptions import CatalogError
from callrec.web.health import Episode, HealthCheck
from callrec.web.listen import ListenHub
from callrec.web.live import LiveHub
from callrec.web.media import PeaksCache
from callrec.web.metrics import WebMetrics
from callrec.web.security import LoginThrottle, digest, same

if TYPE_CHECKING:
    from callrec.usb.importer import Importer

SESSION_COOKIE: Final = "callrec_session"
#: Double-submit cookie protecting the sign-in form, which comes before any session.
LOGIN_CSRF_COOKIE: Final = "callrec_login_csrf"
CSRF_HEADER: Final = "x-csrf-token"

P = ParamSpec("P")
T = TypeVar("T")


class Touches:
    """The "last used" notes of API tokens and browser sessions: queued on the catalogue
    writer without waiting, at most one per credential at a time (a slow or hung catalogue
    must not collect one per request), their failures logged once per episode (a read-only
    catalogue must not write a line per request)."""

    def __init__(self, writer: CatalogWriter) -> None:
        self.writer = writer
        self._pending: set[str] = set()
        self._episode = Episode("web: cannot note when tokens and sessions were last used")

    def submit(self, key: str, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        loop = asyncio.get_running_loop()

        def touch() -> None:  # on the catalogue writer's thread
            failure: CatalogError | None = None
            try:
                fn(*args, **kwargs)
            except CatalogError as exc:
                failure = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                loop.call_soon_threadsafe(self._done, key, failure)

        self.writer.submit(touch)

    def _done(self, key: str, failure: CatalogError | None) -> None:
        self._pending.discard(key)
        if failure is None:
            self._episode.ok()
        else:
            self._episode.failed(failure)


@dataclass(slots=True)
class WebContext:
    """Everything the routes share; one per app, at ``app.state.ctx``."""

    settings: Settings
    #: Read here (any thread); written only through ``writer``.
    catalog: Catalog
    writer: CatalogWriter
    #: The recordings in progress; None when the app runs without a recording engine.
    recording: LiveView | None
    #: Imports uploaded phone-local files (through the recording engine), when there is one.
    importer: Importer | None
    root: Path
    live: LiveHub
    #: Live listening: the growing WAV files of the calls being recorded, for WebSockets.
    listen: ListenHub
    metrics: WebMetrics
    #: Looks at the server's parts for /health and /metrics, never through ``writer``.
    health: HealthCheck
    touches: Touches
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    peaks: PeaksCache = field(default_factory=PeaksCache)

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (blocking) catalogue read, or other blocking work, on a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    async def write(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a catalogue write on the catalogue writer, the one thread that writes."""
        return await self.writer.run(fn, *args, **kwargs)

    def session_lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.web_session_hours)


def ctx_of(request: HTTPConnection) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


@dataclass(frozen=True, slots=True)
class Principal:
    user: UserInfo
    via: Literal["session", "token"]
    #: The session's CSRF token (cookie sign-ins only).
    csrf: str = ""
    #: Digest of the session cookie (cookie sign-ins only).
    session_hash: str = ""

    @property
    def scope(self) -> Scope | None:
        """None for an unrestricted user, so queries add no filter."""
        scope = self.user.scope
        return None if scope.unrestricted else scope

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


class SignInRequired(Exception):
    """No valid credentials: 401 for the API, a redirect to the sign-in page for pages."""


class Forbidden(Exception):
    """Signed in, but not allowed (role, CSRF)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def client_address(request: HTTPConnection) -> str:
    ctx = ctx_of(request)
    if ctx.settings.web_trust_proxy:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else ""


def is_https(request: HTTPConnection) -> bool:
    ctx = ctx_of(request)
    if ctx.settings.web_trust_proxy and request.headers.get("x-forwarded-proto") == "https":
        return True
    return request.url.scheme == "https"


async def optional_principal(request: HTTPConnection) -> Principal | None:
    """The caller, if any credentials check out; memoised on the request (or WebSocket)."""
    if hasattr(request.state, "principal"):
        cached: Principal | None = request.state.principal
        return cached
    ctx = ctx_of(request)
    now = datetime.now(UTC)
    found: Principal | None = None
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token_hash = digest(credentials.strip())
        token = await ctx.db(ctx.catalog.check_token, token_hash, now)
        if token is not None:
            user, stale = token
            if stale:
                ctx.touches.submit(token_hash, ctx.catalog.touch_token, token_hash, now)
            found = Principal(user=user, via="token")
    elif cookie := request.cookies.get(SESSION_COOKIE):
        session_hash = digest(cookie)
        result = await ctx.db(ctx.catalog.check_web_session, session_hash, now)
        if result is not None:
            user, csrf, stale = result
            if stale:
                ctx.touches.submit(
                    session_hash,
                    ctx.catalog.touch_web_session,
                    session_hash,
                    now,
                    extend_to=now + ctx.session_lifetime(),
                )
            found = Principal(user=user, via="session", csrf=csrf, session_hash=session_hash)
    request.state.principal = found
    return found


async def require_user(request: Request) -> Principal:
    principal = await optional_principal(request)
    if principal is None:
        raise SignInRequired()
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await require_user(request)
    if not principal.is_admin:
        raise Forbidden("this needs the admin role")
    return principal


def check_csrf(principal: Principal, supplied: str | None) -> None:
    """Cookie-authenticated changes must echo the session's CSRF token."""
    if principal.via != "session":
        return
    if not supplied or not same(supplied, principal.csrf):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")


async def api_csrf(request: Request, principal: Principal) -> None:
    check_csrf(principal, request.headers.get(CSRF_HEADER))


async def audit(
    request: HTTPConnection,
    action: str,
    principal: Principal | None,
    *,
    recording_id: int | None = None,
    username: str | None = None,
    **detail: Any,
) -> None:
    ctx = ctx_of(request)
    entry = NewAuditEntry(
        action=action,
        user_id=principal.user.id if principal else None,
        username=username if username is not None else principal.user.username if principal else "",
        recording_id=recording_id,
        client_address=client_address(request),
        detail=detail,
    )
    await ctx.write(ctx.catalog.audit, entry)


def raise_http(status: int, detail: str) -> None:
    raise HTTPException(status_code=status, detail=detail)
