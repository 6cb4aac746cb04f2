"""My account: the console language toggle (Chinese first, English on request), kept per person."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from newsletter.console.access import refused, signed_in
from newsletter.console.context import console, see_other
from newsletter.roles import StaffError
from newsletter.services import staff

router = APIRouter(prefix="/admin/account")

TextField = Annotated[str, Form(max_length=400)]


def _back(path: str) -> str:
    """Only a console page of this host: never `//elsewhere` nor a full URL."""
    if path.startswith("/admin") and not path.startswith("//") and "\\" not in path:
        return path
    return "/admin"


@router.post("/locale")
def set_locale(
    request: Request, locale: TextField = "", next: TextField = "/admin", csrf: TextField = ""
) -> Response:
    ctx = console(request)
    who = signed_in(request)
    if isinstance(who, Response):
        return who
    ctx.check_form(request, csrf, "locale", who.session_id)
    try:
        staff.set_locale(
            ctx.settings, who.email, locale, actor=who.actor, ip=ctx.client(request).ip,
            db=ctx.engine,
        )  # fmt: skip
    except StaffError as exc:
        return refused(request, str(exc), status=400)
    return see_other(_back(next))
