"""Which issues reach a subscriber who joined after they went out (pure).

From the issue after they joined on, every one; of those already sent before, only the latest
and only if it went out within the catch-up span (`[delivery] catch_up_days`, 0: none): a
newcomer, or a successor after a handover, gets that one once and never older back issues.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

DEFAULT_CATCH_UP = dt.timedelta(days=30)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands some stored times back without their zone; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def latest_published(published: Mapping[int, dt.datetime | None]) -> int | None:
    """The issue whose first mail went out last, of those sent at all."""
    sent = {issue: as_utc(at) for issue, at in published.items() if at is not None}
    return max(sent, key=lambda issue: sent[issue]) if sent else None


def may_receive(
    published: dt.datetime | None,
    joined: dt.datetime,
    *,
    latest: bool,
    now: dt.datetime,
    catch_up: dt.timedelta,
) -> bool:
    """Whether an issue first sent at `published` (None: not yet sent) may reach someone who
    joined at `joined`."""
    if published is None or as_utc(published) >= as_utc(joined):
        return True
    return latest and catch_up > dt.timedelta() and now - as_utc(published) <= catch_up
