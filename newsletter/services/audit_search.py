"""The audit page's reads: who may see which events, a filtered page of them, the CSV export.

A role with the audit permission in full sees the events about its missions (all of them for an
all-missions grant); a liaison (Access.SELF) sees only what they did themselves.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

from newsletter import audit_log
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.roles import TABLE, Access, Grant, Permission
from newsletter.services.audit import EventView, _view
from newsletter.services.units import unit_of_work
from newsletter.subscriptions.lists import unformula

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000


@dataclass(frozen=True)
class Visibility:
    """The events a staff member may read: about `missions` (None: all), or their own."""

    missions: frozenset[str] | None
    own: str = ""

    @property
    def nothing(self) -> bool:
        return self.missions is not None and not self.missions and not self.own


def visibility(grants: Iterable[Grant], email: str) -> Visibility:
    codes: set[str] = set()
    own = ""
    for grant in grants:
        level = TABLE[grant.role].get(Permission.AUDIT, Access.NONE)
        if level == Access.FULL:
            if grant.all_missions:
                return Visibility(None)
            codes.add(grant.mission)
        elif level == Access.SELF:
            own = email
    return Visibility(frozenset(codes), own)


@dataclass(frozen=True)
class AuditQuery:
    """The page's filters, as the query string gives them; dates are UTC calendar days."""

    actor: str = ""
    action: str = ""
    target: str = ""
    mission: str = ""
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive
    page: int = 1


@dataclass(frozen=True)
class AuditPage:
    events: list[EventView]
    total: int
    page: int
    pages: int


def _bounds(query: AuditQuery) -> tuple[dt.datetime | None, dt.datetime | None]:
    def start(day: dt.date) -> dt.datetime:
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)

    since = start(query.since) if query.since else None
    before = start(query.until) + dt.timedelta(days=1) if query.until else None
    return since, before


def _find(
    settings: Settings, query: AuditQuery, seen: Visibility, offset: int, limit: int,
    db: Engine | None,
) -> tuple[list[EventView], int]:  # fmt: skip
    if seen.nothing:
        return [], 0
    since, before = _bounds(query)
    with unit_of_work(settings, db, commit=False) as session:
        rows, total = audit_log.search(
            session, actor=query.actor.strip(), action=query.action.strip(),
            target=query.target.strip(), mission=query.mission.strip(), since=since,
            before=before, missions=seen.missions, own=seen.own, offset=offset, limit=limit,
        )  # fmt: skip
        return [_view(row) for row in rows], total


def search(
    settings: Settings, query: AuditQuery, seen: Visibility, *, db: Engine | None = None
) -> AuditPage:
    """One page of the events `seen` allows that match `query`, newest first."""
    page = max(query.page, 1)
    events, total = _find(settings, query, seen, (page - 1) * PAGE_SIZE, PAGE_SIZE, db)
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return AuditPage(events, total, page, pages)


COLUMNS = ("id", "at", "actor", "via", "action", "target", "mission", "detail", "ip", "hash")


def export_csv(
    settings: Settings, query: AuditQuery, seen: Visibility, *, db: Engine | None = None
) -> str:
    """Every matching event as CSV; a cell starting = + - @ gets a ' so no spreadsheet runs it."""
    events, _total = _find(settings, query, seen, 0, EXPORT_LIMIT, db)
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(COLUMNS)
    for e in events:
        detail = json.dumps(e.detail, ensure_ascii=False, sort_keys=True) if e.detail else ""
        at = e.at if e.at.tzinfo else e.at.replace(tzinfo=dt.UTC)
        cells = [
            str(e.id), at.isoformat(), e.actor, e.via, e.action, e.target, e.mission, detail,
            e.ip, e.hash,
        ]  # fmt: skip
        writer.writerow([unformula(c) for c in cells])
    return handle.getvalue()
