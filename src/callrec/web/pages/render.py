"""Rendering a page: the Jinja templates and their filters, the flash message, redirects,
and the error page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup, escape

from callrec.catalog.webrecords import SORTS
from callrec.web.auth import Principal
from callrec.web.media import FORMATS

FLASH_COOKIE: Final = "callrec_flash"
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
    if seconds is None:
        return ""
    total = round(seconds)
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


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent.parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(time=_time, duration=_duration, size=_size)
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


def redirect(url: str, flash: str = "") -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH_COOKIE, flash, max_age=60, httponly=True, samesite="lax")
    return response
