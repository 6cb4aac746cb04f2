"""Pages behind signed links: confirm, unsubscribe (with RFC 8058 one-click) and preferences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter import directory, interests
from newsletter.mail.links import recipient_links
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.services import subscribers
from newsletter.subscriptions import lifecycle, store, suppression
from newsletter.subscriptions.lifecycle import Actor
from newsletter.tokens import Purpose
from newsletter.web.context import Db, Web, WebContext, page

router = APIRouter()
ONE_CLICK = "One-Click"


@dataclass(frozen=True)
class Links:
    """The subscriber's own unsubscribe and preferences pages, for links on a page."""

    unsubscribe_url: str
    preferences_url: str


def _links(web: WebContext, subscriber: Subscriber) -> Links:
    unsubscribe, preferences, _ = recipient_links(web.settings, subscriber.token_key)
    return Links(unsubscribe, preferences)


@router.get("/confirm/{token}")
def confirm_page(token: str, request: Request, web: Web, db: Db) -> HTMLResponse:
    subscriber, claim = lifecycle.from_token(
        db, web.secret, token, Purpose.CONFIRM, now=web.clock()
    )
    lifecycle.check_confirmable(subscriber, claim)
    confirmed = (SubscriberStatus.ACTIVE, SubscriberStatus.AWAITING)
    if subscriber.status in confirmed:  # the link opened again: nothing to do
        return page(
            web, request, "confirm.html.j2", done=False, already=True,
            awaiting=subscriber.status == SubscriberStatus.AWAITING, links=_links(web, subscriber),
        )  # fmt: skip
    return page(web, request, "confirm.html.j2", form="confirm", done=False, already=False)


@router.post("/confirm/{token}")
def confirm(
    token: str, request: Request, web: Web, db: Db, csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    web.csrf.verify(request, csrf, "confirm")
    subscriber, claim = lifecycle.from_token(
        db, web.secret, token, Purpose.CONFIRM, now=web.clock()
    )
    approval = web.settings.web.approval == "mission"
    changed = lifecycle.confirm(
        db, subscriber, claim, actor=Actor("subscriber", "link"), approval=approval
    )
    db.commit()
    return page(
        web, request, "confirm.html.j2", done=changed, already=not changed,
        awaiting=subscriber.status == SubscriberStatus.AWAITING, links=_links(web, subscriber),
    )  # fmt: skip


@router.get("/unsubscribe/{token}")
def unsubscribe_page(token: str, request: Request, web: Web, db: Db) -> HTMLResponse:
    subscriber, _ = lifecycle.from_token(
        db, web.secret, token, Purpose.UNSUBSCRIBE, now=web.clock()
    )
    done = subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED)
    return page(
        web,
        request,
        "unsubscribe.html.j2",
        form="unsubscribe",
        done=done,
        links=_links(web, subscriber),
    )


@router.post("/unsubscribe/{token}")
def unsubscribe(
    token: str,
    request: Request,
    web: Web,
    db: Db,
    list_unsubscribe: Annotated[str, Form(alias="List-Unsubscribe")] = "",
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:
    # RFC 8058: the mail provider posts `List-Unsubscribe=One-Click` with no cookies and no
    # token of ours; the signed link is the proof. Answer 200, never a redirect.
    one_click = list_unsubscribe == ONE_CLICK
    if not one_click:
        web.csrf.verify(request, csrf, "unsubscribe")
    subscriber, _ = lifecycle.from_token(
        db, web.secret, token, Purpose.UNSUBSCRIBE, now=web.clock()
    )
    actor = Actor("subscriber", "one-click" if one_click else "link")
    lifecycle.unsubscribe(db, subscriber, actor=actor)
    db.commit()
    return page(web, request, "unsubscribe.html.j2", done=True, links=_links(web, subscriber))


def _preferences_page(
    web: WebContext, request: Request, db: Db, subscriber: Subscriber, *, saved: bool
) -> HTMLResponse:
    if subscriber.status in store.DEPARTED or suppression.is_erased(subscriber):
        return page(web, request, "preferences.html.j2", departed=True, saved=False)
    assert subscriber.id is not None
    chosen = interests.sectors_of(db, [subscriber.id]).get(subscriber.id, ())
    return page(
        web, request, "preferences.html.j2", form="preferences", departed=False, saved=saved,
        sectors=list(directory.sectors(db).values()), chosen=chosen,
        language=subscriber.language, links=_links(web, subscriber),
    )  # fmt: skip


@router.get("/preferences/{token}")
def preferences_page(
    token: str, request: Request, web: Web, db: Db, saved: bool = False
) -> HTMLResponse:
    subscriber, _ = lifecycle.from_token(
        db, web.secret, token, Purpose.PREFERENCES, now=web.clock()
    )
    return _preferences_page(web, request, db, subscriber, saved=saved)


@router.get("/preferences/{token}/data.json")
def personal_data(token: str, web: Web, db: Db) -> Response:
    """What the system holds about the person whose link this is, as a JSON download."""
    subscriber, _ = lifecycle.from_token(
        db, web.secret, token, Purpose.PREFERENCES, now=web.clock()
    )
    body = json.dumps(
        subscribers.personal_data(db, subscriber), ensure_ascii=False, indent=2, default=str
    )
    return Response(
        body, media_type="application/json; charset=utf-8",
        headers={
            "content-disposition": 'attachment; filename="my-newsletter-data.json"',
            "cache-control": "private, no-store", "x-robots-tag": "noindex",
        },
    )  # fmt: skip


@router.post("/preferences/{token}", response_model=None)
def preferences(
    token: str,
    request: Request,
    web: Web,
    db: Db,
    sectors: Annotated[list[str] | None, Form()] = None,
    language: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    web.csrf.verify(request, csrf, "preferences")
    subscriber, _ = lifecycle.from_token(
        db, web.secret, token, Purpose.PREFERENCES, now=web.clock()
    )
    if subscriber.status in store.DEPARTED or suppression.is_erased(subscriber):
        return _preferences_page(web, request, db, subscriber, saved=False)
    lifecycle.update_preferences(
        db, subscriber, sectors=sectors or [], language=language,
        offered=list(directory.sectors(db)), actor=Actor("subscriber", "link"),
    )  # fmt: skip
    db.commit()
    # Post/redirect/get: reloading the saved page does not post the form again.
    return RedirectResponse(f"{token}?saved=1", status_code=303)
