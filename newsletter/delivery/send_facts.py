"""What a send records and reads about a campaign beside its ledger: the transport that sent it,
rehearsals (a campaign of their own), and the facts that say why nothing is left to send.

Storage functions: they take a session, flush, and never commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from newsletter.delivery.campaigns import counts, enqueue_active
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    IssueRecord,
    SkipReason,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.states import LIVE, SKIP_REPLY, WAITING, move


def note_transport(session: Session, campaign_id: int, transport: str) -> None:
    """The campaign is now sent through `transport` (written only when it changes)."""
    session.execute(
        update(Campaign)
        .where(col(Campaign.id) == campaign_id, col(Campaign.transport) != transport)
        .values(transport=transport)
    )
    session.flush()


def open_rehearsal(session: Session, issue: IssueRecord, transport: str) -> Campaign:
    """A new rehearsal campaign of the issue, every active subscriber in its ledger, sending."""
    assert issue.id is not None
    campaign = Campaign(issue_id=issue.id, rehearsal=True, transport=transport)
    session.add(campaign)
    session.flush()
    if enqueue_active(session, campaign):
        move(campaign, CampaignState.SENDING)
        session.add(campaign)
        session.flush()
    return campaign


def end_rehearsal(session: Session, campaign_id: int) -> int:
    """Rows a stopped rehearsal left waiting are skipped: it is never taken up again."""
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None and campaign.rehearsal
    why = SkipReason.CAMPAIGN_CANCELLED
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(WAITING))
        .values(state=DeliveryState.SKIPPED, reply=SKIP_REPLY[why], skip_reason=why)
    )
    left = int(getattr(result, "rowcount", 0) or 0)
    if left and campaign.state in (CampaignState.SENDING, CampaignState.SCHEDULED):
        move(campaign, CampaignState.CANCELLED, reason="rehearsal stopped before the end")
        session.add(campaign)
    session.flush()
    return left


def real_campaign(session: Session, issue: IssueRecord) -> Campaign | None:
    """The campaign a real send of the issue would continue (as `open_campaign` picks it)."""
    return session.exec(
        select(Campaign)
        .where(
            Campaign.issue_id == issue.id,
            Campaign.state != CampaignState.CANCELLED,
            col(Campaign.rehearsal).is_(False),
        )
        .order_by(col(Campaign.id).desc())
    ).first()


@dataclass(frozen=True)
class CampaignFacts:
    """What a campaign holds once nothing of it is due: enough to say why."""

    campaign: int
    state: str
    reason: str
    transport: str
    by_state: dict[str, int]
    last_sent: dt.datetime | None
    next_window: dt.datetime | None  # the first planned send still to come
    next_retry: dt.datetime | None
    active: int  # active subscribers of the instance


def campaign_facts(
    session: Session, campaign_id: int, now: dt.datetime | None = None
) -> CampaignFacts:
    when = now or utcnow()
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    mine = col(Delivery.campaign_id) == campaign_id
    last_sent = session.exec(select(func.max(Delivery.sent_at)).where(mine)).one()
    next_window = session.exec(
        select(func.min(Delivery.not_before)).where(
            mine, col(Delivery.state).in_(WAITING), col(Delivery.not_before) > when
        )
    ).one()
    next_retry = session.exec(
        select(func.min(Delivery.next_attempt_at)).where(
            mine, col(Delivery.state) == DeliveryState.RETRY
        )
    ).one()
    active = session.exec(
        select(func.count()).where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
    ).one()
    return CampaignFacts(
        campaign=campaign_id, state=str(campaign.state), reason=campaign.reason,
        transport=campaign.transport, by_state=counts(session, campaign_id),
        last_sent=last_sent, next_window=next_window, next_retry=next_retry, active=int(active),
    )  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One subscriber as a send of an issue would find them (`row_*`: their ledger row, if any)."""

    subscriber_id: int
    email: str
    name: str
    embassy: str
    language: str
    status: str
    token_key: str
    delivery_mode: str
    mode_weekday: int | None
    paused_until: dt.date | None
    row_state: str | None
    row_skip_reason: str | None
    row_not_before: dt.datetime | None
    row_next_attempt: dt.datetime | None


def candidates(session: Session, campaign_id: int | None) -> list[Candidate]:
    """Every subscriber with their row in the campaign's ledger (None: a campaign still to open)."""
    on = (col(Delivery.subscriber_id) == col(Subscriber.id)) & (
        col(Delivery.campaign_id) == (campaign_id if campaign_id is not None else -1)
    )
    rows = session.exec(
        select(Subscriber, Delivery)
        .join(Delivery, on, isouter=True)
        .order_by(col(Subscriber.embassy_code), col(Subscriber.email))
    ).all()
    out: list[Candidate] = []
    for subscriber, row in rows:
        assert subscriber.id is not None
        out.append(
            Candidate(
                subscriber_id=subscriber.id, email=subscriber.email, name=subscriber.name,
                embassy=subscriber.embassy_code, language=subscriber.language,
                status=str(subscriber.status), token_key=subscriber.token_key,
                delivery_mode=subscriber.delivery_mode, mode_weekday=subscriber.mode_weekday,
                paused_until=subscriber.paused_until,
                row_state=str(row.state) if row is not None else None,
                row_skip_reason=str(row.skip_reason) if row and row.skip_reason else None,
                row_not_before=row.not_before if row is not None else None,
                row_next_attempt=row.next_attempt_at if row is not None else None,
            )
        )  # fmt: skip
    return out


def live_rows(by_state: dict[str, int]) -> int:
    return sum(by_state.get(state, 0) for state in LIVE)
