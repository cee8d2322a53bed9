"""The caller's account page: a new password, and their API tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from callrec.web.api.accounts import drop_token, issue_token, password_effects
from callrec.web.auth import Forbidden, Principal, audit, ctx_of
from callrec.web.ids import Id
from callrec.web.pages.inputs import PageUser, field, posted_form
from callrec.web.pages.render import redirect, render, revealed
from callrec.web.recordings import BadRequest
from callrec.web.security import (
    MAX_TOKEN_DAYS,
    PasswordPolicyError,
    hash_password,
    verify_password,
)

router = APIRouter(include_in_schema=False)


async def _account(
    request: Request, principal: Principal, *, status_code: int = 200, **values: Any
) -> Response:
    ctx = ctx_of(request)
    tokens = await ctx.db(ctx.catalog.list_tokens, principal.user.id)
    values.setdefault("error", "")
    values.setdefault("new_token", "")
    values.setdefault("token_max_days", ctx.settings.web_token_max_days)
    return render(
        request,
        "account.html",
        principal=principal,
        status_code=status_code,
        tokens=tokens,
        **values,
    )


@router.get("/account")
async def account_page(request: Request, principal: PageUser) -> Response:
    return await _account(request, principal, new_token=revealed(request, principal) or "")


@router.post("/account/password")
async def account_password(request: Request, principal: PageUser) -> Response:
    ctx = ctx_of(request)
    form = await posted_form(request, principal)
    current = form.get("current")
    new = form.get("new")
    confirm = form.get("confirm")
    if not all(isinstance(v, str) for v in (current, new, confirm)):
        raise BadRequest("fill in all three password fields")
    assert isinstance(current, str) and isinstance(new, str)
    found = await ctx.db(ctx.catalog.user_credentials, principal.user.username)
    if found is None or not await ctx.db(verify_password, found[1], current):
        return await _account(
            request, principal, status_code=400, error="The current password is wrong."
        )
    if new != confirm:
        return await _account(
            request, principal, status_code=400, error="The new passwords differ."
        )
    if new == current:
        return await _account(
            request, principal, status_code=400, error="Choose a password you did not use."
        )
    try:
        password_hash = await ctx.db(hash_password, new)
    except PasswordPolicyError as exc:
        return await _account(request, principal, status_code=400, error=str(exc))
    change = await ctx.write(
        ctx.catalog.set_password,
        principal.user.id,
        password_hash=password_hash,
        must_change_password=False,
        keep_session=principal.session_hash or None,
    )
    await audit(
        request,
        "password_change",
        principal,
        target=principal.user.username,
        **password_effects(change),
    )
    revoked = len(change.tokens_revoked)
    note = f" {revoked} API token{'s' if revoked != 1 else ''} revoked." if revoked else ""
    return redirect("/recordings", f"Password changed.{note}")


@router.post("/account/tokens")
async def account_token(request: Request, principal: PageUser) -> Response:
    form = await posted_form(request, principal)
    days_text = field(form, "days")
    try:
        days = float(days_text) if days_text else None
    except ValueError as exc:
        raise BadRequest("days must be a number") from exc
    if days is not None and not 0 < days <= MAX_TOKEN_DAYS:
        raise BadRequest(f"days must be more than 0 and at most {MAX_TOKEN_DAYS}")
    password = form.get("password")
    try:
        _info, token = await issue_token(
            request,
            principal,
            field(form, "name"),
            days,
            password=password if isinstance(password, str) else None,
        )
    except Forbidden as exc:
        return await _account(request, principal, status_code=403, error=exc.detail)
    return redirect("/account", "Token created.", reveal=(principal.user.id, token))


@router.post("/account/tokens/{token_id:int}/revoke")
async def account_token_revoke(request: Request, token_id: Id, principal: PageUser) -> Response:
    await posted_form(request, principal)
    await drop_token(request, principal, token_id)
    return redirect("/account", "Token revoked.")
