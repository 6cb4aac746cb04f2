"""`create_app(settings)`: the FastAPI app, built from settings alone (no app object at import)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from newsletter import runtime
from newsletter.config import Settings
from newsletter.delivery.transports import Transport
from newsletter.errors import NotFoundError
from newsletter.models import utcnow
from newsletter.render.environment import make_environment
from newsletter.subscriptions.lifecycle import PreferencesError
from newsletter.tokens import InvalidToken
from newsletter.web import access_log, archive, connect, links, subscribe
from newsletter.web.context import WebContext, page, web_context
from newsletter.web.limits import WebLimits
from newsletter.web.security import CsrfError, CsrfGuard, SecurityHeaders


def create_app(
    settings: Settings,
    *,
    limits: WebLimits | None = None,
    transport: Transport | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> FastAPI:
    """The web pages for one instance; the database engine is disposed when the app stops."""
    secret = settings.secret  # fail now, with the config message, not on the first link
    sender = transport or runtime.make_transport(settings)
    dkim = runtime.load_dkim(settings)
    # Opened last, so that a configuration error above leaves no engine behind.
    engine = runtime.open_database(settings)
    context = WebContext(
        settings=settings, engine=engine, env=make_environment(runtime.templates_dir(settings)),
        transport=sender, dkim=dkim, limits=limits or WebLimits.from_settings(settings),
        csrf=CsrfGuard(secret, settings.base_url), clock=clock,
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    # No API docs: these pages are for readers, and the schema would only help a prober.
    # No redirect_slashes: Starlette builds that redirect from the request's Host header, so
    # `Host: evil.example` got `Location: http://evil.example/...`, cached publicly as well.
    app = FastAPI(
        lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )
    app.state.web = context
    routers = (subscribe.router, links.router, archive.router, connect.router)
    for router in routers:
        app.include_router(router)
    access_log.install(getattr(route, "path", "") for r in routers for route in r.routes)
    home = f"{settings.base_url}/archive"
    app.add_api_route("/", lambda: RedirectResponse(home, status_code=307), methods=["GET"])
    _add_slash_redirect(app, settings.base_url)
    _add_error_pages(app)
    app.add_middleware(SecurityHeaders)
    return app


def _add_slash_redirect(app: FastAPI, base_url: str) -> None:
    """`/archive/` goes to `/archive` at the configured address, never at the Host header's."""
    routes = list(app.router.routes)

    def without_slash(request: Request) -> RedirectResponse:
        path = request.url.path
        bare = path.rstrip("/")
        scope = {"type": "http", "path": bare, "method": "GET"}
        if not path.endswith("/") or not any(r.matches(scope)[0] == Match.FULL for r in routes):
            raise HTTPException(404)
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{base_url}{bare}{query}", status_code=307)

    # Registered last, so it only sees paths no page answers.
    app.add_api_route("/{path:path}", without_slash, methods=["GET"], include_in_schema=False)


def _add_error_pages(app: FastAPI) -> None:
    """Map errors to bilingual pages; a bad link always gets the same one generic refusal."""

    def refuse(request: Request, template: str, status: int) -> HTMLResponse:
        return page(web_context(request), request, template, status=status)

    async def invalid_link(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(request, "invalid_link.html.j2", 400)

    async def csrf_failed(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(request, "expired_form.html.j2", 403)

    async def not_found(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(request, "not_found.html.j2", 404)

    async def bad_request(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(request, "bad_request.html.j2", 400)

    async def http_error(request: Request, exc: Exception) -> HTMLResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        template = "not_found.html.j2" if status == 404 else "bad_request.html.j2"
        return refuse(request, template, status)

    app.add_exception_handler(InvalidToken, invalid_link)
    app.add_exception_handler(CsrfError, csrf_failed)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(PreferencesError, bad_request)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(HTTPException, http_error)
