"""The campaign half of the editorial flow: the wizard, the approvals queue (签发), step-up, the
campaign page with its controls and the recipients ledger with a formula-safe CSV export.

Every page is a server-rendered GET; every change a POST with a CSRF token bound to the
session, answered by a 303 to a page (so a reload never repeats it). Permissions are the
CONSOLE table's (`roles.TABLE`); reports take the signed-in person's `Scope`, so a liaison sees
only their own missions' rows and counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from collections.abc import Iterator, Mapping
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from newsletter.console.context import console, see_other
from newsletter.delivery.campaigns import CampaignSummary, LedgerRow
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.render.environment import default_templates_dir
from newsletter.roles import Permission
from newsletter.scheduling.plans import BEIJING
from newsletter.scheduling.rules import in_local_time
from newsletter.services import (
    approvals,
    campaign_desk,
    campaigns,
    issues,
    logins,
    scheduling,
    send_plans,
)
from newsletter.services.approvals import ScheduleSpec
from newsletter.services.campaign_desk import Control
from newsletter.services.logins import Outcome, Who
from newsletter.services.step_up import step_up
from newsletter.subscriptions.lists import unformula

router = APIRouter(prefix="/admin")

TextField = Annotated[str, Form(max_length=400)]
LongField = Annotated[str, Form(max_length=2000)]
FORBIDDEN = "你的角色不能执行此操作。Your role does not allow this."
NO_CAMPAIGN = "没有这个发送任务。No such campaign."
WRONG_CODE = "验证码不正确或已用过。The code is wrong or was already used."
THROTTLED = "尝试次数过多，请 15 分钟后再试。Too many attempts: try again in 15 minutes."
# Ledger states in the order a reader follows a send.
STATES = ("queued", "sending", "retry", "sent", "failed", "unknown", "skipped")
STATE_LABELS: Mapping[str, str] = {
    "queued": "排队 Queued", "sending": "发送中 Sending", "retry": "重试 Retry",
    "sent": "已送达 Sent", "failed": "失败 Failed", "unknown": "未知 Unknown",
    "skipped": "跳过 Skipped",
}  # fmt: skip
REQUEST_LABELS: Mapping[str, str] = {
    "requested": "待签发 Waiting", "approved": "已签发 Approved", "rejected": "已驳回 Rejected",
    "cancelled": "已撤回 Withdrawn", "void": "已失效 Void (issue changed)",
}  # fmt: skip


# --- who may ----------------------------------------------------------------------------------


def _refused(request: Request, message: str = FORBIDDEN, status: int = 403) -> Response:
    return console(request).page(
        request, "error.html.j2", {"status": status, "message": message}, status=status
    )


def _who(request: Request, *permissions: Permission) -> Who | Response:
    """The signed-in person holding one of `permissions`; else the login page or a refusal."""
    ctx = console(request)
    who = logins.who(ctx.settings, ctx.session_token(request), now=ctx.clock(), db=ctx.engine)
    if who is None:
        return see_other("/admin/login")
    if permissions and not any(who.can(p) for p in permissions):
        return _refused(request)
    return who


def _check(request: Request, who: Who, csrf: str, form: str) -> None:
    console(request).check_form(request, csrf, form, who.session_id)


def _step_up_first(request: Request, who: Who, back: str) -> Response | None:
    """The code page when the second factor is older than 10 minutes (CONSOLE section 2)."""
    if who.stepped_up(console(request).clock()):
        return None
    return see_other("/admin/stepup?" + urlencode({"next": back}))


def _client(request: Request) -> logins.Client:
    return console(request).client(request)


def _times(utc: dt.datetime, timezone: str) -> dict[str, str]:
    """A planned instant as staff read it: Beijing and the mission's own clock."""
    local = in_local_time(utc, timezone)
    beijing = in_local_time(utc, BEIJING)
    return {
        "beijing": beijing.strftime("%Y-%m-%d %H:%M"),
        "local": local.strftime("%Y-%m-%d %H:%M ") + local.strftime("%z")[:3] + ":"
        + local.strftime("%z")[3:],
        "timezone": timezone,
    }  # fmt: skip


# --- the wizard -------------------------------------------------------------------------------


