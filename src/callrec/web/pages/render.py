"""Rendering a page: the Jinja templates and their filters, the flash message, redirects,
and the error page."""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from callrec.catalog.webrecords import SORTS
from callrec.web.auth import Principal
from callrec.web.media import FORMATS

FLASH_COOKIE: Final = "callrec_flash"
REVEAL_COOKIE: Final = "callrec_reveal"
#: Seconds a secret made by a form waits for the page its redirect leads to.
REVEAL_TTL: Final = 60.0
SORT_LABELS: Final = {
    "-start_time": "Newest first",
    "start_time": "Oldest first",
    "-duration": "Longest first",
    "duration": "Shortest first",
    "local_number": "Local number",
    "-local_number": "Local number (desc)",
    "remote_number": "Remote number",
    "-remote_number": "Remote number (desc)",
}
assert set(SORT_LABELS) == SORTS


def _time(value: datetime | None, style: str = "datetime") -> Markup:
    """A <time> the browser's script shows in its own time zone (UTC text until then)."""
    if value is None:
        return Markup("")
    iso = value.astimezone(UTC).isoformat()
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}" data-style="{}">{}</time>').format(iso, style, text)


def _duration(seconds: float | None) -> str:
    """Whole seconds, cut down as players count (6.6 s is 0:06, as the browser's own audio
    controls show it); app.js's ``formatDuration`` does the same."""
    if seconds is None:
        return ""
    total = math.floor(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _party(number: str, name: str) -> Markup:
    if name:
        return Markup("{} <span class='muted'>{}</span>").format(number, name)
    return Markup(escape(number))


#: CommonMark without raw HTML: a description's "<" is text, never markup.
_markdown = MarkdownIt("commonmark", {"html": False})


def _md(text: str | None) -> Markup:
    """Markdown (the OpenAPI descriptions') as HTML blocks."""
    return Markup(_markdown.render(text or ""))


def _md_inline(text: str | None) -> Markup:
    """Markdown for inside a table cell or a line: code, emphasis, links; no paragraphs."""
    return Markup(_markdown.renderInline(text or ""))


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(time=_time, duration=_duration, size=_size, md=_md, md_inline=_md_inline)
_env.globals.update(party=_party, sort_labels=SORT_LABELS, formats=FORMATS)


def render(
    request: Request,
    template: str,
    *,
    principal: Principal | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    flash = request.cookies.get(FLASH_COOKIE, "")
    html = _env.get_template(template).render(
        request=request,
        principal=principal,
        user=principal.user if principal else None,
        csrf=principal.csrf if principal else "",
        flash=flash[:300],
        path=request.url.path,
        **values,
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    if REVEAL_COOKIE in request.cookies:
        response.delete_cookie(REVEAL_COOKIE, path="/")
    return response


def error_page(request: Request, status: int, detail: str) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    return render(
        request,
        "error.html",
        principal=principal,
        status_code=status,
        status=status,
        detail=detail,
    )


def redirect(url: str, flash: str = "", *, reveal: tuple[int, Any] | None = None) -> Response:
    """303 to ``url`` (POST-redirect-GET: a reload of where it leads submits nothing), with a
    message for that page, and ``reveal`` = (user id, secret) for it to show once."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, flash, max_age=60, httponly=True, samesite="lax")
    if reveal is not None:
        key = _reveals.put(*reveal)
        response.set_cookie(
            REVEAL_COOKIE, key, max_age=int(REVEAL_TTL), httponly=True, samesite="strict"
        )
    return response


def revealed(request: Request, principal: Principal) -> Any:
    """The secret the redirect to this page carries for this user (once), or None."""
    key = request.cookies.get(REVEAL_COOKIE)
    return _reveals.take(key, principal.user.id) if key else None


class _Reveals:
    """Secrets a form made (a new API token, a one-time password), kept in the server until
    the page after the redirect shows them: never in a cookie or a URL. One process serves
    the web, so memory will do; what is not taken within :data:`REVEAL_TTL` is dropped."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._items: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()

    def put(self, user_id: int, value: Any) -> str:
        now = time.monotonic()
        while self._items and (
            len(self._items) >= self._limit
            or next(iter(self._items.values()))[0] < now - REVEAL_TTL
        ):
            self._items.popitem(last=False)
        key = secrets.token_urlsafe(24)
        self._items[key] = (now, user_id, value)
        return key

    def take(self, key: str, user_id: int) -> Any:
        found = self._items.get(key)
        if found is None or found[1] != user_id:
            return None
        del self._items[key]
        return found[2] if found[0] >= time.monotonic() - REVEAL_TTL else None


_reveals = _Reveals()
