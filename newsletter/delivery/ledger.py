"""The delivery ledger's hot path: claim rows, mark them on the wire, write outcomes, in bulk.

Core SQL rather than ORM objects: these run once per batch or window over hundreds of rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, bindparam, func, update
from sqlmodel import Session, col, select

from newsletter.models import Delivery, DeliveryState, Subscriber
from newsletter.subscriptions.store import sectors_of

WAITING = (DeliveryState.QUEUED, DeliveryState.RETRY)
# The plain table: executemany UPDATEs by bound id, without the ORM's per-row bookkeeping.
TABLE = cast(Table, Delivery.__table__)  # type: ignore[attr-defined]  # SQLModel sets it at class creation


def _count(result: object) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def due(campaign_id: int, now: dt.datetime) -> ColumnElement[bool]:
    """Rows to send now: waiting, retry time reached, send window open, not leased by a live worker."""
    waiting = (col(Delivery.state) == DeliveryState.QUEUED) | (
        (col(Delivery.state) == DeliveryState.RETRY) & (col(Delivery.next_attempt_at) <= now)
    )
    in_window = (col(Delivery.not_before).is_(None) | (col(Delivery.not_before) <= now)) & (
        col(Delivery.not_after).is_(None) | (col(Delivery.not_after) > now)
    )
    free = col(Delivery.lease_until).is_(None) | (col(Delivery.lease_until) < now)
    return (col(Delivery.campaign_id) == campaign_id) & waiting & in_window & free


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
        .values(state=DeliveryState.SKIPPED, reply="missed: send window closed", updated_at=now)
    )
    session.commit()
    return _count(result)


def release_leases(session: Session, campaign_id: int) -> None:
    """Forget every claim on waiting rows (only when no other sender can be alive: SQLite's lock)."""
    session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(WAITING))
        .values(lease_until=None, worker="")
    )
    session.commit()


def plan_profiles(
    session: Session,
    campaign_id: int,
    profile_of: Callable[[int, str, str, tuple[str, ...]], str],
    *,
    chunk: int = 2000,
) -> None:
    """Note each waiting row's profile (`profile_of(subscriber_id, language, embassy, sectors)`)."""
    after = 0
    while True:
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
            return
        sectors = sectors_of(session, [int(sid) for _, sid, _, _ in rows if sid is not None])
        updates = [
            {
                "b_id": did,
                "b_profile": profile_of(int(sid or 0), lang, emb, sectors.get(int(sid or 0), ())),
            }
            for did, sid, lang, emb in rows
        ]
        session.execute(
            update(TABLE)
            .where(TABLE.c.id == bindparam("b_id"))
            .values(profile=bindparam("b_profile")),
            updates,
        )
        session.commit()
        after = int(rows[-1][0] or 0)


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
    """Lease up to `limit` due rows, grouped by profile; their state stays waiting until sent."""
    rows = session.exec(
        select(Delivery.id, Delivery.subscriber_id, Delivery.attempts, Delivery.first_attempt_at)
        .where(due(campaign_id, now))
        .order_by(col(Delivery.profile), col(Delivery.id))
        .limit(limit)
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
    session.commit()
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


# Built once: the window writes run hundreds of times a second.
_RECORD = (
    update(TABLE)
    .where(TABLE.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"), reply=bindparam("b_reply"), attempts=bindparam("b_attempts"),
        first_attempt_at=bindparam("b_first_attempt_at"),
        next_attempt_at=bindparam("b_next_attempt_at"), sent_at=bindparam("b_sent_at"),
        profile=bindparam("b_profile"), message_id=bindparam("b_message_id"),
        lease_until=None, worker="", updated_at=bindparam("b_now"),
    )
)  # fmt: skip
_MARK_SENDING = (
    update(TABLE)
    .where(TABLE.c.id.in_(bindparam("ids", expanding=True)))
    .values(state=DeliveryState.SENDING, updated_at=bindparam("now"))
)


def write(
    session: Session,
    *,
    outcomes: Sequence[Outcome],
    sending: Sequence[int],
    now: dt.datetime,
    commit: bool = True,
) -> None:
    """One transaction: outcomes of the window just sent, and the next window marked `sending`.

    Only rows marked `sending` can end up `unknown` after a crash, so the engine marks no more
    than it is about to put on the wire (one window: `concurrency` rows).
    """
    if outcomes:
        params = [
            {
                "b_id": o.id, "b_state": o.state, "b_reply": o.reply, "b_attempts": o.attempts,
                "b_first_attempt_at": o.first_attempt_at, "b_next_attempt_at": o.next_attempt_at,
                "b_sent_at": o.sent_at, "b_profile": o.profile, "b_message_id": o.message_id,
                "b_now": now,
            }
            for o in outcomes
        ]  # fmt: skip
        session.execute(_RECORD, params)
    if sending:
        session.execute(_MARK_SENDING, {"ids": list(sending), "now": now})
    if commit:
        session.commit()


def release(session: Session, ids: Sequence[int], now: dt.datetime) -> None:
    """Claimed but never put on the wire: free for any sender again, state unchanged."""
    if ids:
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(list(ids)), col(Delivery.state).in_(WAITING))
            .values(lease_until=None, worker="", updated_at=now)
        )
        session.commit()
