"""What a page handler takes in: its user (:data:`PageUser`, :data:`PageAdmin`,
:data:`SignedIn`) and its posted form, whose CSRF token is checked."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import FormData

from callrec.web.auth import Principal, check_csrf, require_admin, require_user


async def posted_form(request: Request, principal: Principal) -> FormData:
    form = await request.form()
    supplied = form.get("csrf")
    check_csrf(principal, supplied if isinstance(supplied, str) else None)
    return form


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


async def page_user(request: Request) -> Principal:
    """A signed-in user who has set their own password (else: to the account page)."""
    principal = await require_user(request)
    first_steps = ("/account", "/account/password")
    if principal.user.must_change_password and request.url.path not in first_steps:
        raise MustChangePassword()
    return principal


class MustChangePassword(HTTPException):
    def __init__(self) -> None:
        super().__init__(303, "set a new password first", headers={"location": "/account"})


PageUser = Annotated[Principal, Depends(page_user)]
PageAdmin = Annotated[Principal, Depends(require_admin)]
SignedIn = Annotated[Principal, Depends(require_user)]
