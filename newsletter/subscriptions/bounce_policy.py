"""What bounces do to subscribers: hard ones disable at once, soft ones count to a threshold."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlmodel import Session, col, select

from newsletter.delivery.bounces import Bounce, BounceKind
from newsletter.errors import ConfigError, NotFoundError
from newsletter.models import AuditEvent, Delivery, Subscriber, SubscriberStatus
from newsletter.subscriptions.store import audit, find, set_status

DEFAULT_SOFT_THRESHOLD = 3
DEFAULT_SOFT_WINDOW = dt.timedelta(days=30)
SOFT_BOUNCE = "soft-bounce"  # AuditEvent.action of a counted soft bounce
ACTOR, VIA = "dsn", "bounce"  # the engine's own 5.1.x bounces are actor "smtp", via "bounce"

# A bounce never overrides a person's own choice: their unsubscribe or complaint stands.
_INACTIVE = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED})
# The detail starts with what re-reading needs (the raw reason follows, and may hold anything).
_DETAIL = re.compile(r"report=(\S+) message=(\S+) campaign=\S+ date=(\S+) \|")


class Outcome(StrEnum):
    DISABLED = "disabled"  # the subscriber is now bounced
    COUNTED = "counted"  # a soft bounce recorded, below the threshold
    ALREADY = "already-bounced"  # bounced before: nothing to change
    INACTIVE = "inactive"  # unsubscribed or complained: nothing recorded
    DUPLICATE = "duplicate"  # this report was ingested before for this subscriber
    UNKNOWN = "unknown"  # no subscriber with this address


@dataclass(frozen=True)
class Applied:
    bounce: Bounce
    outcome: Outcome
    email: str  # the subscriber's address as stored; "" when unknown


def apply_bounces(
    session: Session,
    bounces: Sequence[Bounce],
    *,
    now: dt.datetime,
    soft_threshold: int = DEFAULT_SOFT_THRESHOLD,
    soft_window: dt.timedelta = DEFAULT_SOFT_WINDOW,
    commit: bool = True,
) -> list[Applied]:
    """One outcome per bounce, in order, all in one transaction (`commit=False`: a dry run).

    `now` dates a report that carries no date. A soft bounce disables when `soft_threshold`
    soft-bounced messages (not reports: a delay warning and the final failure of one message
    count once) fall within `soft_window`, counting since the subscriber's last status change.
    """
    if soft_threshold < 1:
        raise ConfigError(f"soft bounce threshold {soft_threshold}: use 1 or more")
    if soft_window <= dt.timedelta(0):
        raise ConfigError(f"soft bounce window {soft_window}: use a positive number of days")
    try:
        applied = [
            _apply(session, b, now=now, threshold=soft_threshold, window=soft_window)
            for b in bounces
        ]
        if commit:
            session.commit()
        else:
            session.rollback()
    except Exception:
        session.rollback()
        raise
    return applied


def tally(applied: Sequence[Applied]) -> dict[str, int]:
    """Counts for the summary: hard, soft, disabled, counted, already, unknown."""
    outcomes = Counter(a.outcome for a in applied)
    kinds = Counter(a.bounce.kind for a in applied)
    already = outcomes[Outcome.ALREADY] + outcomes[Outcome.DUPLICATE] + outcomes[Outcome.INACTIVE]
    return {
        "hard": kinds[BounceKind.HARD], "soft": kinds[BounceKind.SOFT],
        "disabled": outcomes[Outcome.DISABLED], "counted": outcomes[Outcome.COUNTED],
        "already": already, "unknown": outcomes[Outcome.UNKNOWN],
    }  # fmt: skip


def _apply(
    session: Session, bounce: Bounce, *, now: dt.datetime, threshold: int, window: dt.timedelta
) -> Applied:
    subscriber = _subscriber(session, bounce)
    if subscriber is None or subscriber.id is None:
        return Applied(bounce, Outcome.UNKNOWN, "")
    history = _history(session, subscriber.id)
    if bounce.report_id in _reports(history):
        return Applied(bounce, Outcome.DUPLICATE, subscriber.email)
    if subscriber.status == SubscriberStatus.BOUNCED:
        return Applied(bounce, Outcome.ALREADY, subscriber.email)
    if subscriber.status in _INACTIVE:
        return Applied(bounce, Outcome.INACTIVE, subscriber.email)
    detail = _detail(bounce, bounce.date or now)
    if bounce.kind is BounceKind.HARD:
        _disable(session, subscriber, detail)
        return Applied(bounce, Outcome.DISABLED, subscriber.email)
    audit(session, subscriber, SOFT_BOUNCE, old=str(subscriber.status), actor=ACTOR, via=VIA,
          detail=detail)  # fmt: skip
    session.flush()
    dates = _soft_bounce_dates(_history(session, subscriber.id))
    if not _reaches(dates, threshold, window):
        return Applied(bounce, Outcome.COUNTED, subscriber.email)
    days = window.total_seconds() / 86400
    _disable(session, subscriber, f"{detail} ({threshold} soft bounces within {days:g} days)")
    return Applied(bounce, Outcome.DISABLED, subscriber.email)


def _subscriber(session: Session, bounce: Bounce) -> Subscriber | None:
    """By address (as sent, then as finally delivered), else by our Message-ID in the ledger."""
    for address in dict.fromkeys((bounce.recipient, bounce.final_recipient)):
        try:
            return find(session, address)
        except NotFoundError:
            continue
    if bounce.campaign_id is None or not bounce.message_id:
        return None
    subscriber_id = session.exec(
        select(Delivery.subscriber_id).where(
            Delivery.campaign_id == bounce.campaign_id, Delivery.message_id == bounce.message_id
        )
    ).first()
    return session.get(Subscriber, subscriber_id) if subscriber_id is not None else None


def _disable(session: Session, subscriber: Subscriber, detail: str) -> None:
    set_status(session, subscriber, SubscriberStatus.BOUNCED, actor=ACTOR, via=VIA, detail=detail)


def _detail(bounce: Bounce, date: dt.datetime) -> str:
    campaign = "-" if bounce.campaign_id is None else str(bounce.campaign_id)
    return (
        f"report={bounce.report_id} message={bounce.message_id or '-'} campaign={campaign} "
        f"date={date.astimezone(dt.UTC).isoformat()} | {bounce.kind} {bounce.status} "
        f"{bounce.diagnostic}"
    ).strip()


def _reports(history: Sequence[AuditEvent]) -> set[str]:
    return {m.group(1) for e in history if e.via == VIA and (m := _DETAIL.match(e.detail))}


def _history(session: Session, subscriber_id: int) -> Sequence[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id)
    return session.exec(query.order_by(col(AuditEvent.id))).all()


def _soft_bounce_dates(history: Sequence[AuditEvent]) -> list[dt.datetime]:
    """One date per soft-bounced message, since the last status change (ids order the log)."""
    since = max((e.id or 0 for e in history if e.action == "status"), default=0)
    first: dict[str, dt.datetime] = {}
    for event in history:
        match = _DETAIL.match(event.detail)
        if event.action != SOFT_BOUNCE or (event.id or 0) <= since or match is None:
            continue
        report, message, when = match.groups()
        key = report if message == "-" else message
        try:
            date = dt.datetime.fromisoformat(when)
        except ValueError:
            continue
        first[key] = min(first.get(key, date), date)
    return sorted(first.values())


def _reaches(dates: Sequence[dt.datetime], threshold: int, window: dt.timedelta) -> bool:
    """Whether `threshold` of the sorted dates fit within `window`, whatever order they came in."""
    return any(
        dates[i + threshold - 1] - dates[i] <= window for i in range(len(dates) - threshold + 1)
    )
