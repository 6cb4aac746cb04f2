"""What every route needs, built once by `create_app`: settings, database, templates, limits."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.transports import Transport, deliver
from newsletter.errors import NewsletterError
from newsletter.mail.message import DkimKey
from newsletter.mail.subscription import MailRequest, subscription_message
from newsletter.models import utcnow
from newsletter.render.environment import render_template
from newsletter.web.limits import (
    IpNetwork,
    SharedLimit,
    WebLimits,
    client_address,
    client_key,
    trusted_networks,
)
from newsletter.web.security import CsrfGuard

log = logging.getLogger("newsletter.web")


@dataclass
class WebContext:
    settings: Settings
    engine: Engine
    env: jinja2.Environment
    transport: Transport
    dkim: DkimKey | None
    limits: WebLimits
    csrf: CsrfGuard
    clock: Callable[[], dt.datetime] = utcnow
    per_ip: SharedLimit = field(init=False)
    per_address: SharedLimit = field(init=False)
    trusted: tuple[IpNetwork, ...] = field(init=False)
    pages: dict[tuple[str, str], str] = field(default_factory=dict)  # archive page cache

    def __post_init__(self) -> None:
        limits, secret = self.limits, self.settings.secret
        self.per_ip = SharedLimit(
            self.engine, secret, scope="ip", limit=limits.subscribe_per_ip,
            window=limits.window_seconds,
        )  # fmt: skip
        self.per_address = SharedLimit(
            self.engine, secret, scope="address", limit=limits.subscribe_per_address,
            window=limits.window_seconds,
        )  # fmt: skip
        self.trusted = trusted_networks(limits.trusted_proxies)

    def client(self, request: Request) -> str:
        """The key the per-IP limit counts this request against (see `client_address`)."""
        peer = request.client.host if request.client else None
        forwarded = request.headers.getlist("x-forwarded-for")
        return client_key(client_address(peer, forwarded, self.trusted))

    @property
    def secret(self) -> bytes:
        return self.settings.secret

    async def send(self, request: MailRequest) -> None:
        """Send one subscription mail; runs after the answer, so its timing tells nothing."""
        try:
            outgoing = subscription_message(
                self.settings, self.env, request, now=self.clock(), dkim=self.dkim
            )
            [reply] = await deliver(self.transport, [outgoing])
        except (NewsletterError, OSError) as exc:
            log.error("subscription mail not sent: %s", exc)
            return
        if not 200 <= reply.code < 300:
            log.warning("subscription mail refused: %s", reply)


def web_context(request: Request) -> WebContext:
    context = request.app.state.web
    assert isinstance(context, WebContext)
    return context


Web = Annotated[WebContext, Depends(web_context)]


def database(web: Web) -> Iterator[Session]:
    with Session(web.engine, expire_on_commit=False) as session:
        yield session


Db = Annotated[Session, Depends(database)]


def page(
    web: WebContext,
    request: Request,
    template: str,
    *,
    status: int = 200,
    form: str | None = None,
    **values: object,
) -> HTMLResponse:
    """A rendered page; `form` names the form on it, whose CSRF value it carries."""
    nonce, new = web.csrf.nonce(request)
    context = {
        "publication": web.settings.sender.name,
        "base_url": web.settings.base_url,
        "csrf": web.csrf.value(nonce, form) if form else "",
        **values,
    }
    response = HTMLResponse(
        render_template(web.env, f"web/{template}", context), status_code=status
    )
    if form and new:
        web.csrf.set_cookie(response, nonce)
    return response
