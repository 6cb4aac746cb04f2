"""`GET /archive`, `/archive/{slug}` and `/archive/feed.atom`: the untailored web version of sent
issues, for whoever `[archive] visibility` lets in.

`public`: anyone, cached, with an Atom feed. `subscribers`: a visitor whose link carries a valid
read token of an active subscriber (`?r=`, put there by every digest); everyone else, forged
tokens included, gets the same page saying how to subscribe. `staff`: the public site refuses
every page (the console runs on its own listener, so no staff session reaches this app).
Restricted pages, served or refused, are never stored by a cache nor indexed.
"""

from __future__ import annotations

import datetime as dt
import logging
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from newsletter import directory
from newsletter.db import Session
from newsletter.errors import NotFoundError
from newsletter.issues import StoredIssueError, get_issue, published_issues
from newsletter.models import IssueRecord, Subscriber, SubscriberStatus
from newsletter.render.digest import DigestLinks
from newsletter.render.labels import chrome_for
from newsletter.render.view import archive_url
from newsletter.render.web import render_issue_page
from newsletter.subscriptions import lifecycle, suppression
from newsletter.subscriptions.lists import LANGUAGES
from newsletter.tokens import InvalidToken, Purpose
from newsletter.web.context import Db, Web, WebContext, page

router = APIRouter()
log = logging.getLogger("newsletter.web")
RESTRICTED = {"Cache-Control": "private, no-store", "X-Robots-Tag": "noindex"}
ATOM = "http://www.w3.org/2005/Atom"


def _issue_html(web: WebContext, db: Session, slug: str, language: str) -> str:
    # A sent issue can no longer be replaced (issues.IssueAlreadySentError), so its page is
    # rendered once per language and kept.
    key = (slug, language)
    if key not in web.pages:
        if slug not in {r.slug for r in published_issues(db)}:
            raise NotFoundError("issue", slug)
        try:
            stored = get_issue(db, slug)
        except StoredIssueError as exc:
            # Readers get the ordinary page for a missing issue; staff find the cause in the log.
            log.error("archive page of issue %s not shown: %s", slug, exc)
            raise NotFoundError("issue", slug) from None
        web.pages[key] = render_issue_page(
            stored.issue, sectors=directory.sectors(db),
            links=DigestLinks(web.settings.base_url), env=web.env, language=language,
        )  # fmt: skip
    return web.pages[key]


def reader(web: WebContext, db: Session, token: str) -> Subscriber | None:
    """The active subscriber a read token names; None for no token, a forged or stale one."""
    if not token:
        return None
    try:
        subscriber, _ = lifecycle.from_token(db, web.secret, token, Purpose.READ, now=web.clock())
    except InvalidToken:
        return None
    if subscriber.status != SubscriberStatus.ACTIVE or suppression.is_erased(subscriber):
        return None
    return subscriber


def _restricted(response: Response) -> Response:
    response.headers.update(RESTRICTED)
    return response


def _gate(web: WebContext, request: Request, db: Session, token: str) -> Response | None:
    """None when the visitor may read; else the refusal page (the same for every cause)."""
    visibility = web.settings.archive.visibility
    if visibility == "public" or (visibility == "subscribers" and reader(web, db, token)):
        return None
    return _restricted(
        page(web, request, "archive_restricted.html.j2", status=403, staff=visibility == "staff")
    )


@router.get("/archive", response_model=None)
def archive(request: Request, web: Web, db: Db, r: str = "") -> Response:
    refused = _gate(web, request, db, r)
    if refused is not None:
        return refused
    chrome = chrome_for("zh")
    issues = [
        {"slug": i.slug, "publication": i.publication, "title_en": i.title_en, "date": i.date,
         "label": f"{i.year}年第{i.number}期", "label_en": f"{i.year} No. {i.number}"}
        for i in published_issues(db)
    ]  # fmt: skip
    public = web.settings.archive.visibility == "public"
    listing = page(
        web, request, "archive.html.j2", issues=issues, toc=chrome.toc, token="" if public else r,
        feed=public,
    )  # fmt: skip
    return listing if public else _restricted(listing)


@router.get("/archive/feed.atom", response_model=None)
def feed(web: Web, db: Db) -> Response:
    # A per-reader feed would put a read token into every feed reader's log: public only.
    if web.settings.archive.visibility != "public":
        raise NotFoundError("feed", "feed.atom")
    xml = atom_feed(web.settings.base_url, web.settings.sender.name, published_issues(db))
    return Response(xml, media_type="application/atom+xml; charset=utf-8")


@router.get("/archive/{slug}", response_model=None)
def archive_issue(
    slug: str, request: Request, web: Web, db: Db, lang: str = "zh", r: str = ""
) -> Response:
    refused = _gate(web, request, db, r)
    if refused is not None:
        return refused
    language = lang if lang in LANGUAGES else "zh"
    shown = HTMLResponse(_issue_html(web, db, slug, language))
    return shown if web.settings.archive.visibility == "public" else _restricted(shown)


def _updated(record: IssueRecord) -> dt.datetime:
    if record.date is not None:
        return dt.datetime.combine(record.date, dt.time(), dt.UTC)
    stamp = record.imported_at
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def atom_feed(base_url: str, title: str, records: list[IssueRecord]) -> bytes:
    """An Atom 1.0 feed (RFC 4287) of the sent issues, newest first (pure)."""
    ET.register_namespace("", ATOM)

    def add(parent: ET.Element, tag: str, text: str = "", **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text:
            element.text = text
        return element

    home = f"{base_url.rstrip('/')}/archive"
    root = ET.Element(f"{{{ATOM}}}feed", {"xml:lang": "zh-CN"})
    add(root, "id", f"{home}/feed.atom")
    add(root, "title", title)
    stamps = [_updated(r) for r in records]
    newest = max(stamps, default=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    add(root, "updated", newest.isoformat())
    add(add(root, "author"), "name", title)
    add(root, "link", rel="self", href=f"{home}/feed.atom", type="application/atom+xml")
    add(root, "link", rel="alternate", href=home, type="text/html")
    for record, stamp in zip(records, stamps, strict=True):
        entry = add(root, "entry")
        url = archive_url(base_url, record.slug)
        add(entry, "id", url)
        add(entry, "title", f"{record.publication} {record.year}年第{record.number}期")
        add(entry, "updated", stamp.isoformat())
        add(entry, "link", rel="alternate", href=url, type="text/html")
        if record.title_en:
            add(entry, "summary", f"{record.title_en} {record.year} No. {record.number}")
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
