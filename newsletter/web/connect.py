"""`GET/POST /connect/<issue>/<item>/<token>`: "connect me" (对接) on a cooperation demand.

GET shows the form and writes nothing, not even that the link was opened; POST (CSRF) records
one request per reader and item, answers in the reader's language and tells the issue's
contact by mail after the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse

from newsletter.delivery.transports import deliver
from newsletter.errors import NewsletterError
from newsletter.mail.cooperation import Notice, notice_message
from newsletter.services import cooperation
from newsletter.web.context import Db, Web, WebContext, log, page

router = APIRouter()
FORM = "connect"
PATH = "/connect/{slug}/{item_id}/{token}"


def _form(
    web: WebContext,
    request: Request,
    found: cooperation.Target,
    *,
    values: dict[str, str],
    problems: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    response = page(
        web, request, "connect.html.j2", status=status, form=FORM, values=values,
        problems=problems, item=found.item, mission=found.mission,
        language=found.subscriber.language, existing=found.existing is not None,
        contact=found.issue.contact.email,
    )  # fmt: skip
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@router.get(PATH)
def connect_form(
    slug: str, item_id: str, token: str, request: Request, web: Web, db: Db
) -> HTMLResponse:
    found = cooperation.target(db, web.secret, slug, item_id, token, now=web.clock())
    before = found.existing
    values = {
        "note": before.note if before else "",
        "organisation": before.organisation if before else "",
        "country": before.country if before else "",
    }
    return _form(web, request, found, values=values, problems={})


async def _notify(web: WebContext, notice: Notice) -> None:
    """Tell the contact; after the answer, so a slow relay never keeps the reader waiting."""
    try:
        outgoing = notice_message(web.settings, web.env, notice, now=web.clock(), dkim=web.dkim)
        [reply] = await deliver(web.transport, [outgoing])
    except (NewsletterError, OSError) as exc:
        log.error("connect request %s: contact not told: %s", notice.request_id, exc)
        return
    if not 200 <= reply.code < 300:
        log.warning("connect request %s: contact mail refused: %s", notice.request_id, reply)


@router.post(PATH)
def connect(
    slug: str,
    item_id: str,
    token: str,
    request: Request,
    background: BackgroundTasks,
    web: Web,
    db: Db,
    note: Annotated[str, Form()] = "",
    organisation: Annotated[str, Form()] = "",
    country: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:
    web.csrf.verify(request, csrf, FORM)
    found = cooperation.target(db, web.secret, slug, item_id, token, now=web.clock())
    reply, problems = cooperation.check_answer(note, organisation, country)
    if reply is None:
        values = {"note": note, "organisation": organisation, "country": country}
        return _form(web, request, found, values=values, problems=problems, status=400)
    done = cooperation.answer(db, found, reply, now=web.clock())
    db.commit()  # the request's one unit of work, before any mail names it
    if done.notice is not None:
        background.add_task(_notify, web, done.notice)
    response = page(
        web, request, "connect_sent.html.j2", created=done.created, item=found.item,
        language=found.subscriber.language,
    )  # fmt: skip
    response.headers["X-Robots-Tag"] = "noindex"
    return response
