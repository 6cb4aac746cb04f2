"""Scheduling rules: a local hour per mission to UTC fire times, working days, windows (pure)."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from newsletter.errors import NewsletterError
from newsletter.scheduling.calendar import Closure, HostCalendar, Move, next_open
from newsletter.taxonomy import WORKING_WEEKS

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_OFFSET_ZONE = re.compile(r"^UTC([+-])(\d\d):(\d\d)$")
# Crontab weekday numbers: 0 and 7 are Sunday. APScheduler 3 counts 0 as Monday, so every
# weekday field is rewritten to names before it reaches APScheduler (its `from_crontab` warns).
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleInputError(NewsletterError, ValueError):
    """A time, date or cron expression given to `schedule` or `digest` cannot be used."""

    def __init__(self, option: str, value: str, expected: str) -> None:
        self.option = option
        self.value = value
        super().__init__(f"{option} {value!r}: {expected}")


class TimeInPastError(NewsletterError, ValueError):
    def __init__(self, when: str, zones: Sequence[str], hint: str) -> None:
        self.zones = tuple(zones)
        where = f" in {', '.join(zones)}" if zones else ""
        super().__init__(f"{when} has already passed{where}; {hint}")


@dataclass(frozen=True)
class Mission:
    """What planning needs to know about one embassy or consulate."""

    code: str
    timezone: str
    working_week: tuple[int, ...] = WORKING_WEEKS["mon-fri"]
    # The host's calendar: missions to the UN or the EU name their host city's country here.
    country: str = ""
    subdivision: str = ""
    closures: tuple[Closure, ...] = ()

    @property
    def calendar(self) -> HostCalendar:
        return HostCalendar(
            self.code, self.country, self.subdivision, self.working_week, self.closures
        )


@dataclass(frozen=True)
class Slot:
    """One fire time: the missions of one time zone whose send falls on one local date."""

    timezone: str
    day: dt.date | None
    local_time: str
    fire_at: dt.datetime
    not_after: dt.datetime
    missions: tuple[str, ...]
    why: str = ""  # why the send is later than the date asked for ("" when it is not)


# How far ahead a send or a recurring digest may be planned: beyond it a date is a typo.
HORIZON_YEARS = 10
HORIZON = dt.timedelta(days=round(365.25 * HORIZON_YEARS))


def parse_local_time(text: str, option: str = "--local") -> dt.time:
    match = _HHMM.match(text.strip())
    if not match:
        raise ScheduleInputError(option, text, "give a local time as HH:MM, such as 09:00")
    return dt.time(int(match[1]), int(match[2]))


def parse_date(text: str, option: str = "--date") -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleInputError(option, text, "give a date as YYYY-MM-DD") from None


def parse_instant(text: str, option: str = "--at") -> dt.datetime:
    """An ISO 8601 date and time with its UTC offset (kept); without one it is ambiguous."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleInputError(
            option, text, "give an ISO 8601 time with offset, such as 2020-08-04T09:00+08:00"
        ) from None
    if value.utcoffset() is None:
        raise ScheduleInputError(
            option,
            text,
            "add the UTC offset (such as +08:00 or Z): a time without one is ambiguous",
        )
    return value


def offset_zone_name(value: dt.datetime) -> str:
    """'UTC+08:00' for the offset an absolute time was given in."""
    offset = value.utcoffset() or dt.timedelta()
    sign = "-" if offset < dt.timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def zone(name: str) -> dt.tzinfo:
    """An IANA zone, or a fixed offset written as offset_zone_name does."""
    match = _OFFSET_ZONE.match(name)
    if match:
        delta = dt.timedelta(hours=int(match[2]), minutes=int(match[3]))
        return dt.timezone(-delta if match[1] == "-" else delta)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleInputError("time zone", name, "not an IANA time zone") from None


def exists_locally(wall: dt.datetime, tz: dt.tzinfo) -> bool:
    """False for a wall-clock time skipped by a spring-forward change."""
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    return instant.astimezone(tz).replace(tzinfo=None) == wall