def _spec_from(
    request: Request, kind: str, local: str, date: str, working_days: str, at: str
) -> ScheduleSpec:
    settings = console(request).settings
    if kind == approvals.AT:
        return approvals.schedule_spec(settings, at=at.strip())
    if kind == approvals.LOCAL:
        return approvals.schedule_spec(
            settings, local=local.strip() or None, date=date.strip() or None,
            working_days=bool(working_days),
        )  # fmt: skip
    return approvals.schedule_spec(settings, now=True)


def _wizard(
    request: Request, who: Who, slug: str, chosen: Mapping[str, str], *, error: str = "",
    status: int = 200,
) -> Response:  # fmt: skip
    ctx = console(request)
    values: dict[str, object] = {
        "slug": slug, "chosen": chosen, "error": error, "audience": None, "plans": None,
        "spec": None,
    }  # fmt: skip
    try:
        values["audience"] = send_plans.plan_send(
            ctx.settings, slug, actor=who.actor, scope=who.scope(Permission.REQUEST_CAMPAIGN),
            db=ctx.engine,
        )  # fmt: skip
    except NotFoundError:
        return _refused(request, "没有这一期。No such issue.", 404)
    if chosen.get("kind") and not error:
        try:
            spec = _spec_from(request, chosen["kind"], chosen.get("local", ""),
                              chosen.get("date", ""), chosen.get("working_days", ""),
                              chosen.get("at", ""))  # fmt: skip
            values["spec"] = spec
            if spec.kind != approvals.NOW:
                slots = scheduling.preview_issue(
                    ctx.settings, slug, spec.when(ctx.settings), db=ctx.engine, now=ctx.clock()
                )
                values["plans"] = [
                    {**_times(s.utc, s.timezone), "missions": s.missions,
                     "recipients": s.recipients, "moved": s.moved}
                    for s in slots
                ]  # fmt: skip
        except NewsletterError as exc:
            values["error"], values["spec"], status = str(exc), None, 400
    return ctx.page(
        request, "campaign_new.html.j2", values, form="campaign-request",
        session=who.session_id, status=status,
    )  # fmt: skip


