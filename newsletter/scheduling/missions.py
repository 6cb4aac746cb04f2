"""Missions as planning sees them: zone, working week and host calendar, read from the database."""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, select

from newsletter import directory
from newsletter.models import Embassy
from newsletter.scheduling.calendar import Closure
from newsletter.scheduling.rules import Mission
from newsletter.taxonomy import WORKING_WEEKS


def missions(session: Session) -> dict[str, Mission]:
    """Every mission by code, with its host's country, subdivision and recorded closures."""
    closed: dict[str, list[Closure]] = defaultdict(list)
    for row in directory.closures(session):
        closed[row.embassy_code].append(Closure(row.first_day, row.last_day, row.reason))
    default = WORKING_WEEKS["mon-fri"]
    return {
        e.code: Mission(
            e.code, e.timezone, WORKING_WEEKS.get(e.working_week, default), e.country,
            directory.host_subdivision(e.country, e.city), tuple(closed[e.code]),
        )
        for e in session.exec(select(Embassy))
    }  # fmt: skip
