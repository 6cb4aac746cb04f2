"""The preview of an issue as one reader gets it, the "why" panel, the `.eml`, and the test send.

Everything the preview shows is chosen by the query string (who, width, tab), so every control
is a link or a GET form and works without JavaScript; only the test send is a POST (then 303).
The digest is a document of its own (`preview.html`) in `<iframe sandbox src>` with no
`allow-scripts`: a script in an issue can never run in the console. Not `srcdoc`: a srcdoc frame
inherits the console's CSP, which refuses the digest's inline styles, so the preview would not
look like the mail; the framed document gets a CSP of its own (`security.FRAME_CSP`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from newsletter import roles
from newsletter.console.access import allowed, refused, signed_in
from newsletter.console.context import console, see_other
from newsletter.console.security import FRAME_MARK
from newsletter.errors import DeliveryError, NewsletterError, NotFoundError
from newsletter.roles import Access, Permission
from newsletter.services import previews, test_sends
from newsletter.services.logins import Who

router = APIRouter(prefix="/admin/issues")

WIDTHS = ("360", "390", "600", "full")
TABS = ("html", "text", "headers")
NOBODY = "在你的使馆范围内没有此订阅者。No such subscriber in your missions."
NO_ISSUE = "没有这一期。No such issue."
TextField = Annotated[str, Form(max_length=400)]
Param = Annotated[str, Query(max_length=400)]
Sectors = Annotated[list[str] | None, Query(max_length=400)]
FormSectors = Annotated[list[str] | None, Form(max_length=400)]


def _who_params(
    subscriber: str, mission: str, sectors: list[str], language: str
) -> list[tuple[str, str]]:
    """The query string that names the reader: a subscriber, or the synthetic audience."""
    if subscriber:
        return [("subscriber", subscriber)]
    params = [("mission", mission)] if mission else []
    params += [("sectors", code) for code in sectors]
    return [*params, ("language", language or "zh")]


def _audience(mission: str, sectors: list[str], language: str) -> previews.Audience:
    return previews.Audience(mission.strip(), tuple(s for s in sectors if s), language or "zh")


def _can_test_send(who: Who) -> bool:
    # A liaison holds it for themselves (Access.SELF): their own address is all this form offers.
    return roles.access(who.grants, Permission.TEST_SEND) != Access.NONE


@router.get("/{slug}/preview")
def preview(
    request: Request,
    slug: str,
    subscriber: Param = "",
    q: Param = "",
    mission: Param = "",
    sectors: Sectors = None,
    language: Param = "zh",
    width: Param = "390",
    tab: Param = "html",
    sent: Param = "",
) -> Response:
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    scope = who.scope(Permission.READ_ISSUES)
    chosen = [s for s in sectors or [] if s]
    params = _who_params(subscriber.strip(), mission, chosen, language)
    width = width if width in WIDTHS else "390"
    tab = tab if tab in TABS else "html"
    error, status, rendering = "", 200, None
    try:
        rendering = previews.render_preview(
            ctx.settings, slug, scope=scope, subscriber=subscriber.strip() or None,
            audience=_audience(mission, chosen, language), db=ctx.engine,
        )  # fmt: skip
    except NotFoundError as exc:
        if exc.kind == "issue":
            return refused(request, NO_ISSUE, 404)
        error, status = (NOBODY if exc.kind == "subscriber" else str(exc)), 404
    except NewsletterError as exc:  # a stored issue that no longer loads, a bad audience
        error, status = str(exc), 422
    values = {
        "who": who, "slug": slug, "rendering": rendering, "error": error,
        "choices": previews.audience_choices(ctx.settings, scope=scope, db=ctx.engine),
        "found": previews.find_subscribers(ctx.settings, q, scope=scope, db=ctx.engine),
        "q": q, "subscriber": subscriber.strip(), "mission": mission, "sectors": chosen,
        "language": language, "width": width, "tab": tab, "widths": WIDTHS, "params": params,
        "link": lambda **change: _link(slug, params, {"width": width, "tab": tab, **change}),
        "eml": f"/admin/issues/{slug}/preview.eml?{urlencode(params)}",
        "frame": f"/admin/issues/{slug}/preview.html?{urlencode(params)}",
        "clip": previews.GMAIL_CLIP, "can_test_send": _can_test_send(who),
        "sent": sent == "1",
    }  # fmt: skip
    return ctx.page(
        request, "preview.html.j2", values, form="test-send", session=who.session_id,
        status=status,
    )  # fmt: skip


def _link(slug: str, params: list[tuple[str, str]], view: dict[str, str]) -> str:
    return f"/admin/issues/{slug}/preview?{urlencode([*params, *view.items()])}"


def _rendered(
    request: Request,
    slug: str,
    subscriber: str,
    mission: str,
    sectors: list[str] | None,
    language: str,
) -> previews.Rendering | Response:
    """The preview the query names, or the page that refuses it (no such issue or reader)."""
    ctx = console(request)
    who = allowed(request, Permission.READ_ISSUES)
    if not isinstance(who, Who):
        return who
    try:
        return previews.render_preview(
            ctx.settings, slug, scope=who.scope(Permission.READ_ISSUES),
            subscriber=subscriber.strip() or None,
            audience=_audience(mission, [s for s in sectors or [] if s], language),
            db=ctx.engine,
        )  # fmt: skip
    except NotFoundError as exc:
        return refused(request, NO_ISSUE if exc.kind == "issue" else NOBODY, 404)
    except NewsletterError as exc:
        return refused(request, str(exc), 422)


@router.get("/{slug}/preview.html")
def preview_frame(
    request: Request,
    slug: str,
    subscriber: Param = "",
    mission: Param = "",
    sectors: Sectors = None,
    language: Param = "zh",
) -> Response:
    """The digest's HTML alone, for the preview page's frame, under `FRAME_CSP`."""
    rendering = _rendered(request, slug, subscriber, mission, sectors, language)
    if isinstance(rendering, Response):
        return rendering
    return Response(
        rendering.html, media_type="text/html; charset=utf-8",
        headers={FRAME_MARK.decode(): "1"},
    )  # fmt: skip


@router.get("/{slug}/preview.eml")
def preview_eml(
    request: Request,
    slug: str,
    subscriber: Param = "",
    mission: Param = "",
    sectors: Sectors = None,
    language: Param = "zh",
) -> Response:
    rendering = _rendered(request, slug, subscriber, mission, sectors, language)
    if isinstance(rendering, Response):
        return rendering
    return Response(
        rendering.eml, media_type="message/rfc822",
        headers={"content-disposition": f'attachment; filename="{slug}-preview.eml"'},
    )  # fmt: skip


@router.post("/{slug}/test-send")
def test_send(
    request: Request,
    slug: str,
    csrf: TextField = "",
    subscriber: TextField = "",
    mission: TextField = "",
    sectors: FormSectors = None,
    language: TextField = "zh",
) -> Response:
    ctx = console(request)
    who = signed_in(request)
    if not isinstance(who, Who):
        return who
    ctx.check_form(request, csrf, "test-send", who.session_id)
    if not _can_test_send(who):
        return refused(request)
    chosen = [s for s in sectors or [] if s]
    try:
        test_sends.send_test(
            ctx.settings, slug, who.email, actor=who.actor,
            scope=who.scope(Permission.TEST_SEND), as_email=subscriber.strip() or None,
            audience=None if subscriber.strip() else _audience(mission, chosen, language),
            db=ctx.engine,
        )  # fmt: skip
    except NotFoundError as exc:
        return refused(request, NO_ISSUE if exc.kind == "issue" else NOBODY, 404)
    except DeliveryError as exc:
        return refused(request, f"测试邮件未能发出。The test mail was not sent: {exc}", 502)
    except NewsletterError as exc:
        return refused(request, str(exc), 422)
    params = _who_params(subscriber.strip(), mission, chosen, language)
    return see_other(f"/admin/issues/{slug}/preview?{urlencode([*params, ('sent', '1')])}")