@router.get("/campaigns/new")
def campaign_new(
    request: Request, issue: str = "", kind: str = "", local: str = "", date: str = "",
    working_days: str = "", at: str = "",
) -> Response:  # fmt: skip
    who = _who(request, Permission.REQUEST_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    if not issue:
        return _refused(request, "请从期刊页选择一期。Choose an issue first (from its page).", 400)
    chosen = {"kind": kind, "local": local, "date": date, "working_days": working_days, "at": at}
    return _wizard(request, who, issue, chosen)


@router.post("/campaigns/new")
def campaign_request(
    request: Request, issue: TextField = "", kind: TextField = "", local: TextField = "",
    date: TextField = "", working_days: TextField = "", at: TextField = "",
    csrf: TextField = "",
) -> Response:  # fmt: skip
    who = _who(request, Permission.REQUEST_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    _check(request, who, csrf, "campaign-request")
    ctx = console(request)
    chosen = {"kind": kind, "local": local, "date": date, "working_days": working_days, "at": at}
    try:
        spec = _spec_from(request, kind, local, date, working_days, at)
        made = approvals.request_campaign(
            ctx.settings, issue, spec, actor=who.actor, ip=_client(request).ip, db=ctx.engine
        )
    except NotFoundError:
        return _refused(request, "没有这一期。No such issue.", 404)
    except NewsletterError as exc:
        return _wizard(request, who, issue, chosen, error=str(exc), status=400)
    return see_other(f"/admin/approvals#request-{made.id}")


# --- approvals and step-up --------------------------------------------------------------------


def _queue(request: Request, who: Who, *, error: str = "", status: int = 200) -> Response:
    ctx = console(request)
    views = approvals.list_requests(ctx.settings, db=ctx.engine)
    waiting = [v for v in views if v.state == "requested"]
    decided = [v for v in views if v.state != "requested"][:30]
    values = {
        "who": who, "waiting": waiting, "decided": decided, "error": error,
        "labels": REQUEST_LABELS, "may_approve": who.can(Permission.APPROVE_CAMPAIGN),
        "may_override": who.can(Permission.ADMINISTER),
        "stepped_up": who.stepped_up(ctx.clock()), "me": who.actor.label,
        "may_request": who.can(Permission.REQUEST_CAMPAIGN),
        "issues": [i.slug for i in issues.list_summaries(ctx.settings, db=ctx.engine)
                   if i.items is not None],
    }  # fmt: skip
    return ctx.page(request, "approvals.html.j2", values, form="approvals",
                    session=who.session_id, status=status)  # fmt: skip


@router.get("/approvals")
def approvals_queue(request: Request) -> Response:
    who = _who(request, Permission.REQUEST_CAMPAIGN, Permission.APPROVE_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    return _queue(request, who)


@router.post("/approvals/{request_id}/approve")
def approve(
    request: Request, request_id: int, comment: LongField = "", override: LongField = "",
    csrf: TextField = "",
) -> Response:  # fmt: skip
    who = _who(request, Permission.APPROVE_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    _check(request, who, csrf, "approvals")
    first = _step_up_first(request, who, "/admin/approvals")
    if first is not None:
        return first
    ctx = console(request)
    # Only an administrator may sign off alone (CONSOLE table: "override with reason").
    reason = override if who.can(Permission.ADMINISTER) else ""
    try:
        done = approvals.approve(
            ctx.settings, request_id, actor=who.actor, comment=comment, override=reason,
            ip=_client(request).ip, db=ctx.engine, now=ctx.clock(),
        )  # fmt: skip
    except NewsletterError as exc:
        return _queue(request, who, error=str(exc), status=409)
    return see_other(f"/admin/campaigns/{done.campaign}")


@router.post("/approvals/{request_id}/reject")
def reject(
    request: Request, request_id: int, comment: LongField = "", csrf: TextField = ""
) -> Response:
    who = _who(request, Permission.APPROVE_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    _check(request, who, csrf, "approvals")
    ctx = console(request)
    try:
        approvals.reject(ctx.settings, request_id, actor=who.actor, comment=comment,
                         ip=_client(request).ip, db=ctx.engine)  # fmt: skip
    except NewsletterError as exc:
        return _queue(request, who, error=str(exc), status=409)
    return see_other("/admin/approvals")


@router.post("/approvals/{request_id}/withdraw")
def withdraw(request: Request, request_id: int, csrf: TextField = "") -> Response:
    who = _who(request, Permission.REQUEST_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    _check(request, who, csrf, "approvals")
    ctx = console(request)
    try:
        approvals.withdraw(ctx.settings, request_id, actor=who.actor, ip=_client(request).ip,
                           db=ctx.engine)  # fmt: skip
    except NewsletterError as exc:
        return _queue(request, who, error=str(exc), status=409)
    return see_other("/admin/approvals")


def _safe_next(target: str) -> str:
    # Only a console path: never an open redirect to another host (`//evil`, `/\evil`).
    ok = target.startswith("/admin") and not target.startswith(("//", "/\\"))
    return target if ok and "\\" not in target else "/admin"


def _stepup_page(request: Request, who: Who, back: str, error: str = "", status: int = 200
                 ) -> Response:  # fmt: skip
    return console(request).page(
        request, "stepup.html.j2", {"next": _safe_next(back), "error": error, "email": who.email},
        form="stepup", session=who.session_id, status=status,
    )  # fmt: skip


@router.get("/stepup")
def stepup_form(request: Request, next: str = "/admin") -> Response:
    who = _who(request)
    if not isinstance(who, Who):
        return who
    return _stepup_page(request, who, next)


@router.post("/stepup")
def stepup(
    request: Request, code: TextField = "", next: TextField = "/admin", csrf: TextField = ""
) -> Response:
    who = _who(request)
    if not isinstance(who, Who):
        return who
    _check(request, who, csrf, "stepup")
    ctx = console(request)
    outcome = step_up(ctx.settings, ctx.session_token(request), code.strip(), _client(request),
                      now=ctx.clock(), db=ctx.engine)  # fmt: skip
    if outcome == Outcome.OK:
        return see_other(_safe_next(next))
    throttled = outcome == Outcome.THROTTLED
    return _stepup_page(request, who, next, THROTTLED if throttled else WRONG_CODE,
                        429 if throttled else 401)  # fmt: skip


# --- the campaign page ------------------------------------------------------------------------


def _counted(
    summary: CampaignSummary, rows: tuple[LedgerRow, ...], whole: bool
) -> list[dict[str, object]]:
    """Rows per ledger state, with the share of the total (the bar); scoped unless `whole`."""
    per: dict[str, int] = dict(summary.counts) if whole else {}
    if not whole:
        for row in rows:
            per[row.state] = per.get(row.state, 0) + 1
    total = sum(per.get(s, 0) for s in STATES)
    return [
        {"state": s, "label": STATE_LABELS[s], "count": per.get(s, 0), "total": total}
        for s in STATES
    ]


def _campaign(request: Request, who: Who, campaign_id: int) -> dict[str, object] | None:
    ctx = console(request)
    scope = who.scope(Permission.REPORTS)
    try:
        report = campaigns.campaign_report(ctx.settings, campaign_id, scope=scope, db=ctx.engine)
    except NotFoundError:
        return None
    whole = scope.missions is None
    summary = report.summary
    plans = []
    if whole:  # a plan spans missions: a liaison reads their missions' rows instead
        for plan in scheduling.list_plans(ctx.settings, db=ctx.engine, now=ctx.clock()):
            if plan.campaign == campaign_id:
                plans.append({**_times(plan.next_run_utc, plan.timezone), "id": plan.id,
                              "state": plan.state, "recipients": plan.recipients,
                              "sent": plan.sent, "missed": plan.missed, "waiting": plan.waiting,
                              "moved": plan.moved or plan.reason})  # fmt: skip
    by_mission = [
        {"mission": mission, **{s: per.get(s, 0) for s in STATES}}
        for mission, per in sorted(report.by_embassy.items())
    ]
    counts = _counted(summary, report.recipients, whole)
    signed = approvals.request_for_campaign(ctx.settings, campaign_id, db=ctx.engine)
    return {
        "summary": summary, "counts": counts, "plans": plans, "by_mission": by_mission,
        "whole": whole, "signed": signed, "labels": REQUEST_LABELS, "states": STATES,
        "state_labels": STATE_LABELS,
        "unknown": next(c["count"] for c in counts if c["state"] == "unknown"),
        "missed": sum(1 for r in report.recipients if r.skip_reason == "missed_window"),
        "may_control": who.can(Permission.CONTROL_CAMPAIGN),
    }  # fmt: skip


def _campaign_page(request: Request, who: Who, campaign_id: int, *, error: str = "",
                   status: int = 200) -> Response:  # fmt: skip
    values = _campaign(request, who, campaign_id)
    if values is None:
        return _refused(request, NO_CAMPAIGN, 404)
    values["error"] = error
    return console(request).page(request, "campaign.html.j2", values, form="campaign",
                                 session=who.session_id, status=status)  # fmt: skip


@router.get("/campaigns/{campaign_id}")
def campaign_page(request: Request, campaign_id: int) -> Response:
    who = _who(request, Permission.REPORTS)
    if not isinstance(who, Who):
        return who
    return _campaign_page(request, who, campaign_id)


@router.get("/campaigns/{campaign_id}/cancel")
def cancel_confirm(request: Request, campaign_id: int) -> Response:
    who = _who(request, Permission.CONTROL_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    values = _campaign(request, who, campaign_id)
    if values is None:
        return _refused(request, NO_CAMPAIGN, 404)
    return console(request).page(request, "campaign_cancel.html.j2", values, form="campaign",
                                 session=who.session_id)  # fmt: skip


@router.post("/campaigns/{campaign_id}/{action}")
def control(request: Request, campaign_id: int, action: str, csrf: TextField = "") -> Response:
    who = _who(request, Permission.CONTROL_CAMPAIGN)
    if not isinstance(who, Who):
        return who
    try:
        what = Control(action)
    except ValueError:
        return _refused(request, "不支持此操作。This page does not take that method.", 404)
    _check(request, who, csrf, "campaign")
    back = f"/admin/campaigns/{campaign_id}"
    if what.sends:
        first = _step_up_first(request, who, back)
        if first is not None:
            return first
    ctx = console(request)
    try:
        campaign_desk.control(ctx.settings, campaign_id, what, actor=who.actor,
                              ip=_client(request).ip, db=ctx.engine)  # fmt: skip
    except NotFoundError:
        return _refused(request, NO_CAMPAIGN, 404)
    except NewsletterError as exc:
        return _campaign_page(request, who, campaign_id, error=str(exc), status=409)
    return see_other(back)


# Live progress (SSE): counts every 2 s while the campaign is under way; the page works without.
EVERY = 2.0
# A stream ends after this long; the browser's EventSource opens a new one by itself.
STREAM_FOR = dt.timedelta(minutes=10)
SCRIPT = default_templates_dir() / "admin" / "campaign.js"
_UNDER_WAY = ("scheduled", "sending", "paused")


def _progress(request: Request, who: Who, campaign_id: int) -> dict[str, object] | None:
    ctx = console(request)
    scope = who.scope(Permission.REPORTS)
    try:
        report = campaigns.campaign_report(ctx.settings, campaign_id, scope=scope, db=ctx.engine)
    except NotFoundError:
        return None
    counted = _counted(report.summary, report.recipients, scope.missions is None)
    return {
        "state": report.summary.state, "done": report.summary.state not in _UNDER_WAY,
        "counts": {str(c["state"]): c["count"] for c in counted},
        "total": counted[0]["total"] if counted else 0,
    }  # fmt: skip


@router.get("/campaigns/{campaign_id}/events")
def campaign_events(request: Request, campaign_id: int) -> Response:
    who = _who(request, Permission.REPORTS)
    if not isinstance(who, Who):
        return who
    first = _progress(request, who, campaign_id)
    if first is None:
        return _refused(request, NO_CAMPAIGN, 404)

    def stream() -> Iterator[str]:
        until = time.monotonic() + STREAM_FOR.total_seconds()
        sent: dict[str, object] | None = first
        while sent is not None:
            yield f"data: {json.dumps(sent, ensure_ascii=False)}\n\n"
            if sent["done"] or time.monotonic() >= until:
                return
            time.sleep(EVERY)  # the pace of the stream itself, not a wait for a condition
            # A session that ended (logout, idle, revoked) ends its stream too.
            still = _who(request, Permission.REPORTS)
            sent = _progress(request, still, campaign_id) if isinstance(still, Who) else None

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/static/campaign.js")
def campaign_script() -> Response:
    return FileResponse(SCRIPT, media_type="text/javascript; charset=utf-8")


# --- the recipients ledger --------------------------------------------------------------------


def _ledger(
    request: Request, who: Who, campaign_id: int, state: str, mission: str
) -> tuple[CampaignSummary, list[LedgerRow], list[str]] | None:
    ctx = console(request)
    try:
        report = campaigns.campaign_report(
            ctx.settings, campaign_id, scope=who.scope(Permission.REPORTS), db=ctx.engine
        )
    except NotFoundError:
        return None
    missions = sorted({r.embassy for r in report.recipients})
    rows = [
        r for r in report.recipients
        if (not state or r.state == state) and (not mission or r.embassy == mission)
    ]  # fmt: skip
    return report.summary, rows, missions


@router.get("/campaigns/{campaign_id}/recipients")
def recipients(request: Request, campaign_id: int, state: str = "", mission: str = "") -> Response:
    who = _who(request, Permission.REPORTS)
    if not isinstance(who, Who):
        return who
    found = _ledger(request, who, campaign_id, state, mission)
    if found is None:
        return _refused(request, NO_CAMPAIGN, 404)
    summary, rows, missions = found
    query = urlencode({k: v for k, v in (("state", state), ("mission", mission)) if v})
    values = {
        "summary": summary, "rows": rows, "missions": missions, "state": state,
        "mission": mission, "states": STATES, "state_labels": STATE_LABELS,
        "csv": f"/admin/campaigns/{campaign_id}/recipients.csv" + (f"?{query}" if query else ""),
    }  # fmt: skip
    return console(request).page(request, "campaign_recipients.html.j2", values)


def csv_text(rows: list[LedgerRow]) -> str:
    """The ledger as CSV; a cell starting = + - @ is prefixed with ' so no spreadsheet runs it."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["email", "mission", "state", "attempts", "reply", "sent_at", "message_id"])
    for r in rows:
        sent = r.sent_at.isoformat() if r.sent_at else ""
        cells = [r.email, r.embassy, r.state, str(r.attempts), r.reply, sent, r.message_id]
        writer.writerow([unformula(c) for c in cells])
    return handle.getvalue()


@router.get("/campaigns/{campaign_id}/recipients.csv")
def recipients_csv(
    request: Request, campaign_id: int, state: str = "", mission: str = ""
) -> Response:
    who = _who(request, Permission.REPORTS)
    if not isinstance(who, Who):
        return who
    found = _ledger(request, who, campaign_id, state, mission)
    if found is None:
        return _refused(request, NO_CAMPAIGN, 404)
    _summary, rows, _missions = found
    # A BOM, so Excel on Chinese Windows reads the UTF-8 as UTF-8.
    body = "\ufeff" + csv_text(rows)
    name = f"campaign-{campaign_id}-recipients.csv"
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})  # fmt: skip
