"""The dashboard's reads, in one view: the next 48 hours of planned sends, campaigns under way,
what needs a person, and the latest staff activity; everything counted within the reader's scope.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from newsletter.actors import Scope
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.scheduling import overview
from newsletter.scheduling.overview import Flight, Missed, Upcoming
from newsletter.services.units import unit_of_work

AHEAD = dt.timedelta(hours=48)


@dataclass(frozen=True)
class Dashboard:
    upcoming: list[Upcoming]
    in_flight: list[Flight]
    unknown: dict[int, int]  # campaign -> rows in state unknown
    missed: list[Missed]
    unread_missions: list[str]


def dashboard(
    settings: Settings, scope: Scope, *, now: dt.datetime, db: Engine | None = None
) -> Dashboard:
    """What the dashboard shows of the scope's missions at `now`."""
    missions = scope.missions
    with unit_of_work(settings, db, commit=False) as session:
        return Dashboard(
            upcoming=overview.upcoming(session, now=now, until=now + AHEAD, missions=missions),
            in_flight=overview.in_flight(session, missions=missions),
            unknown=dict(overview.unknown_rows(session, missions=missions)),
            missed=overview.missed(session, now=now, missions=missions),
            unread_missions=overview.unread_missions(session, missions=missions),
        )
