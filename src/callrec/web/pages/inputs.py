"""What a page handler takes in: its user (:data:`PageUser`, :data:`PageAdmin`,
:data:`SignedIn`) and its posted form, whose CSRF token is checked."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
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


PageUser = Annotated[Principal, Depends(require_user)]
PageAdmin = Annotated[Principal, Depends(require_admin)]
#: Any signed-in user, a one-time password's too (signing out).
SignedIn = Annotated[Principal, Depends(require_user)]
