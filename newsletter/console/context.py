"""What every console page needs: settings, database, templates, clock; cookies and rendering."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from newsletter.config import Settings
from newsletter.console import i18n
from newsletter.console.security import Csrf, Network, is_loopback
from newsletter.db import Engine
from newsletter.render.environment import default_templates_dir
from newsletter.services import logins
from newsletter.services.logins import Client, Who

SESSION_COOKIE = "nl_admin"
NONCE_COOKIE = "nl_admin_csrf"


def environment(override: Path | None) -> jinja2.Environment:
    """templates/admin, with a same-named file under the configured templates folder winning."""
    folders = [default_templates_dir() / "admin"]
    if override is not None:
        folders.insert(0, override / "admin")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    i18n.install(env)
    return env


@dataclass(frozen=True)
class Console:
    settings: Settings
    engine: Engine
    env: jinja2.Environment
    network: Network
    csrf: Csrf
    clock: Callable[[], dt.datetime]

    def client(self, request: Request) -> Client:
        address = str(request.scope.get("state", {}).get("client_address") or "")
        return Client(address, request.headers.get("user-agent", "")[:300])

    def secure(self, request: Request) -> bool:
        """Secure cookies, except over plain http from this very machine (tests, a local look)."""
        return self.network.https(request) or not is_loopback(self.client(request).ip)

    def cookie(self, request: Request, base: str) -> str:
        # __Host-: this host only, path /, never set over plain http by another subdomain.
        return f"__Host-{base}" if self.secure(request) else base

    def session_token(self, request: Request) -> str:
        return request.cookies.get(self.cookie(request, SESSION_COOKIE), "")

    def set_session(self, request: Request, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie(request, SESSION_COOKIE), token, httponly=True, samesite="strict",
            secure=self.secure(request), path="/",
        )  # fmt: skip

    def clear_session(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            self.cookie(request, SESSION_COOKIE), path="/", secure=self.secure(request),
            httponly=True, samesite="strict",
        )  # fmt: skip

    def nonce(self, request: Request) -> tuple[str, bool]:
        """The browser's CSRF nonce, or a new one (True: the response must set it)."""
        current = request.cookies.get(self.cookie(request, NONCE_COOKIE), "")
        if self.csrf.valid_nonce(current):
            return current, False
        return self.csrf.new_nonce(), True

    def check_form(self, request: Request, submitted: str, form: str, session: str = "") -> None:
        nonce = request.cookies.get(self.cookie(request, NONCE_COOKIE), "")
        self.csrf.check(request, submitted, form, nonce, session, https=self.network.https(request))

    def page(
        self,
        request: Request,
        template: str,
        values: Mapping[str, object],
        *,
        form: str = "",
        session: str = "",
        status: int = 200,
    ) -> HTMLResponse:
        """A page; `form` names the form whose CSRF token it carries (bound to `session`)."""
        nonce, new = self.nonce(request)
        token = self.csrf.token(form, nonce, session) if form else ""
        language = self.language(request, values, nonce)
        html = self.env.get_template(template).render(**values, **language, csrf=token)
        response = HTMLResponse(html, status_code=status)
        if new:
            response.set_cookie(
                self.cookie(request, NONCE_COOKIE), nonce, httponly=True, samesite="strict",
                secure=self.secure(request), path="/",
            )  # fmt: skip
        return response

    def language(
        self, request: Request, values: Mapping[str, object], nonce: str
    ) -> dict[str, object]:
        """The page's language (the staff member's choice) and, when signed in, its toggle."""
        who = values.get("who")
        if not isinstance(who, Who):
            token = self.session_token(request)
            who = (
                logins.who(self.settings, token, now=self.clock(), db=self.engine)
                if token
                else None
            )
        locale = i18n.normal(who.locale if who is not None else None)
        toggle: dict[str, str] | None = None
        if who is not None:
            # Back to this page after the switch; a POST's result page has no address to reload.
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            toggle = {
                "csrf": self.csrf.token("locale", nonce, who.session_id),
                "next": here if request.method == "GET" else "/admin",
            }
        return {i18n.LOCALE_KEY: locale, "html_lang": i18n.HTML_LANG[locale], "locale_form": toggle}


def console(request: Request) -> Console:
    found = request.app.state.console
    assert isinstance(found, Console)
    return found


def see_other(path: str) -> RedirectResponse:
    """POST, then 303 to a page: a reload never sends the form again."""
    return RedirectResponse(path, status_code=303)