def _end_of_gap(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The first instant after the clock jumped over `wall`: the change itself."""
    a = wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    b = wall.replace(tzinfo=tz, fold=1).astimezone(dt.UTC)
    lo, hi = int(min(a, b).timestamp()), int(max(a, b).timestamp())
    before = dt.datetime.fromtimestamp(lo, dt.UTC).astimezone(tz).utcoffset()
    # Binary search to the second: transitions fall on whole seconds.
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, dt.UTC).astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, dt.UTC)


def local_instant(day: dt.date, at: dt.time, tz: dt.tzinfo) -> dt.datetime:
    """The UTC instant of `at` on `day` in `tz`: one instant, whatever the clock does that day.

    A time skipped by a spring-forward change moves to the first valid instant after the
    gap; a time repeated by a fall-back change takes its first occurrence (fold 0).
    """
    wall = dt.datetime.combine(day, at)
    if exists_locally(wall, tz):
        return wall.replace(tzinfo=tz, fold=0).astimezone(dt.UTC)
    return _end_of_gap(wall, tz)


def working_day(day: dt.date, week: Iterable[int]) -> dt.date:
    """`day` if it is a working day of `week` (ISO weekdays), else the next one."""
    days = set(week)
    if not days:
        return day
    while day.isoweekday() not in days:
        day += dt.timedelta(days=1)
    return day


def default_day(at: dt.time, zones: Iterable[str], now: dt.datetime) -> dt.date:
    """The first date on which `at` is still ahead in every zone, so all get the same date."""
    names = sorted(set(zones))
    # Local dates run from UTC-12 to UTC+14: start the day before UTC's date.
    day = now.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    while any(local_instant(day, at, zone(name)) <= now for name in names):
        day += dt.timedelta(days=1)
    return day


def format_time(at: dt.time) -> str:
    return f"{at.hour:02d}:{at.minute:02d}"


def plan_local(
    missions: Iterable[Mission],
    *,
    day: dt.date,
    at: dt.time,
    working_days: bool,
    grace: dt.timedelta,
) -> list[Slot]:
    """One slot per (time zone, local date): each mission is in exactly one slot.

    With `working_days`, a mission whose weekend, public holiday or closure falls on `day`
    moves to its next working day; missions sharing a zone but not a calendar may then need
    separate slots.
    """
    groups: dict[tuple[str, dt.date], list[tuple[str, Move]]] = defaultdict(list)
    for mission in missions:
        move = next_open(mission.calendar, day) if working_days else Move(day, day)
        groups[(mission.timezone, move.day)].append((mission.code, move))
    slots = []
    for (name, when), members in groups.items():
        fire_at = local_instant(when, at, zone(name))
        codes = tuple(sorted(code for code, _ in members))
        why = explain_moves(members, format_time(at), name)
        slots.append(Slot(name, when, format_time(at), fire_at, fire_at + grace, codes, why))
    return sorted(slots, key=lambda s: (s.fire_at, s.timezone))


def explain_moves(members: Sequence[tuple[str, Move]], local_time: str, timezone: str) -> str:
    """Why a slot is later than asked: one reason when its moved missions share it, else one
    per group of missions ("de-berlin: ...; de-munich-cg: ...")."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for code, move in members:
        if move.moved:
            by_reason[move.explain(local_time, timezone)].append(code)
    if len(by_reason) == 1 and sum(map(len, by_reason.values())) == len(members):
        return next(iter(by_reason))
    return "; ".join(f"{', '.join(sorted(c))}: {why}" for why, c in sorted(by_reason.items()))


def plan_absolute(
    missions: Iterable[Mission], *, instant: dt.datetime, given_in: str, grace: dt.timedelta
) -> Slot:
    """One slot for every mission at one instant; `given_in` names the offset it was given in."""
    fire_at = instant.astimezone(dt.UTC)
    local = fire_at.astimezone(zone(given_in))
    codes = tuple(sorted(m.code for m in missions))
    return Slot(given_in, local.date(), format_time(local.time()), fire_at, fire_at + grace, codes)


def past_zones(slots: Iterable[Slot], now: dt.datetime) -> list[str]:
    return sorted({s.timezone for s in slots if s.fire_at <= now})


@dataclass(frozen=True)
class When:
    """What staff asked for: a local time (on a date, or the next that suits every zone) or
    one absolute instant."""

    local: dt.time | None = None
    day: dt.date | None = None
    working_days: bool = False
    at: dt.datetime | None = None
    given_in: str = "UTC+00:00"


def _too_far(now: dt.datetime) -> str:
    return (
        f"is more than {HORIZON_YEARS} years ahead; give one before "
        f"{(now + HORIZON).date().isoformat()}"
    )


def plan_send(
    missions: Sequence[Mission], when: When, *, grace: dt.timedelta, now: dt.datetime
) -> list[Slot]:
    """The slots for a request, refusing any in the past or beyond the horizon.

    Both are checked before any time-zone arithmetic: near year 1 or 9999 the conversion to
    UTC, or adding the grace, would overflow.
    """
    if when.at is not None:
        if when.at - now > HORIZON:
            raise ScheduleInputError("--at", when.at.isoformat(), _too_far(now))
        if when.at <= now:
            raise TimeInPastError(f"--at {when.at.isoformat()}", [], "give a time in the future")
        return [plan_absolute(missions, instant=when.at, given_in=when.given_in, grace=grace)]
    at = when.local or dt.time(9, 0)
    if when.day is not None:
        if when.day > (now + HORIZON).date():
            raise ScheduleInputError("--date", when.day.isoformat(), _too_far(now))
        if when.day < (now - dt.timedelta(days=2)).date():
            zones = sorted({m.timezone for m in missions})
            raise TimeInPastError(
                f"{format_time(at)} on {when.day.isoformat()}", zones, "choose a later --date"
            )
    day = when.day or default_day(at, (m.timezone for m in missions), now)
    slots = plan_local(missions, day=day, at=at, working_days=when.working_days, grace=grace)
    late = past_zones(slots, now)
    if late:
        raise TimeInPastError(
            f"{format_time(at)} on {day.isoformat()}",
            late,
            "choose a later --date, or leave it out for the next date that suits every zone",
        )
    return slots


def next_working_instant(mission: Mission, now: dt.datetime) -> tuple[dt.datetime, Move]:
    """`now`, or the same wall time on the mission's next working day when it is closed today
    (a recurring digest firing on a public holiday waits for the next working morning)."""
    tz = zone(mission.timezone)
    local = now.astimezone(tz)
    move = next_open(mission.calendar, local.date())
    if not move.moved:
        return now, move
    return local_instant(move.day, local.time().replace(tzinfo=None), tz), move


def in_local_time(instant: dt.datetime, timezone: str) -> dt.datetime:
    return instant.astimezone(zone(timezone))


def grace_seconds(grace: dt.timedelta) -> int:
    """APScheduler's misfire grace is whole seconds (at least 1); the ledger window is exact."""
    return max(1, -int(-grace.total_seconds() // 1))


def _weekday_value(token: str) -> int:
    token = token.strip().lower()
    if token in _CRON_DAYS:
        return _CRON_DAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(token)


def _weekday_part(part: str) -> set[int]:
    base, _, step_text = part.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(part)
    if base in ("*", "?"):
        first, last = 0, 6
    elif "-" in base:
        low, high = base.split("-", 1)
        first, last = _weekday_value(low), _weekday_value(high)
        # "5-7" and "fri-sun" end on Sunday, which is 0 once folded.
        if last < first and high.strip() in ("7", "sun"):
            last = 7
    else:
        first = last = _weekday_value(base)
        if step_text:
            last = 6
    days = {d % 7 for d in range(first, last + 1, step)}
    if not days:  # a backwards range such as fri-mon: cron has no wrap-around
        raise ValueError(part)
    return days


def crontab_fields(expr: str) -> dict[str, str]:
    """A five-field crontab as APScheduler 3 `CronTrigger` keyword arguments.

    Weekday numbers keep their crontab meaning (0 = Sunday). A crontab restricting both the
    day of month and the day of week runs on either (cron's rule) while APScheduler needs
    both: such an expression is refused rather than run on the wrong days.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleInputError(
            "--cron", expr, "give five fields: minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, weekday = fields
    if day not in ("*", "?") and weekday not in ("*", "?"):
        raise ScheduleInputError(
            "--cron", expr, "restrict the day of month or the day of week, not both"
        )
    try:
        days: set[int] = set().union(*(_weekday_part(p) for p in weekday.split(",")))
    except ValueError:
        raise ScheduleInputError(
            "--cron", expr, "day of week must be 0-7 (0 or 7 = Sunday) or names like MON-FRI"
        ) from None
    names = "*" if len(days) == 7 else ",".join(_CRON_DAYS[d] for d in sorted(days))
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": names}
