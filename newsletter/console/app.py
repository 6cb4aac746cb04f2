"""`create_admin_app(settings)`: the staff console at /admin, on a listener of its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response

from newsletter import runtime
from newsletter.config import Settings
from newsletter.console import audit_pages, campaign_pages, issues_pages, preview_pages, routes
from newsletter.console.account_pages import router as account_router
from newsletter.console.context import Console, console, environment, see_other
from newsletter.console.revision_pages import router as revision_router
from newsletter.console.security import Csrf, CsrfError, Guard, Network
from newsletter.models import utcnow
from newsletter.render.environment import default_templates_dir

STYLESHEET = default_templates_dir() / "admin" / "console.css"


def create_admin_app(settings: Settings, *, clock: Callable[[], dt.datetime] = utcnow) -> FastAPI:
    """The console for one instance; its database engine is disposed when the app stops."""
    secret = settings.secret  # fail now, with the config message, not at the first login
    admin = settings.admin
    network = Network.of(admin.allow_networks, admin.trusted_proxies)
    env = environment(runtime.templates_dir(settings))
    engine = runtime.open_database(settings)
    state = Console(settings, engine, env, network, Csrf.of(secret), clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    # No API docs (their UI loads from a CDN); no redirect_slashes (built from the Host header).
    app = FastAPI(
        lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False
    )
    app.state.console = state
    app.include_router(routes.router)
    app.include_router(issues_pages.router)
    app.include_router(preview_pages.router)
    app.include_router(campaign_pages.router)
    app.include_router(account_router)
    app.include_router(revision_router)
    app.include_router(audit_pages.router)
    app.add_api_route("/", lambda: see_other("/admin"), methods=["GET"], include_in_schema=False)
    app.add_api_route("/admin/static/console.css", _stylesheet, methods=["GET"])
    _add_error_pages(app)
    app.add_middleware(Guard, network=network)
    return app


def _stylesheet() -> Response:
    return FileResponse(STYLESHEET, media_type="text/css; charset=utf-8")


def _add_error_pages(app: FastAPI) -> None:
    def refuse(request: Request, status: int, message: str) -> HTMLResponse:
        return console(request).page(
            request, "error.html.j2", {"status": status, "message": message}, status=status
        )

    async def csrf_failed(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(
            request, 403, "表单已过期或并非来自本系统，请返回重新提交。"
            "The form expired or did not come from the console: go back, reload it and send it again.",
        )  # fmt: skip

    async def bad_request(request: Request, exc: Exception) -> HTMLResponse:
        return refuse(request, 400, "请求无效。The request is not valid.")

    async def http_error(request: Request, exc: Exception) -> HTMLResponse:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return refuse(request, 404, "页面不存在。No such page.")
        if status == 405:
            return refuse(request, 405, "不支持此操作。This page does not take that method.")
        return refuse(request, status, "请求无效。The request is not valid.")

    app.add_exception_handler(CsrfError, csrf_failed)
    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(HTTPException, http_error)
