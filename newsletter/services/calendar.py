"""Mission closures: record, list and remove the days a mission does not work, each in the
audit chain (`newsletter audit list --action mission`).

Planning reads them with the host's public holidays (`newsletter.scheduling.calendar`): a send
with `--working-days` and a recurring digest move past them to the next working morning.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from newsletter import audit_log, directory
from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.models import MissionClosure, utcnow
from newsletter.scheduling.rules import parse_date
from newsletter.services.units import unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClosureView:
    id: int
    mission: str
    first: dt.date
    last: dt.date
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "mission": self.mission, "first": self.first.isoformat(),
            "last": self.last.isoformat(), "reason": self.reason,
        }  # fmt: skip


def _audit(session: Session, action: str, view: ClosureView, actor: Actor) -> None:
    # The chain keeps the dates, not the reason: free text has no place in an unerasable row.
    kind, actor_id = audit_log.split_label(actor.label)
    audit_log.append(session, audit_log.Entry(
        actor_kind=kind, actor_id=actor_id, via=actor.via, action=f"mission.{action}",
        target=f"closure:{view.id}", mission=view.mission,
        detail={"first": view.first.isoformat(), "last": view.last.isoformat()},
    ))  # fmt: skip


def _view(row: MissionClosure) -> ClosureView:
    assert row.id is not None
    return ClosureView(row.id, row.embassy_code, row.first_day, row.last_day, row.reason)


def add_closure(
    settings: Settings,
    code: str,
    first: str,
    last: str | None = None,
    reason: str = "",
    *,
    actor: Actor,
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> ClosureView:
    """Close a mission from `first` to `last` (default: that one day), as typed by staff."""
    start = parse_date(first, "DATE")
    end = parse_date(last, "--to") if last else start
    with unit_of_work(settings, db) as session:
        view = _view(directory.add_closure(session, code, start, end, reason, now=now or utcnow()))
        _audit(session, "closure_added", view, actor)
    log.info("%s (via %s) closed %s %s..%s", actor.label, actor.via, code, start, end)
    return view


def list_closures(
    settings: Settings, code: str | None = None, *, db: Engine | None = None
) -> list[ClosureView]:
    with unit_of_work(settings, db, commit=False) as session:
        return [_view(r) for r in directory.closures(session, code)]


def remove_closure(
    settings: Settings,
    closure_id: int,
    *,
    actor: Actor,
    db: Engine | None = None,
) -> ClosureView:
    with unit_of_work(settings, db) as session:
        view = _view(directory.remove_closure(session, closure_id))
        _audit(session, "closure_removed", view, actor)
    log.info("%s (via %s) removed closure %s", actor.label, actor.via, closure_id)
    return view
