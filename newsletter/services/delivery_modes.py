"""Delivery modes: staff set how often a subscriber receives (every issue, weekly, monthly) or
pause them until a date; each change is audited.

Issue sends (now or planned) take only subscribers receiving each issue and not on leave; the
recurring digest serves weekly and monthly readers on their weekday's run, and everyone back
from leave with what they are owed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.models import utcnow
from newsletter.scheduling import modes
from newsletter.scheduling.cadence import parse_cadence
from newsletter.services.units import unit_of_work
from newsletter.subscriptions.store import find

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModeChange:
    email: str
    mode: str
    weekday: int | None
    paused_until: dt.date | None
    described: str
    before: str

    def as_dict(self) -> dict[str, object]:
        return {
            "email": self.email, "mode": self.mode, "weekday": self.weekday,
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
            "described": self.described, "before": self.before,
        }  # fmt: skip


def set_mode(
    settings: Settings,
    email: str,
    mode: str,
    *,
    weekday: str | None = None,
    until: str | None = None,
    actor: Actor,
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> ModeChange:
    """`mode` each, weekly or monthly (with `weekday`), or paused (with `until`)."""
    moment = now or utcnow()
    with unit_of_work(settings, db) as session:
        subscriber = find(session, email)
        cadence = parse_cadence(
            mode, weekday=weekday, until=until, current=modes.cadence_of(subscriber),
            today=moment.date(),
        )  # fmt: skip
        old = modes.set_cadence(session, subscriber, cadence, actor=actor.label, via=actor.via)
        change = ModeChange(
            subscriber.email, str(cadence.mode), cadence.weekday, cadence.paused_until,
            cadence.describe(), old.describe(),
        )  # fmt: skip
    log.info("%s (via %s) set %s to %s", actor.label, actor.via, change.email, change.described)
    return change
