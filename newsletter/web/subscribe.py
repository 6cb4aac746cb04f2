"""`GET/POST /subscribe`: the same answer whatever the address's state; limits before any write."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse

from newsletter import directory
from newsletter.subscriptions.lifecycle import Actor
from newsletter.subscriptions.signup import check_form, request_signup
from newsletter.web.context import Db, Web, WebContext, page

router = APIRouter()
FORM = "subscribe"


def _form_page(
    web: WebContext,
    request: Request,
    db: Db,
    *,
    values: dict[str, object],
    problems: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    return page(
        web, request, "subscribe.html.j2", status=status, form=FORM, values=values,
        problems=problems, embassies=list(directory.embassies(db).values()),
        sectors=list(directory.sectors(db).values()),
    )  # fmt: skip


@router.get("/subscribe")
def subscribe_form(request: Request, web: Web, db: Db) -> HTMLResponse:
    values: dict[str, object] = {
        "email": "",
        "name": "",
        "embassy": "",
        "sectors": [],
        "language": "zh",
    }
    return _form_page(web, request, db, values=values, problems={})


@router.post("/subscribe")
def subscribe(
    request: Request,
    background: BackgroundTasks,
    web: Web,
    db: Db,
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    embassy: Annotated[str, Form()] = "",
    sectors: Annotated[list[str] | None, Form()] = None,
    language: Annotated[str, Form()] = "zh",
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:
    web.csrf.verify(request, csrf, FORM)
    verdict = web.per_ip.hit(web.client(request), web.clock())
    if not verdict.allowed:
        response = page(web, request, "busy.html.j2", status=429)
        response.headers["Retry-After"] = str(verdict.retry_after)
        return response
    chosen = sectors or []
    form, problems = check_form(
        email=email, name=name, embassy=embassy, sectors=chosen, language=language,
        embassies=directory.embassies(db), offered=directory.sectors(db),
    )  # fmt: skip
    if form is None:
        values: dict[str, object] = {
            "email": email, "name": name, "embassy": embassy, "sectors": chosen,
            "language": language,
        }  # fmt: skip
        return _form_page(web, request, db, values=values, problems=problems, status=400)
    # Over the per-address limit the answer is the same; only the mail is not sent again.
    if web.per_address.hit(form.email, web.clock()).allowed:
        mail = request_signup(
            db, web.secret, form, actor=Actor("subscriber", "web"),
            allowed_domains=web.settings.web.allowed_domains,
        )  # fmt: skip
        db.commit()  # the request's one unit of work, before any mail names it
        if mail is not None:
            background.add_task(web.send, mail)
    return page(web, request, "subscribe_sent.html.j2")
