"""A mission's working calendar: its working week, the host's public holidays, its closures (pure).

Public holidays come from the `holidays` package, computed in memory for the host country (and
subdivision: a consulate in Munich keeps Bavaria's holidays, a mission to the UN in Geneva the
canton's); closures are what staff recorded and are passed in. Nothing here reads a file or
the database.
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import holidays

from newsletter.errors import NewsletterError
from newsletter.taxonomy import WORKING_WEEKS

# A run of closed days longer than this is a mistake in the closures, not a calendar.
SEARCH_DAYS = 366
_LANGUAGE = "en_US"
# Not strftime("%A"): that follows the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class NoWorkingDayError(NewsletterError, ValueError):
    def __init__(self, mission: str, day: dt.date) -> None:
        super().__init__(
            f"mission {mission or '?'} has no working day within {SEARCH_DAYS} days of "
            f"{day.isoformat()}; check its closures (`newsletter embassies closure list "
            f"{mission}`) and remove the one that runs too long"
        )


@dataclass(frozen=True)
class Closure:
    """Days staff closed a mission on (first to last, inclusive), with the reason they gave."""

    first: dt.date
    last: dt.date
    reason: str = ""

    def covers(self, day: dt.date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True)
class HostCalendar:
    mission: str = ""
    country: str = ""  # ISO 3166-1 alpha-2; "" for no public holidays
    subdivision: str = ""  # ISO 3166-2 part after the dash, as the holidays package names it
    week: tuple[int, ...] = WORKING_WEEKS["mon-fri"]  # ISO weekdays
    closures: tuple[Closure, ...] = ()


@functools.lru_cache(maxsize=512)
def _holidays_of(country: str, subdivision: str, year: int) -> Mapping[dt.date, str]:
    """One year of public holidays (observed days included), named in English where the
    package can; {} for a country it does not know."""
    # Past the years a country's movable holidays are tabulated for (India's end in 2035)
    # the package warns and keeps the fixed ones: that is the best calendar there is.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            table = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
        except NotImplementedError:
            return {}
        if _LANGUAGE in (table.supported_languages or ()):
            table = holidays.country_holidays(
                country, subdiv=subdivision or None, years=year, language=_LANGUAGE
            )
        return dict(table.items())


def holiday_name(country: str, subdivision: str, day: dt.date) -> str | None:
    if not country:
        return None
    return _holidays_of(country, subdivision, day.year).get(day)


def holidays_between(
    calendar: HostCalendar, first: dt.date, last: dt.date
) -> list[tuple[dt.date, str]]:
    """The public holidays of the mission's host from `first` to `last`, by date."""
    out = []
    day = first
    while day <= last:
        name = holiday_name(calendar.country, calendar.subdivision, day)
        if name:
            out.append((day, name))
        day += dt.timedelta(days=1)
    return out


def closed_because(calendar: HostCalendar, day: dt.date) -> str | None:
    """Why the mission does not work on `day` (a holiday, a closure, its weekend), or None."""
    name = holiday_name(calendar.country, calendar.subdivision, day)
    if name:
        return name
    for closure in calendar.closures:
        if closure.covers(day):
            return f"closed ({closure.reason})" if closure.reason else "closed"
    if calendar.week and day.isoweekday() not in calendar.week:
        return _WEEKDAYS[day.isoweekday() - 1]
    return None


@dataclass(frozen=True)
class Move:
    """Where a send asked for `requested` lands, and each day it skipped, with why."""

    requested: dt.date
    day: dt.date
    skipped: tuple[tuple[dt.date, str], ...] = ()

    @property
    def moved(self) -> bool:
        return bool(self.skipped)

    def explain(self, local_time: str, timezone: str) -> str:
        """'2026-12-25 Christmas Day, 2026-12-27 Sunday: 2026-12-28 09:00 Europe/Berlin'."""
        days = ", ".join(f"{d.isoformat()} {why}" for d, why in self.skipped)
        return f"{days}: {self.day.isoformat()} {local_time} {timezone}"


def next_open(calendar: HostCalendar, day: dt.date) -> Move:
    """`day` if the mission works then, else its next working day, with the days skipped."""
    skipped: list[tuple[dt.date, str]] = []
    current = day
    for _ in range(SEARCH_DAYS):
        why = closed_because(calendar, current)
        if why is None:
            return Move(day, current, tuple(skipped))
        skipped.append((current, why))
        current += dt.timedelta(days=1)
    raise NoWorkingDayError(calendar.mission, day)
