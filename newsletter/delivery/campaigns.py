"""Campaigns and their delivery ledger: create, enqueue active subscribers, count, summarise."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, literal, update
from sqlmodel import Session, col, func, select

from newsletter.errors import NotFoundError
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    IssueRecord,
    Subscriber,
    SubscriberStatus,
    utcnow,
)

LEDGER_STATES = tuple(DeliveryState)


@dataclass(frozen=True)
class CampaignSummary:
    id: int
    issue: str
    state: str
    reason: str
    total: int
    counts: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "issue": self.issue, "state": self.state, "reason": self.reason,
            "total": self.total, **{s.value: self.counts.get(s.value, 0) for s in LEDGER_STATES},
        }  # fmt: skip


def open_campaign(session: Session, issue: IssueRecord) -> tuple[Campaign, bool]:
    """The issue's campaign still in progress or finished (so a re-send continues it), or a new one."""
    campaign = session.exec(
        select(Campaign)
        .where(Campaign.issue_id == issue.id, Campaign.state != CampaignState.CANCELLED)
        .order_by(col(Campaign.id).desc())
    ).first()
    if campaign is not None:
        return campaign, False
    assert issue.id is not None
    campaign = Campaign(issue_id=issue.id)
    session.add(campaign)
    session.commit()
    return campaign, True


def enqueue_active(session: Session, campaign: Campaign) -> int:
    """Add a ledger row for every active subscriber not yet in this campaign's ledger."""
    already = select(Delivery.subscriber_id).where(Delivery.campaign_id == campaign.id)
    source = select(
        literal(campaign.id), col(Subscriber.id), literal(DeliveryState.QUEUED.value),
        literal(0), literal(""), literal(""), literal(""), literal(utcnow()),
    ).where(
        Subscriber.status == SubscriberStatus.ACTIVE, col(Subscriber.id).not_in(already)
    )  # fmt: skip
    statement = insert(Delivery).from_select(
        ["campaign_id", "subscriber_id", "state", "attempts", "profile", "message_id", "reply",
         "updated_at"],
        source,
    )  # fmt: skip
    result = session.execute(statement)
    session.commit()
    return int(result.rowcount or 0)


def mark_in_flight_unknown(session: Session, campaign_id: int) -> int:
    """Rows left `sending` by a process that died: we cannot know if they went out."""
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state) == DeliveryState.SENDING)
        .values(state=DeliveryState.UNKNOWN, reply="in flight when the sender stopped", updated_at=utcnow())
    )
    session.commit()
    return int(result.rowcount or 0)


def counts(session: Session, campaign_id: int) -> dict[str, int]:
    rows = session.exec(
        select(Delivery.state, func.count())
        .where(Delivery.campaign_id == campaign_id)
        .group_by(col(Delivery.state))
    ).all()
    return {str(state): int(n) for state, n in rows}


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError("campaign", str(campaign_id), "see `newsletter campaign list`")
    return campaign


def summarise(session: Session, campaign: Campaign) -> CampaignSummary:
    assert campaign.id is not None
    issue = session.get(IssueRecord, campaign.issue_id)
    by_state = counts(session, campaign.id)
    return CampaignSummary(
        id=campaign.id, issue=issue.slug if issue else "?", state=str(campaign.state),
        reason=campaign.reason, total=sum(by_state.values()), counts=by_state,
    )  # fmt: skip


def list_summaries(session: Session) -> list[CampaignSummary]:
    campaigns = session.exec(select(Campaign).order_by(col(Campaign.id))).all()
    return [summarise(session, c) for c in campaigns]
