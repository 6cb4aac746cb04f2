"""How often a subscriber receives: every issue, a weekly or monthly digest, or nothing on leave.

Pure: the subscriber's stored mode and a local date in, whether a send or a digest run serves
them that day out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from newsletter.errors import NewsletterError

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Leave longer than this is a typo in the year.
MAX_PAUSE = dt.timedelta(days=2 * 366)


class Mode(StrEnum):
    EACH = "each"  # every issue as it is sent (the default)
    WEEKLY = "weekly"  # what is owed, on the digest run of their weekday
    MONTHLY = "monthly"  # what is owed, on the digest run of the month's first such weekday


class CadenceInputError(NewsletterError, ValueError):
    """A delivery mode given to `subscribers edit` cannot be used."""


@dataclass(frozen=True)
class Cadence:
    mode: Mode = Mode.EACH
    weekday: int | None = None  # ISO weekday (Monday = 1) of a weekly or monthly digest
    paused_until: dt.date | None = None  # nothing before this date; resumes on it

    def paused_on(self, day: dt.date) -> bool:
        return self.paused_until is not None and day < self.paused_until

    def takes_each_issue(self, day: dt.date) -> bool:
        """Whether a send of one issue (now or planned) includes them."""
        return self.mode == Mode.EACH and not self.paused_on(day)

    def digest_day(self, day: dt.date) -> bool:
        """Whether a digest run on their mission's local `day` serves them."""
        if self.paused_on(day):
            return False
        if self.mode == Mode.WEEKLY:
            return day.isoweekday() == self.weekday
        if self.mode == Mode.MONTHLY:
            return day.isoweekday() == self.weekday and day.day <= 7
        return True

    def describe(self) -> str:
        """'weekly on Tuesday', 'monthly on the first Monday', 'each issue', then any leave."""
        if self.mode == Mode.WEEKLY and self.weekday:
            text = f"weekly on {_LONG[self.weekday - 1]}"
        elif self.mode == Mode.MONTHLY and self.weekday:
            text = f"monthly on the first {_LONG[self.weekday - 1]}"
        else:
            text = "each issue"
        if self.paused_until is not None:
            text += f", paused until {self.paused_until.isoformat()}"
        return text


def stored(mode: str, weekday: int | None, paused_until: dt.date | None) -> Cadence:
    """The cadence of a subscriber row; an unknown stored mode reads as every issue."""
    try:
        kind = Mode(mode)
    except ValueError:
        kind = Mode.EACH
    return Cadence(kind, weekday if kind != Mode.EACH else None, paused_until)


def parse_weekday(text: str) -> int:
    token = text.strip().lower()[:3]
    if token in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(token) + 1
    if token.isdigit() and 1 <= int(token) <= 7:
        return int(token)
    raise CadenceInputError(
        f"--weekday {text!r}: give a day such as MON or TUE (or 1-7, Monday = 1)"
    )


def parse_cadence(
    mode: str,
    *,
    weekday: str | None,
    until: str | None,
    current: Cadence,
    today: dt.date,
) -> Cadence:
    """What staff typed (`--mode each|weekly|monthly|paused`, `--weekday`, `--until`).

    `paused` keeps the mode they had, to resume in on `--until`; any other mode ends a pause.
    """
    choice = mode.strip().lower()
    if choice == "paused":
        if weekday is not None:
            raise CadenceInputError("--weekday goes with --mode weekly or monthly, not paused")
        if until is None:
            raise CadenceInputError("--mode paused needs --until YYYY-MM-DD, the day they resume")
        try:
            day = dt.date.fromisoformat(until.strip())
        except ValueError:
            raise CadenceInputError(f"--until {until!r}: give a date as YYYY-MM-DD") from None
        if day <= today:
            raise CadenceInputError(
                f"--until {day.isoformat()} is not after today ({today.isoformat()}); give the "
                "first day back, or --mode each to resume now"
            )
        if day - today > MAX_PAUSE:
            raise CadenceInputError(
                f"--until {day.isoformat()} is more than two years ahead; check the year"
            )
        return Cadence(current.mode, current.weekday, day)
    if until is not None:
        raise CadenceInputError("--until goes with --mode paused")
    try:
        kind = Mode(choice)
    except ValueError:
        raise CadenceInputError(f"--mode {mode!r}: use each, weekly, monthly or paused") from None
    if kind == Mode.EACH:
        if weekday is not None:
            raise CadenceInputError("--weekday goes with --mode weekly or monthly, not each")
        return Cadence()
    if weekday is None:
        raise CadenceInputError(f"--mode {kind} needs --weekday, such as --weekday MON")
    return Cadence(kind, parse_weekday(weekday))
