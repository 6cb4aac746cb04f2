"""The audit page: the chain's events filtered and paged, their CSV export, and a check of the
chain. Every route only reads: verifying walks the chain and changes nothing, so it is a GET."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from newsletter.console.access import refused, signed_in
from newsletter.console.context import console
from newsletter.roles import Access, Permission, access
from newsletter.services import audit
from newsletter.services.audit_search import AuditQuery, Visibility, export_csv, search, visibility
from newsletter.services.logins import Who

router = APIRouter(prefix="/admin")

BAD_DATE = "日期格式应为 YYYY-MM-DD。{field}: write the date as YYYY-MM-DD, e.g. 2026-03-02."
FILTERS = ("actor", "action", "target", "mission", "since", "until")


def _reader(request: Request) -> tuple[Who, Visibility] | Response:
    who = signed_in(request)
    if not isinstance(who, Who):
        return who
    if access(who.grants, Permission.AUDIT) == Access.NONE:
        return refused(request)
    return who, visibility(who.grants, who.email)


def _day(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value.strip()) if value.strip() else None


def _query(request: Request) -> tuple[AuditQuery, dict[str, str], str]:
    """The filters from the query string, their raw values (for the form) and any error."""
    raw = {name: request.query_params.get(name, "")[:200] for name in FILTERS}
    error = ""
    days: dict[str, dt.date | None] = {}
    for field in ("since", "until"):
        try:
            days[field] = _day(raw[field])
        except ValueError:
            days[field] = None
            error = BAD_DATE.format(field=field)
    try:
        page = int(request.query_params.get("page", "1"))
    except ValueError:
        page = 1
    query = AuditQuery(
        raw["actor"], raw["action"], raw["target"], raw["mission"], days["since"],
        days["until"], max(page, 1),
    )  # fmt: skip
    return query, raw, error


def _link(raw: dict[str, str], **extra: str) -> str:
    query = urlencode({k: v for k, v in {**raw, **extra}.items() if v})
    return f"?{query}" if query else ""


@router.get("/audit")
def audit_page(request: Request) -> Response:
    found = _reader(request)
    if isinstance(found, Response):
        return found
    who, seen = found
    ctx = console(request)
    query, raw, error = _query(request)
    result = search(ctx.settings, query, seen, db=ctx.engine)
    values = {
        "result": result, "filters": raw, "error": error, "own_only": seen.missions is not None
        and not seen.missions, "export": "/admin/audit.csv" + _link(raw),
        "previous": _link(raw, page=str(result.page - 1)) if result.page > 1 else "",
        "next": _link(raw, page=str(result.page + 1)) if result.page < result.pages else "",
    }  # fmt: skip
    return ctx.page(request, "audit.html.j2", values, status=400 if error else 200)


@router.get("/audit.csv")
def audit_csv(request: Request) -> Response:
    found = _reader(request)
    if isinstance(found, Response):
        return found
    _who, seen = found
    ctx = console(request)
    query, _raw, error = _query(request)
    if error:
        return refused(request, error, 400)
    # A BOM, so Excel on Chinese Windows reads the UTF-8 as UTF-8.
    body = "\ufeff" + export_csv(ctx.settings, query, seen, db=ctx.engine)
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="audit.csv"'})  # fmt: skip


@router.get("/audit/verify")
def audit_verify(request: Request) -> Response:
    found = _reader(request)
    if isinstance(found, Response):
        return found
    who, _seen = found
    if not who.can(Permission.AUDIT):  # the whole chain's length is not a liaison's to read
        return refused(request)
    ctx = console(request)
    checked = audit.verify(ctx.settings, db=ctx.engine)
    return ctx.page(request, "audit_verify.html.j2", {"checked": checked})
