"""Who is asking: the per-app context, principals, sign-in cookies, CSRF and audit helpers.

A request is authenticated by an API token (``Authorization: Bearer crt_...``) or by the
session cookie a browser got at sign-in. Requests that change something with the cookie must
carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``); token
requests need none (a browser never adds that header on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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
from callrec.storage.client import ObjectStore
from callrec.web.health import Episode, HealthCheck
from callrec.web.listen import ListenHub
from callrec.web.live import LiveHub
from callrec.web.locate import MediaLocator
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
    #: Where a recording's audio is read from (:mod:`callrec.web.locate`).
    media: MediaLocator
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    peaks: PeaksCache = field(default_factory=PeaksCache)
    #: The object store (``storage_url``): the audio of recordings whose local copy is gone
    #: is read from it (issue 17). None without one.
    store: ObjectStore | None = None

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
    #: Digest of the API token (token requests only).
    token_hash: str = ""
    #: When the API token expires; None: never (or not a token).
    token_expires_at: datetime | None = None

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


class PasswordChangeRequired(Forbidden):
    """Signed in with a one-time password not yet replaced: 403 for the API, a redirect to
    the account page for pages."""

    def __init__(self) -> None:
        super().__init__(
            "this account still has its one-time password: choose your own on the account "
            "page (/account) first; until then nothing else is allowed, API tokens included"
        )


class Throttled(Exception):
    """Too many failed password checks: 429 with ``Retry-After``."""

    def __init__(self, wait: float) -> None:
        self.retry_after = retry_after(wait)
        super().__init__(
            f"too many failed password attempts; try again in {wait_text(self.retry_after)}"
        )
        self.detail = str(self)


def retry_after(wait: float) -> int:
    """A ``Retry-After`` in whole seconds, at least 1."""
    return max(1, math.ceil(wait))


def wait_text(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


#: All a user signed in with a one-time password may reach: the account page, its password
#: form, signing out, and ``/api/v1/me`` (which says that a new password is due). A
#: one-time password was seen by whoever set it (an admin, a terminal, a log), so it must
#: not open anything else, nor mint a token that outlives it.
FIRST_STEPS: Final = frozenset({"/account", "/account/password", "/logout", "/api/v1/me"})


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
    found: Principal | None = None
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        found = await _check(ctx, "token", digest(credentials.strip()), touch=True)
    elif cookie := request.cookies.get(SESSION_COOKIE):
        found = await _check(ctx, "session", digest(cookie), touch=True)
    request.state.principal = found
    return found


async def _check(
    ctx: WebContext, via: Literal["session", "token"], secret_hash: str, *, touch: bool
) -> Principal | None:
    """The principal a token's or session cookie's digest stands for now, or None; with
    ``touch``, its "last used" note is queued when due (and a session's expiry slides)."""
    now = datetime.now(UTC)
    if via == "token":
        token = await ctx.db(ctx.catalog.check_token, secret_hash, now)
        if token is None:
            return None
        user, stale, expires = token
        if stale and touch:
            ctx.touches.submit(secret_hash, ctx.catalog.touch_token, secret_hash, now)
        return Principal(user=user, via="token", token_hash=secret_hash, token_expires_at=expires)
    result = await ctx.db(ctx.catalog.check_web_session, secret_hash, now)
    if result is None:
        return None
    user, csrf, stale = result
    if stale and touch:
        ctx.touches.submit(
            secret_hash,
            ctx.catalog.touch_web_session,
            secret_hash,
            now,
            extend_to=now + ctx.session_lifetime(),
        )
    return Principal(user=user, via="session", csrf=csrf, session_hash=secret_hash)


async def revalidate(ctx: WebContext, principal: Principal) -> Principal | None:
    """The caller as the catalogue has them now, or None when their credentials no longer
    hold: token revoked or expired, session signed out or expired, user deleted, or a
    one-time password set since. For what outlives its request (the live feed). Nothing is
    touched: watching does not extend a session. Raises :class:`CatalogError` when the
    catalogue cannot say (the caller must then stop too: fail closed)."""
    secret_hash = principal.token_hash if principal.via == "token" else principal.session_hash
    now = await _check(ctx, principal.via, secret_hash, touch=False)
    if now is None or now.user.must_change_password:
        return None
    return now


async def require_user(request: Request) -> Principal:
    """A signed-in user who may act: one with a one-time password reaches only
    :data:`FIRST_STEPS`."""
    principal = await optional_principal(request)
    if principal is None:
        raise SignInRequired()
    if principal.user.must_change_password and request.url.path not in FIRST_STEPS:
        raise PasswordChangeRequired()
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
