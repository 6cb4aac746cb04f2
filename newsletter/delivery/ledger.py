"""The delivery ledger's hot path: claim rows, mark them on the wire, write outcomes, in bulk.

Core SQL rather than ORM objects: these run once per batch or window over hundreds of rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, bindparam, func, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from newsletter.interests import sectors_of
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    SkipReason,
    Subscriber,
)
from newsletter.states import HELD, SKIP_REPLY, WAITING

# The plain table: executemany UPDATEs by bound id, without the ORM's per-row bookkeeping.
TABLE = cast(Table, Delivery.__table__)  # type: ignore[attr-defined]  # SQLModel sets it at class creation


def _count(result: object) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _claimable(campaign_id: int, now: dt.datetime) -> ColumnElement[bool]:
    """Send window open and not leased by a live worker; the state is asked for separately."""
    in_window = (col(Delivery.not_before).is_(None) | (col(Delivery.not_before) <= now)) & (
        col(Delivery.not_after).is_(None) | (col(Delivery.not_after) > now)
    )
    free = col(Delivery.lease_until).is_(None) | (col(Delivery.lease_until) < now)
    return (col(Delivery.campaign_id) == campaign_id) & in_window & free


def _retry_time_reached(now: dt.datetime) -> ColumnElement[bool]:
    """A queued row has no `next_attempt_at` unless its campaign backs off (the server deferred
    a run of recipients): then it waits like a retry, without an attempt counted."""
    return col(Delivery.next_attempt_at).is_(None) | (col(Delivery.next_attempt_at) <= now)


def waiting(session: Session, campaign_id: int) -> int:
    """Rows still to send or retry, whenever due."""
    return int(
        session.exec(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(WAITING))
        ).one()
    )


def skip_missed(session: Session, campaign_id: int, now: dt.datetime) -> int:
    """Rows whose send window closed while nobody was sending: missed, never sent late."""
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.campaign_id) == campaign_id,
            col(Delivery.state).in_(WAITING),
            col(Delivery.not_after) <= now,
        )
        .values(
            state=DeliveryState.SKIPPED,
            reply=SKIP_REPLY[SkipReason.MISSED_WINDOW],
            skip_reason=SkipReason.MISSED_WINDOW,
            updated_at=now,
        )
    )
    return _count(result)


def release_leases(session: Session, campaign_id: int) -> None:
    """Forget every claim on waiting rows (only when no other sender can be alive: SQLite's lock)."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(WAITING))
        .values(lease_until=None, worker="")
    )


def plan_profiles(
    session: Session,
    campaign_id: int,
    profile_of: Callable[[int, str, str, tuple[str, ...]], str],
    *,
    after: int = 0,
    chunk: int = 2000,
) -> int:
    """Note the profile of the next `chunk` waiting rows after id `after`
    (`profile_of(subscriber_id, language, embassy, sectors)`); the last id noted, 0 when none
    was left. The caller commits between chunks, so planning a long list never holds the
    database for long."""
    rows = session.exec(
        select(Delivery.id, Subscriber.id, Subscriber.language, Subscriber.embassy_code)
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(
            col(Delivery.campaign_id) == campaign_id,
            col(Delivery.profile) == "",
            col(Delivery.state).in_(WAITING),
            col(Delivery.id) > after,
        )
        .order_by(col(Delivery.id))
        .limit(chunk)
    ).all()
    if not rows:
        return 0
    sectors = sectors_of(session, [int(sid) for _, sid, _, _ in rows if sid is not None])
    updates = [
        {
            "b_id": did,
            "b_profile": profile_of(int(sid or 0), lang, emb, sectors.get(int(sid or 0), ())),
        }
        for did, sid, lang, emb in rows
    ]
    session.execute(
        update(TABLE).where(TABLE.c.id == bindparam("b_id")).values(profile=bindparam("b_profile")),
        updates,
    )
    return int(rows[-1][0] or 0)


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    attempts: int
    first_attempt_at: dt.datetime | None


def claim(
    session: Session,
    campaign_id: int,
    *,
    now: dt.datetime,
    limit: int,
    worker: str,
    lease: dt.timedelta,
) -> list[Claimed]:
    """Lease up to `limit` due rows, grouped by profile; their state stays waiting until sent.

    Retries first, then queued rows, one state per query: each walks `ix_delivery_claim` from
    the start of its state, so rows already sent are never scanned and a claim costs the same
    at the first row of a campaign as at its millionth.
    """
    rows: list[Any] = []
    for state in (DeliveryState.RETRY, DeliveryState.QUEUED):  # WAITING, the overdue first
        if len(rows) >= limit:
            break
        rows += session.exec(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.attempts, Delivery.first_attempt_at
            )
            .where(
                _claimable(campaign_id, now),
                col(Delivery.state) == state,
                _retry_time_reached(now),
            )
            .order_by(col(Delivery.profile), col(Delivery.id))
            .limit(limit - len(rows))
            # PostgreSQL: concurrent workers skip each other's rows; SQLite ignores it (one sender).
            .with_for_update(skip_locked=True)
        ).all()
    claimed = [Claimed(int(i or 0), s, a, f) for i, s, a, f in rows]
    if claimed:
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_([c.delivery_id for c in claimed]))
            .values(lease_until=now + lease, worker=worker, updated_at=now)
        )
    return claimed


@dataclass(frozen=True)
class Outcome:
    """What happened to one row; written as is."""

    id: int
    state: str
    reply: str = ""
    attempts: int = 0
    first_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    profile: str = ""
    message_id: str = ""
    skip_reason: SkipReason | None = None  # with state `skipped`: why


