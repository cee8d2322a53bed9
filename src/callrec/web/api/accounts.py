"""Users (admin), the caller's API tokens, and the audit log (admin)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from callrec.catalog import AUDIT_ACTIONS, AuditInfo, PasswordChange, TokenInfo, UserInfo
from callrec.exceptions import CatalogError
from callrec.spreadsheet import SafeWriter
from callrec.web.api import Admin, User, bearer
from callrec.web.auth import (
    Forbidden,
    Principal,
    Throttled,
    api_csrf,
    audit,
    client_address,
    ctx_of,
)
from callrec.web.ids import ID_RANGE, Id, parse_id
from callrec.web.recordings import BadRequest, content_disposition, parse_moment, time_zone
from callrec.web.security import (
    MAX_TOKEN_DAYS,
    PasswordPolicyError,
    hash_password,
    new_api_token,
    verify_password,
)

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer)])


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    extensions: list[str]
    devices: list[str]
    must_change_password: bool
    created_at: datetime
    last_login_at: datetime | None


class UserIn(BaseModel):
    username: str
    password: str
    role: Literal["admin", "listener"] = "listener"
    extensions: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)


class UserPatch(BaseModel):
    role: Literal["admin", "listener"] | None = None
    extensions: list[str] | None = None
    devices: list[str] | None = None
    password: str | None = None


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=100)
    expires_in_days: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKEN_DAYS,
        description="Days until it expires; cut to the calling token's own expiry and to "
        "`web_token_max_days`. Empty: never, which needs a browser session and `password`.",
    )
    password: str | None = Field(
        default=None,
        max_length=1024,
        description="The caller's password: needed (with a browser session, never a token) "
        "for a token that never expires.",
    )


class TokenOut(BaseModel):
    id: int
    user_id: Id
    username: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown this once; only its SHA-256 is stored.")


class AuditOut(BaseModel):
    id: int
    at: datetime
    user_id: Id | None
    username: str
    action: str
    recording_id: int | None
    client_address: str
    detail: dict[str, Any]


def user_out(user: UserInfo) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "extensions": list(user.extensions),
        "devices": list(user.devices),
        "must_change_password": user.must_change_password,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
    }


def token_out(token: TokenInfo) -> dict[str, Any]:
    return {
        "id": token.id,
        "user_id": token.user_id,
        "username": token.username,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "expires_at": token.expires_at,
    }


def audit_out(entry: AuditInfo) -> dict[str, Any]:
    return dataclasses.asdict(entry)  # every field of an audit row is for its readers


# -- users and tokens ----------------------------------------------------------------------


@router.get("/users", response_model=list[UserOut], tags=["users"])
async def list_users(request: Request, principal: Admin) -> list[dict[str, Any]]:
    ctx = ctx_of(request)
    return [user_out(u) for u in await ctx.db(ctx.catalog.list_users)]


@router.post("/users", response_model=UserOut, status_code=201, tags=["users"])
async def create_user(request: Request, principal: Admin, body: UserIn) -> dict[str, Any]:
    """Add a user (admin). Audited as `user_add`."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        password_hash = await ctx.db(hash_password, body.password)
        user = await ctx.write(
            ctx.catalog.create_user,
            body.username,
            password_hash=password_hash,
            role=body.role,
            extensions=body.extensions,
            devices=body.devices,
        )
    except (CatalogError, PasswordPolicyError) as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "user_add", principal, target=user.username, role=user.role)
    return user_out(user)


