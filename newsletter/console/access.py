"""Who is signed in, and the refusal a page gives someone whose role does not allow it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from newsletter.console.context import console, see_other
from newsletter.roles import Permission
from newsletter.services import logins
from newsletter.services.logins import Who

FORBIDDEN = "你的角色不能执行此操作。Your role does not allow this."


def signed_in(request: Request) -> Who | Response:
    """The signed-in staff member, or the redirect to the login page."""
    ctx = console(request)
    who = logins.who(ctx.settings, ctx.session_token(request), now=ctx.clock(), db=ctx.engine)
    return who if who is not None else see_other("/admin/login")


def refused(request: Request, message: str = FORBIDDEN, status: int = 403) -> Response:
    return console(request).page(
        request, "error.html.j2", {"status": status, "message": message}, status=status
    )


def allowed(request: Request, permission: Permission) -> Who | Response:
    """The staff member when their grants hold `permission` (for some mission), else a refusal."""
    who = signed_in(request)
    if isinstance(who, Who) and not who.can(permission):
        return refused(request)
    return who