# Rows this sender still owns are leased in its name and HELD: neither recorded nor skipped
# since (a cancel turns waiting rows `skipped`; a lease that ran out may have passed on).
# Spelt out, not IN (...): an expanding IN cannot go into the executemany of `_RECORD`.
_IS_HELD = or_(*(TABLE.c.state == state for state in HELD))


def _owned(worker: str) -> ColumnElement[bool]:
    return (TABLE.c.worker == worker) & _IS_HELD


# Built once: the window writes run hundreds of times a second.
_RECORD = (
    update(TABLE)
    .where(
        TABLE.c.id == bindparam("b_id"),
        TABLE.c.worker == bindparam("b_worker"),
        _IS_HELD,
    )
    .values(
        state=bindparam("b_state"), reply=bindparam("b_reply"), attempts=bindparam("b_attempts"),
        first_attempt_at=bindparam("b_first_attempt_at"),
        next_attempt_at=bindparam("b_next_attempt_at"), sent_at=bindparam("b_sent_at"),
        profile=bindparam("b_profile"), message_id=bindparam("b_message_id"),
        skip_reason=bindparam("b_skip_reason"), lease_until=None, worker="", updated_at=bindparam("b_now"),
    )
)  # fmt: skip
CAMPAIGN = cast(Table, Campaign.__table__)  # type: ignore[attr-defined]
# Only while the campaign is sending: a pause or cancel by staff stops the very next window.
_CAMPAIGN_SENDING = (
    sa_select(CAMPAIGN.c.id)
    .where(CAMPAIGN.c.id == TABLE.c.campaign_id, CAMPAIGN.c.state == CampaignState.SENDING)
    .exists()
)
_MARK_SENDING = (
    update(TABLE)
    .where(
        TABLE.c.id.in_(bindparam("ids", expanding=True)),
        TABLE.c.worker == bindparam("b_worker"),
        _IS_HELD,
        _CAMPAIGN_SENDING,
    )
    .values(
        state=DeliveryState.SENDING, lease_until=bindparam("b_until"), updated_at=bindparam("b_now")
    )
    .returning(TABLE.c.id)
)


@dataclass(frozen=True)
class Written:
    recorded: int  # outcomes written: fewer than given when a row was no longer this sender's
    sending: list[int]  # of the rows asked for, those now marked `sending` in this sender's name


def write(
    session: Session,
    *,
    outcomes: Sequence[Outcome],
    sending: Sequence[int],
    now: dt.datetime,
    worker: str,
    lease: dt.timedelta,
) -> Written:
    """One transaction: outcomes of the window just sent, and the next window marked `sending`.

    Only rows marked `sending` can end up `unknown` after a crash, so the engine marks no more
    than it is about to put on the wire (one window: `concurrency` rows). Both parts touch only
    rows this worker still holds: a row cancelled (`skipped`) or lost to another worker after
    its lease ran out is neither overwritten nor put on the wire. Written again after a lost
    connection, the same call changes nothing twice.
    """
    recorded = 0
    if outcomes:
        params = [
            {
                "b_id": o.id, "b_state": o.state, "b_reply": o.reply, "b_attempts": o.attempts,
                "b_first_attempt_at": o.first_attempt_at, "b_next_attempt_at": o.next_attempt_at,
                "b_sent_at": o.sent_at, "b_profile": o.profile, "b_message_id": o.message_id,
                "b_skip_reason": o.skip_reason, "b_now": now, "b_worker": worker,
            }
            for o in outcomes
        ]  # fmt: skip
        recorded = _count(session.execute(_RECORD, params))
    marked: list[int] = []
    if sending:
        result = session.execute(
            _MARK_SENDING,
            {"ids": list(sending), "b_now": now, "b_worker": worker, "b_until": now + lease},
        )
        marked = [int(i) for i in result.scalars()]
    return Written(recorded, marked)


def renew(
    session: Session, ids: Sequence[int], *, worker: str, until: dt.datetime, now: dt.datetime
) -> int:
    """Extend this worker's leases on rows it still holds (waiting to go out, or on the wire)."""
    if not ids:
        return 0
    # In id order, skipping rows a window write holds at this moment (it sets their lease
    # itself): two transactions locking overlapping rows in different orders deadlock.
    mine = (
        sa_select(TABLE.c.id)
        .where(TABLE.c.id.in_(list(ids)), _owned(worker))
        .order_by(TABLE.c.id)
        .with_for_update(skip_locked=True)
    )
    result = session.execute(
        update(TABLE).where(TABLE.c.id.in_(mine.scalar_subquery())).values(lease_until=until)
    )
    return _count(result)


def release(
    session: Session, ids: Sequence[int], now: dt.datetime, *, worker: str | None = None
) -> None:
    """Claimed but never put on the wire: free for any sender again, state unchanged.

    With `worker`, only rows that worker still holds (another may have taken a row whose lease ran out).
    """
    if ids:
        mine = TABLE.c.worker == worker if worker is not None else TABLE.c.id.isnot(None)
        session.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(list(ids)), TABLE.c.state.in_(WAITING), mine)
            .values(lease_until=None, worker="", updated_at=now)
        )


def postpone(session: Session, campaign_id: int, until: dt.datetime, now: dt.datetime) -> int:
    """The campaign backs off: no waiting row is due before `until` (no attempt is counted)."""
    result = session.execute(
        update(TABLE)
        .where(
            TABLE.c.campaign_id == campaign_id,
            TABLE.c.state.in_(WAITING),
            TABLE.c.next_attempt_at.is_(None) | (TABLE.c.next_attempt_at < until),
        )
        .values(next_attempt_at=until, updated_at=now)
    )
    return _count(result)
