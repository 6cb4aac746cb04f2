"""Login (password, then code), logout and the dashboard: POST, 303, GET, no script."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Form, Request
from markupsafe import Markup
from starlette.responses import Response

from newsletter import credentials
from newsletter.console.context import console, see_other
from newsletter.roles import ALL_MISSIONS, Access, Permission, Role, access
from newsletter.scheduling.plans import BEIJING
from newsletter.scheduling.rules import in_local_time
from newsletter.services import approvals, audit_search, logins
from newsletter.services import dashboard as dashboards
from newsletter.services.logins import Outcome

router = APIRouter(prefix="/admin")

WRONG_LOGIN = "邮箱或密码不正确。Wrong e-mail address or password."
WRONG_CODE = "验证码不正确或已用过。The code is wrong or was already used."
THROTTLED = "尝试次数过多，请 15 分钟后再试。Too many attempts: try again in 15 minutes."
TextField = Annotated[str, Form(max_length=400)]


@router.get("")
def dashboard(request: Request) -> Response:
    """What is coming, under way and waiting for someone, within the reader's missions."""
    ctx = console(request)
    who = logins.who(ctx.settings, ctx.session_token(request), now=ctx.clock(), db=ctx.engine)
    if who is None:
        return see_other("/admin/login")
    roles = list(dict.fromkeys(g.role for g in who.grants))
    missions = list(dict.fromkeys(g.mission for g in who.grants))
    now = ctx.clock()
    seen = dashboards.dashboard(ctx.settings, who.scope(Permission.REPORTS), now=now, db=ctx.engine)
    waiting = []
    if who.can(Permission.APPROVE_CAMPAIGN) or who.can(Permission.REQUEST_CAMPAIGN):
        waiting = approvals.list_requests(ctx.settings, states=("requested",), db=ctx.engine)
    activity = []
    if access(who.grants, Permission.AUDIT) != Access.NONE:
        latest = audit_search.search(
            ctx.settings, audit_search.AuditQuery(), audit_search.visibility(who.grants, who.email),
            db=ctx.engine,
        )  # fmt: skip
        activity = latest.events[:RECENT]
    values = {
        "who": who,
        "roles": [Role(r).label for r in roles],
        "missions": missions,
        "all_missions": ALL_MISSIONS in missions,
        "upcoming": [{**_two_clocks(u.fire_at, u.timezone), "plan": u} for u in seen.upcoming],
        "in_flight": seen.in_flight,
        "unknown": seen.unknown,
        "missed": [{**_two_clocks(m.fire_at, m.timezone), "plan": m} for m in seen.missed],
        "unread_missions": seen.unread_missions,
        "waiting": waiting,
        "activity": activity,
        "state_labels": STATE_LABELS,
        "campaign_labels": CAMPAIGN_LABELS,
    }
    return ctx.page(request, "dashboard.html.j2", values, form="logout", session=who.session_id)


RECENT = 10
STATE_LABELS = {
    "queued": "排队 Queued", "sending": "发送中 Sending", "retry": "重试 Retry",
    "sent": "已送达 Sent", "failed": "失败 Failed", "unknown": "未知 Unknown",
    "skipped": "跳过 Skipped",
}  # fmt: skip
CAMPAIGN_LABELS = {
    "scheduled": "已排期 Scheduled", "sending": "发送中 Sending", "paused": "已暂停 Paused",
}  # fmt: skip


def _two_clocks(utc: dt.datetime, timezone: str) -> dict[str, str]:
    """A planned instant as staff read it: Beijing, and the mission's own clock."""
    local = in_local_time(utc, timezone)
    return {
        "beijing": in_local_time(utc, BEIJING).strftime("%m-%d %H:%M"),
        "local": local.strftime("%m-%d %H:%M"),
        "timezone": timezone,
    }


@router.get("/login")
def login_form(request: Request) -> Response:
    ctx = console(request)
    if logins.who(ctx.settings, ctx.session_token(request), now=ctx.clock(), db=ctx.engine):
        return see_other("/admin")
    return ctx.page(request, "login.html.j2", {"error": "", "email": ""}, form="login")


@router.post("/login")
def login(
    request: Request, email: TextField = "", password: TextField = "", csrf: TextField = ""
) -> Response:
    ctx = console(request)
    ctx.check_form(request, csrf, "login")
    step = logins.begin(
        ctx.settings, email, password, ctx.client(request), now=ctx.clock(), db=ctx.engine
    )
    if step.outcome == Outcome.OK:
        response = see_other("/admin/login/code")
        ctx.set_session(request, response, step.token)
        return response
    throttled = step.outcome == Outcome.THROTTLED
    values = {"error": THROTTLED if throttled else WRONG_LOGIN, "email": email}
    return ctx.page(
        request, "login.html.j2", values, form="login", status=429 if throttled else 401
    )


def _code_page(request: Request, error: str = "", status: int = 200) -> Response:
    ctx = console(request)
    token = ctx.session_token(request)
    waiting = logins.pending(ctx.settings, token, now=ctx.clock(), db=ctx.engine)
    if waiting is None:
        return see_other("/admin/login")
    values: dict[str, object] = {"email": waiting.email, "error": error, "qr": "", "secret": ""}
    if waiting.enrol_uri:
        values["qr"] = Markup(credentials.qr_svg(waiting.enrol_uri))  # segno's own markup
        values["secret"] = _grouped(waiting.enrol_uri)
    session = credentials.token_hash(token)
    return ctx.page(request, "code.html.j2", values, form="code", session=session, status=status)


def _grouped(uri: str) -> str:
    secret = uri.split("secret=", 1)[1].split("&", 1)[0]
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@router.get("/login/code")
def code_form(request: Request) -> Response:
    return _code_page(request)


@router.post("/login/code")
def code(request: Request, code: TextField = "", csrf: TextField = "") -> Response:
    ctx = console(request)
    token = ctx.session_token(request)
    ctx.check_form(request, csrf, "code", credentials.token_hash(token) if token else "")
    step = logins.finish(
        ctx.settings, token, code, ctx.client(request), now=ctx.clock(), db=ctx.engine
    )
    response: Response
    if step.outcome == Outcome.OK:
        response = see_other("/admin")
        ctx.set_session(request, response, step.token)
        return response
    if step.outcome == Outcome.THROTTLED:
        response = ctx.page(
            request, "login.html.j2", {"error": THROTTLED, "email": ""}, form="login", status=429
        )
        ctx.clear_session(request, response)
        return response
    return _code_page(request, WRONG_CODE, status=401)


@router.post("/logout")
def logout(request: Request, csrf: TextField = "") -> Response:
    ctx = console(request)
    token = ctx.session_token(request)
    who = logins.who(ctx.settings, token, now=ctx.clock(), db=ctx.engine)
    if who is not None:  # an ended session has nothing left to end
        ctx.check_form(request, csrf, "logout", who.session_id)
        logins.logout(ctx.settings, token, ctx.client(request), now=ctx.clock(), db=ctx.engine)
    response = see_other("/admin/login")
    ctx.clear_session(request, response)
    return response
