"""`GET /archive` and `GET /archive/{slug}`: the whole, untailored web version of sent issues."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from newsletter import directory
from newsletter.db import Session
from newsletter.errors import NotFoundError
from newsletter.issues import StoredIssueError, get_issue, published_issues
from newsletter.render.digest import DigestLinks
from newsletter.render.labels import chrome_for
from newsletter.render.web import render_issue_page
from newsletter.subscriptions.lists import LANGUAGES
from newsletter.web.context import Db, Web, WebContext, page

router = APIRouter()
log = logging.getLogger("newsletter.web")


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


@router.get("/archive")
def archive(request: Request, web: Web, db: Db) -> HTMLResponse:
    chrome = chrome_for("zh")
    issues = [
        {"slug": r.slug, "publication": r.publication, "title_en": r.title_en, "date": r.date,
         "label": f"{r.year}年第{r.number}期", "label_en": f"{r.year} No. {r.number}"}
        for r in published_issues(db)
    ]  # fmt: skip
    return page(web, request, "archive.html.j2", issues=issues, toc=chrome.toc)


@router.get("/archive/{slug}")
def archive_issue(slug: str, web: Web, db: Db, lang: str = "zh") -> HTMLResponse:
    language = lang if lang in LANGUAGES else "zh"
    return HTMLResponse(_issue_html(web, db, slug, language))