@router.patch("/users/{user_id:int}", response_model=UserOut, tags=["users"])
async def update_user(
    request: Request, principal: Admin, user_id: Id, body: UserPatch
) -> dict[str, Any]:
    """Change a user's role, restrictions or password (admin). Audited. A new password
    revokes every API token of the user and ends their browser sessions."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        password_hash = None
        if body.password is not None:
            password_hash = await ctx.db(hash_password, body.password)
        user = await ctx.write(
            ctx.catalog.update_user,
            user_id,
            role=body.role,
            extensions=body.extensions,
            devices=body.devices,
        )
        change = None
        if password_hash is not None:
            change = await ctx.write(
                ctx.catalog.set_password,
                user_id,
                password_hash=password_hash,
                must_change_password=user.must_change_password,
                keep_session=principal.session_hash if user.id == principal.user.id else None,
            )
            user = change.user
    except (CatalogError, PasswordPolicyError) as exc:
        raise BadRequest(str(exc)) from exc
    changed = body.model_dump(exclude_none=True, exclude={"password", "extensions", "devices"})
    if body.extensions is not None:
        changed["extensions"] = list(user.extensions)
    if body.devices is not None:
        changed["devices"] = list(user.devices)
    await audit(
        request,
        "user_update",
        principal,
        target=user.username,
        password_changed=change is not None,
        **changed,
        **(password_effects(change) if change is not None else {}),
    )
    return user_out(user)


def password_effects(change: PasswordChange) -> dict[str, Any]:
    """What a new password took with it, for its audit entry."""
    return {
        "tokens_revoked": list(change.tokens_revoked),
        "sessions_ended": change.sessions_ended,
    }


@router.delete("/users/{user_id:int}", status_code=204, tags=["users"])
async def delete_user(request: Request, principal: Admin, user_id: Id) -> Response:
    """Remove a user and their tokens (admin); the audit log keeps their name."""
    await api_csrf(request, principal)
    ctx = ctx_of(request)
    try:
        user = await ctx.write(ctx.catalog.delete_user, user_id)
    except CatalogError as exc:
        raise BadRequest(str(exc)) from exc
    await audit(request, "user_delete", principal, target=user.username)
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenOut], tags=["users"])
async def list_tokens(request: Request, principal: User) -> list[dict[str, Any]]:
    """The caller's API tokens (an admin sees everyone's)."""
    ctx = ctx_of(request)
    owner = None if principal.is_admin else principal.user.id
    return [token_out(t) for t in await ctx.db(ctx.catalog.list_tokens, owner)]


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    tags=["users"],
    responses={403: {"description": "A token that never expires, asked without a password."}},
)
async def create_token(request: Request, principal: User, body: TokenIn) -> dict[str, Any]:
    """A new API token for the caller; the response is the only time it is shown.

    A token made with a token never outlives it: its expiry is cut to the calling token's,
    and a calling token that never expires can only make tokens that do. A token that never
    expires is made only in a browser session that re-enters the password (`password`), or
    with `callrec user token`. `web_token_max_days`, when set, caps every token. Audited as
    `token_create` with the expiry given."""
    await api_csrf(request, principal)
    info, token = await issue_token(
        request, principal, body.name, body.expires_in_days, password=body.password
    )
    return {**token_out(info), "token": token}


async def issue_token(
    request: Request,
    principal: Principal,
    name: str,
    days: float | None,
    *,
    password: str | None = None,
) -> tuple[TokenInfo, str]:
    ctx = ctx_of(request)
    now = datetime.now(UTC)
    expires, capped_by = token_expiry(
        now,
        days=days,
        max_days=ctx.settings.web_token_max_days,
        minting_token_expires=principal.token_expires_at if principal.via == "token" else None,
    )
    if expires is None:
        if principal.via == "token":
            raise Forbidden(
                "a token cannot make a token that never expires: give expires_in_days, or "
                "make it on the account page (with your password) or with `callrec user token`"
            )
        await confirm_password(request, principal, password)
    token, token_hash, prefix = new_api_token()
    info = await ctx.write(
        ctx.catalog.create_token,
        principal.user.id,
        name=name,
        token_hash=token_hash,
        prefix=prefix,
        expires_at=expires,
    )
    await audit(
        request,
        "token_create",
        principal,
        token_id=info.id,
        name=info.name,
        expires_at=expires.isoformat() if expires else None,
        capped_by=capped_by,
    )
    return info, token


def token_expiry(
    now: datetime,
    *,
    days: float | None,
    max_days: float,
    minting_token_expires: datetime | None,
) -> tuple[datetime | None, str | None]:
    """When a new token expires (None: never), and what cut it (``web_token_max_days`` or
    ``minting_token``), if anything did."""
    expires = now + timedelta(days=days) if days else None
    limits = []
    if max_days:
        limits.append((now + timedelta(days=max_days), "web_token_max_days"))
    if minting_token_expires is not None:
        limits.append((minting_token_expires, "minting_token"))
    capped_by = None
    if limits:
        limit, why = min(limits)
        if expires is None or limit < expires:
            expires, capped_by = limit, why
    return expires, capped_by


async def confirm_password(request: Request, principal: Principal, password: str | None) -> None:
    """Refuses (403) unless ``password`` is the caller's; failures count towards the sign-in
    throttle, so that a stolen session cookie does not become a way to guess the password."""
    ctx = ctx_of(request)
    username = principal.user.username
    client = client_address(request)
    if not password:
        raise Forbidden(
            "a token that never expires needs your password: send it as `password` (or give "
            "expires_in_days)"
        )
    wait = ctx.throttle.wait(username, client)
    if wait:
        raise Throttled(wait)
    found = await ctx.db(ctx.catalog.user_credentials, username)
    if found is None or not await ctx.db(verify_password, found[1], password):
        ctx.throttle.failed(username, client, known=found is not None)
        raise Forbidden("wrong password: a token that never expires was not made")


@router.delete("/tokens/{token_id:int}", status_code=204, tags=["users"])
async def revoke_token(request: Request, principal: User, token_id: Id) -> Response:
    """Revoke one of the caller's tokens (an admin: anyone's)."""
    await api_csrf(request, principal)
    await drop_token(request, principal, token_id)
    return Response(status_code=204)


async def drop_token(request: Request, principal: Principal, token_id: Id) -> None:
    ctx = ctx_of(request)
    owner = None if principal.is_admin else principal.user.id
    if not await ctx.write(ctx.catalog.delete_token, token_id, user_id=owner):
        raise HTTPException(404, f"no token {token_id}")
    await audit(request, "token_revoke", principal, token_id=token_id)


# -- audit log -----------------------------------------------------------------------------


async def audit_rows(
    request: Request,
    *,
    limit: int,
    before_id: Id | None,
) -> list[AuditInfo]:
    ctx = ctx_of(request)
    params = request.query_params
    zone = time_zone(params.get("tz"))
    action = params.get("action") or None
    if action is not None and action not in AUDIT_ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(sorted(AUDIT_ACTIONS))}")
    rec = params.get("recording_id") or None
    if rec is not None and parse_id(rec) is None:
        raise BadRequest(f"recording_id must be a number from {ID_RANGE}")
    return await ctx.db(
        ctx.catalog.audit_entries,
        since=parse_moment(params["since"], zone) if params.get("since") else None,
        until=parse_moment(params["until"], zone, end=True) if params.get("until") else None,
        username=params.get("username") or None,
        action=action,
        recording_id=int(rec) if rec else None,
        before_id=before_id,
        limit=limit,
    )


AuditFilters = {
    "since": "Date or ISO date-time.",
    "until": "Date (inclusive) or ISO date-time.",
    "username": "Exactly this user.",
    "action": f"One of {', '.join(sorted(AUDIT_ACTIONS))}.",
    "recording_id": "Entries about this recording.",
}


@router.get("/audit", response_model=list[AuditOut], tags=["audit"])
async def audit_log(
    request: Request,
    principal: Admin,
    since: Annotated[str, Query(description=AuditFilters["since"])] = "",
    until: Annotated[str, Query(description=AuditFilters["until"])] = "",
    tz: Annotated[str, Query()] = "",
    username: Annotated[str, Query(description=AuditFilters["username"])] = "",
    action: Annotated[str, Query(description=AuditFilters["action"])] = "",
    recording_id: Annotated[str, Query(description=AuditFilters["recording_id"])] = "",
    before_id: Annotated[Id | None, Query(description="Page back: last id seen.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The audit log, newest first (admin)."""
    return [audit_out(e) for e in await audit_rows(request, limit=limit, before_id=before_id)]


@router.get(
    "/audit.csv",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def audit_export(request: Request, principal: Admin) -> StreamingResponse:
    """The audit log as CSV, with the same filters as `GET /audit` (admin). The export is
    itself audited."""
    await audit(request, "audit_export", principal, filters=dict(request.query_params))
    return await audit_csv(request)


async def audit_csv(request: Request) -> StreamingResponse:
    first = await audit_rows(request, limit=5000, before_id=None)

    async def rows() -> Any:
        text = io.StringIO()
        writer = SafeWriter(text)
        writer.writerow(
            ["id", "at", "username", "action", "recording_id", "client_address", "detail"]
        )
        batch = first
        while batch:
            for e in batch:
                writer.writerow(
                    [
                        e.id,
                        e.at.isoformat(),
                        e.username,
                        e.action,
                        "" if e.recording_id is None else e.recording_id,
                        e.client_address,
                        _json(e.detail),
                    ]
                )
            yield text.getvalue()
            text.seek(0)
            text.truncate()
            batch = await audit_rows(request, limit=5000, before_id=batch[-1].id)

    name = f"callrec-audit-{datetime.now().astimezone():%Y-%m-%d_%H%M%S}.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": content_disposition("attachment", name)},
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)
