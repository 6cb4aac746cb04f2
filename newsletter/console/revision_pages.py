"""An issue's revisions: the list of saved texts, and each one's unified diff with the one before."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from newsletter.console.access import allowed, refused
from newsletter.console.context import console
from newsletter.errors import NotFoundError
from newsletter.roles import Permission
from newsletter.services import issue_history
from newsletter.services.logins import Who

router = APIRouter(prefix="/admin/issues")

NOT_FOUND = "没有这一期或这一修订。No such issue or revision."


@router.get("/{slug}/revisions")
def revision_list(request: Request, slug: str) -> Response:
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    try:
        found = issue_history.revisions(ctx.settings, slug, db=ctx.engine)
    except NotFoundError:
        return refused(request, NOT_FOUND, status=404)
    return ctx.page(request, "revisions.html.j2", {"who": who, "slug": slug, "revisions": found})


@router.get("/{slug}/revisions/{number}")
def revision(request: Request, slug: str, number: int) -> Response:
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    try:
        diff = issue_history.revision_diff(ctx.settings, slug, number, db=ctx.engine)
    except NotFoundError:
        return refused(request, NOT_FOUND, status=404)
    return ctx.page(request, "revision.html.j2", {"who": who, "diff": diff})
