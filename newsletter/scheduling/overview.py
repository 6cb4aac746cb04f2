"""What the console's dashboard reads: sends planned soon, campaigns under way, and what needs a
person (unknown rows, missed plans, missions nobody active reads). Every read takes the
missions in scope (None: all) and counts only those missions' rows. Reads only; no commit.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select as select_many
from sqlmodel import Session, col, func, select

from newsletter.models import (
    Campaign,
    Delivery,
    Embassy,
    IssueRecord,
    ScheduleDelivery,
    SchedulePlan,
    Subscriber,
)
from newsletter.states import (
    WAITING,
    CampaignState,
    DeliveryState,
    PlanState,
    SkipReason,
    SubscriberStatus,
)

# Under way: rows wait for a plan, go out now, or are held with a reason.
IN_FLIGHT = (CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.PAUSED)


@dataclass(frozen=True)
class Upcoming:
    plan: int
    campaign: int
    issue: str
    timezone: str
    fire_at: dt.datetime
    missions: dict[str, int]  # recipients per mission, in scope

    @property
    def recipients(self) -> int:
        return sum(self.missions.values())


@dataclass(frozen=True)
class Flight:
    campaign: int
    issue: str
    state: str
    reason: str
    counts: dict[str, int] = field(default_factory=dict)  # rows per ledger state, in scope

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Missed:
    plan: int
    campaign: int
    issue: str
    timezone: str
    fire_at: dt.datetime
    rows: int


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _scoped(query: Any, missions: frozenset[str] | None) -> Any:
    if missions is None:
        return query
    return query.where(col(Subscriber.embassy_code).in_(sorted(missions)))


def upcoming(
    session: Session, *, now: dt.datetime, until: dt.datetime, missions: frozenset[str] | None
) -> list[Upcoming]:
    """Plans still to fire between `now` and `until`, soonest first, with their recipients."""
    query = (
        select_many(
            col(SchedulePlan.id),
            col(SchedulePlan.campaign_id),
            col(IssueRecord.slug),
            col(SchedulePlan.timezone),
            col(SchedulePlan.fire_at),
            col(Subscriber.embassy_code),
            func.count(),
        )  # fmt: skip
        .join(ScheduleDelivery, col(ScheduleDelivery.plan_id) == col(SchedulePlan.id))
        .join(Delivery, col(Delivery.id) == col(ScheduleDelivery.delivery_id))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .join(Campaign, col(Campaign.id) == col(SchedulePlan.campaign_id))
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .where(col(SchedulePlan.state) == PlanState.PLANNED)
        .where(col(SchedulePlan.fire_at) >= now, col(SchedulePlan.fire_at) < until)
        .group_by(
            col(SchedulePlan.id),
            col(SchedulePlan.campaign_id),
            col(IssueRecord.slug),
            col(SchedulePlan.timezone),
            col(SchedulePlan.fire_at),
            col(Subscriber.embassy_code),
        )  # fmt: skip
        .order_by(col(SchedulePlan.fire_at), col(SchedulePlan.id), col(Subscriber.embassy_code))
    )
    found: dict[int, Upcoming] = {}
    for plan, campaign, slug, zone, fire_at, mission, n in session.execute(
        _scoped(query, missions)
    ):
        entry = found.setdefault(
            int(plan), Upcoming(int(plan), int(campaign), slug, zone, _aware(fire_at), {})
        )
        entry.missions[mission] = int(n)
    return list(found.values())


def in_flight(session: Session, *, missions: frozenset[str] | None) -> list[Flight]:
    """Campaigns scheduled, sending or paused that have rows in scope, with their counts."""
    query = (
        select_many(
            col(Campaign.id),
            col(IssueRecord.slug),
            col(Campaign.state),
            col(Campaign.reason),
            col(Delivery.state),
            func.count(),
        )  # fmt: skip
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .join(Delivery, col(Delivery.campaign_id) == col(Campaign.id))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Campaign.state).in_(IN_FLIGHT))
        .group_by(
            col(Campaign.id),
            col(IssueRecord.slug),
            col(Campaign.state),
            col(Campaign.reason),
            col(Delivery.state),
        )  # fmt: skip
        .order_by(col(Campaign.id))
    )
    found: dict[int, Flight] = {}
    for campaign, slug, state, reason, row_state, n in session.execute(_scoped(query, missions)):
        entry = found.setdefault(int(campaign), Flight(int(campaign), slug, str(state), reason))
        entry.counts[str(row_state)] = int(n)
    return list(found.values())


def unknown_rows(session: Session, *, missions: frozenset[str] | None) -> Counter[int]:
    """Rows whose fate the mail server never told, per campaign, in scope."""
    query = (
        select(Delivery.campaign_id, func.count())
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.state) == DeliveryState.UNKNOWN)
        .group_by(col(Delivery.campaign_id))
    )
    return Counter({int(c): int(n) for c, n in session.exec(_scoped(query, missions))})


def missed(session: Session, *, now: dt.datetime, missions: frozenset[str] | None) -> list[Missed]:
    """Plans whose window closed with rows of the scope still unsent (not taken back yet)."""
    closed = (col(SchedulePlan.state) == PlanState.MISSED) | (
        (col(SchedulePlan.state) == PlanState.PLANNED) & (col(SchedulePlan.not_after) <= now)
    )
    left = (
        (col(Delivery.state) == DeliveryState.SKIPPED)
        & (col(Delivery.skip_reason) == SkipReason.MISSED_WINDOW)
    ) | col(Delivery.state).in_(WAITING)
    query = (
        select_many(
            col(SchedulePlan.id),
            col(SchedulePlan.campaign_id),
            col(IssueRecord.slug),
            col(SchedulePlan.timezone),
            col(SchedulePlan.fire_at),
            func.count(),
        )  # fmt: skip
        .join(ScheduleDelivery, col(ScheduleDelivery.plan_id) == col(SchedulePlan.id))
        .join(Delivery, col(Delivery.id) == col(ScheduleDelivery.delivery_id))
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .join(Campaign, col(Campaign.id) == col(SchedulePlan.campaign_id))
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .where(closed, left, col(Campaign.state) != CampaignState.CANCELLED)
        .group_by(
            col(SchedulePlan.id),
            col(SchedulePlan.campaign_id),
            col(IssueRecord.slug),
            col(SchedulePlan.timezone),
            col(SchedulePlan.fire_at),
        )  # fmt: skip
        .order_by(col(SchedulePlan.fire_at).desc())
    )
    return [
        Missed(int(p), int(c), slug, zone, _aware(at), int(n))
        for p, c, slug, zone, at, n in session.execute(_scoped(query, missions))
    ]


def unread_missions(session: Session, *, missions: frozenset[str] | None) -> list[str]:
    """Missions in scope with no active subscriber: an issue would reach nobody there."""
    active = select(Subscriber.embassy_code).where(
        col(Subscriber.status) == SubscriberStatus.ACTIVE
    )
    query = select(Embassy.code).where(col(Embassy.code).not_in(active))
    if missions is not None:
        query = query.where(col(Embassy.code).in_(sorted(missions)))
    return list(session.exec(query.order_by(col(Embassy.code))).all())
