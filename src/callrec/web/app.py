"""The ASGI application: REST API, pages, static files, metrics, OpenAPI reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callrec import __version__
from callrec.access import AllowList, RefusalLog
from callrec.catalog import Catalog
from callrec.config import Settings
from callrec.engine import CatalogWriter, LiveView
from callrec.health import HealthSource
from callrec.storage.client import store_from
from callrec.web import upload
from callrec.web.allow import AllowListMiddleware
from callrec.web.api import accounts as accounts_api
from callrec.web.api import holds as holds_api
from callrec.web.api import integrity as integrity_api
from callrec.web.api import jobs as jobs_api
from callrec.web.api import listen as listen_api
from callrec.web.api import live as live_api
from callrec.web.api import notes as notes_api
from callrec.web.api import recordings as recordings_api
from callrec.web.api import status as status_api
from callrec.web.api import transcripts as transcripts_api
from callrec.web.auth import (
    Forbidden,
    PasswordChangeRequired,
    SignInRequired,
    Throttled,
    Touches,
    WebContext,
    ctx_of,
    require_admin,
)
from callrec.web.health import HealthCheck
from callrec.web.listen import ListenHub
from callrec.web.live import LiveHub
from callrec.web.locate import LocalMedia
from callrec.web.metrics import WebMetrics
from callrec.web.pages import account as account_pages
from callrec.web.pages import admin as admin_pages
from callrec.web.pages import recordings as recordings_pages
from callrec.web.pages import signin as signin_pages
from callrec.web.pages.render import error_page, render
from callrec.web.recordings import BadRequest

if TYPE_CHECKING:
    from callrec.usb.importer import Importer

HERE: Final = Path(__file__).parent

#: Pages and API answers may only load what this server serves; no inline script.
SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def create_app(
    settings: Settings,
    catalog: Catalog,
    *,
    writer: CatalogWriter,
    recording: LiveView | None = None,
    importer: Importer | None = None,
    health: HealthSource | None = None,
    job_runs: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    every_node: LiveView | None = None,
) -> FastAPI:
    """The web app over ``catalog``, writing through ``writer``; with the recording engine's
    live view (``recording``), its USB ``importer`` and what the recording server says about
    its parts (``health``: journal, disk, workers, refused starts) when given.
    ``every_node``: the live calls of every node sharing the catalogue (docs/scaling.md),
    for the live page and its feed; the metrics and live listening keep to this node's."""
    app = FastAPI(
        title="callrec",
        version=__version__,
        description=(
            "Find, play and download call recordings. Authenticate with an API token "
            "(`Authorization: Bearer crt_...`, from `callrec user token NAME` or the account "
            "page) or a browser session (then send `X-CSRF-Token` with changes). Until a "
            "one-time password is replaced, everything but `GET /api/v1/me` answers 403. "
            "Query parameters out of range answer 400, ids in the path that cannot exist "
            "404, bodies that do not fit 422."
        ),
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    root = settings.recordings_dir.resolve()
    web_metrics = WebMetrics(catalog, recording, job_runs=job_runs)
    ctx = WebContext(
        settings=settings,
        catalog=catalog,
        writer=writer,
        recording=recording,
        importer=importer,
        root=root,
        live=LiveHub(every_node or recording),
        listen=ListenHub(recording, root, web_metrics.registry),
        metrics=web_metrics,
        health=HealthCheck(catalog, health, storage=bool(settings.storage_url)),
        touches=Touches(writer),
        store=store_from(settings),
        media=LocalMedia(root, node=settings.node_name, peers=settings.peer_dirs()),
    )
    app.state.ctx = ctx
    # The API's routers, in the order of its OpenAPI description.
    app.include_router(status_api.public)
    # The same answer where load balancers and orchestrators look first.
    app.add_api_route(
        "/health",
        status_api.health,
        response_model=status_api.Health,
        include_in_schema=False,
    )
    app.include_router(status_api.router)
    app.include_router(recordings_api.router)
    app.include_router(notes_api.router)
    app.include_router(live_api.router)
    app.include_router(listen_api.router)
    app.include_router(accounts_api.router)
    app.include_router(jobs_api.router)  # issue 16 part 3
    app.include_router(holds_api.router)  # issue 16 R: legal holds
    app.include_router(upload.router)  # POST /api/v1/recordings/import (issue 3)
    app.include_router(integrity_api.router)  # a recording's tamper evidence (issue 16)
    app.include_router(transcripts_api.router)  # issue 18
    app.include_router(signin_pages.router)
    app.include_router(recordings_pages.router)
    app.include_router(account_pages.router)
    app.include_router(admin_pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not ctx.settings.web_metrics_public:
            await require_admin(request)
        body = await ctx.metrics.render(await ctx.health.check())
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/docs", include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        return render(request, "api_docs.html", spec=app.openapi(), principal=None)

    @app.get("/api", include_in_schema=False)
    async def api_root() -> RedirectResponse:
        return RedirectResponse("/api/docs", status_code=307)

    _install_error_handlers(app)
    app.add_middleware(_SecurityHeaders)
    refusals = RefusalLog("web")
    ctx.metrics.web_refusals = refusals
    # Before anything else looks at the request (sessions, the catalogue).
    app.add_middleware(
        AllowListMiddleware,
        allow=AllowList(settings.web_allow, setting="web_allow"),
        refusals=refusals,
    )
    # Outermost, so it also counts what the other middleware answer.
    app.add_middleware(_Metrics, metrics=ctx.metrics)
    return app


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path in ("/metrics", "/health"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        if _wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return JSONResponse(
            {"detail": "sign in, or send an API token: Authorization: Bearer crt_..."},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="callrec"'},
        )

    @app.exception_handler(PasswordChangeRequired)
    async def first_steps(request: Request, exc: PasswordChangeRequired) -> Response:
        if _wants_html(request):
            return RedirectResponse("/account", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=403)

    @app.exception_handler(Throttled)
    async def throttled(request: Request, exc: Throttled) -> Response:
        headers = {"retry-after": str(exc.retry_after)}
        if _wants_html(request):
            response = error_page(request, 429, exc.detail)
            response.headers.update(headers)
            return response
        return JSONResponse({"detail": exc.detail}, status_code=429, headers=headers)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_html(request):
            return error_page(request, 403, exc.detail)
        return JSONResponse({"detail": exc.detail}, status_code=403)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        if _wants_html(request):
            return error_page(request, 400, str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _wants_html(request) and exc.status_code >= 400:
            return error_page(request, exc.status_code, str(exc.detail))
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # A bad value in the path names nothing that exists: 404. One in the query string is
        # a bad parameter: 400. A body that does not fit its schema: 422.
        places = {str(e.get("loc", ("",))[0]) for e in exc.errors()}
        status = 404 if "path" in places else 400 if places <= {"query"} else 422
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        if _wants_html(request):
            detail = "not found" if status == 404 else f"{where}: {first.get('msg', 'invalid')}"
            return error_page(request, 404 if status == 404 else 400, detail)
        if status == 404:
            return JSONResponse({"detail": f"not found: {where} is not an id here"}, status)
        errors: list[Any] = [
            {k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=status)


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class _Metrics:
    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = metrics.middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def text_error(status: int, detail: str) -> PlainTextResponse:
    return PlainTextResponse(detail, status_code=status)


__all__ = ["create_app", "ctx_of"]
