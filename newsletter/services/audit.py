"""The audit chain for every door: record an action, list events, verify the chain.

`record` is called inside the caller's unit of work, so an action and its event commit or
roll back together; the subscription lifecycle writes its events through `store.audit`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

from newsletter import audit_chain, audit_log
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.models import AdminEvent
from newsletter.services.units import unit_of_work


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target: str = "",
    mission: str = "",
    detail: Mapping[str, object] | None = None,
    ip: str = "",
    at: dt.datetime | None = None,
) -> None:
    entry = audit_log.Entry(
        actor_kind=str(actor.kind), actor_id=actor.name, via=actor.via, action=action,
        target=target, mission=mission, detail=detail, ip=ip,
    )  # fmt: skip
    audit_log.append(session, entry, at=at)


@dataclass(frozen=True)
class EventView:
    id: int
    at: dt.datetime
    actor: str
    via: str
    action: str
    target: str
    mission: str
    detail: dict[str, object]
    ip: str
    hash: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id, "at": audit_chain.instant(self.at), "actor": self.actor,
            "via": self.via, "action": self.action, "target": self.target,
            "mission": self.mission, "detail": self.detail, "ip": self.ip, "hash": self.hash,
        }  # fmt: skip


def _view(event: AdminEvent) -> EventView:
    actor = f"{event.actor_kind}:{event.actor_id}" if event.actor_id else event.actor_kind
    detail = json.loads(event.detail) if event.detail else {}
    return EventView(
        event.id or 0, event.at, actor, event.via, event.action, event.target, event.mission,
        detail, event.ip, event.hash,
    )  # fmt: skip


def list_events(
    settings: Settings,
    *,
    actor: str | None = None,
    action: str | None = None,
    scope: Scope | None = None,
    limit: int = 100,
    db: Engine | None = None,
) -> list[EventView]:
    """The newest events first; a scope shows only events about its missions."""
    missions = scope.missions if scope is not None else None
    with unit_of_work(settings, db, commit=False) as session:
        events = audit_log.recent(
            session, actor=actor, action=action, mission_scope=missions, limit=limit
        )
        return [_view(event) for event in events]


def verify(settings: Settings, *, db: Engine | None = None) -> audit_chain.Verified:
    with unit_of_work(settings, db, commit=False) as session:
        rows = (
            (event.id or 0, event.prev_hash, event.hash, audit_log.fields(event))
            for event in audit_log.in_order(session)
        )
        return audit_chain.verify(rows)
