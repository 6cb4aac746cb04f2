"""Campaigns and their delivery ledger: create, enqueue active subscribers, count, summarise."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, exists, insert, literal, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from newsletter.errors import NewsletterError, NotFoundError
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
from newsletter.states import (
    LEDGER_STATES,
    LIVE,
    RESCHEDULABLE,
    SKIP_REPLY,
    WAITING,
    CampaignStateError,
    move,
)

__all__ = [
    "CampaignStateError", "LEDGER_STATES", "CANCELLED_REPLY", "MISSED_REPLY", "CampaignPausedError",
    "CampaignSummary", "Cancelled", "LedgerRow", "Received", "campaigns_with_work", "cancel",
    "counts", "counts_by_embassy", "deliveries_of", "enqueue_active", "get_campaign", "ledger",
    "list_summaries", "mark_lost_unknown", "open_campaign", "pause", "prepare_send",
    "requeue_failed", "requeue_unknown", "resume", "settle", "summarise", "take_back_unsent",
    "taken_back", "under_way",
]  # fmt: skip


def _rowcount(result: Result[Any]) -> int:
    """Rows an INSERT or UPDATE touched: `Session.execute` returns a CursorResult for those."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


@dataclass(frozen=True)
class CampaignSummary:
    id: int
    issue: str
    state: str
    reason: str
    total: int
    counts: dict[str, int]
    transport: str = ""  # the transport that last sent it ("" before any was recorded)
    rehearsal: bool = False  # file or null on an smtp instance: nobody was sent anything

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "issue": self.issue, "state": self.state, "reason": self.reason,
            "total": self.total, **{s.value: self.counts.get(s.value, 0) for s in LEDGER_STATES},
            "transport": self.transport, "rehearsal": self.rehearsal,
        }  # fmt: skip


def open_campaign(session: Session, issue: IssueRecord) -> tuple[Campaign, bool]:
    """The issue's campaign still in progress or finished (so a re-send continues it), or a new one.

    Rehearsals (see `Campaign.rehearsal`) are never reopened: each one is a campaign of its own.
    """
    campaign = session.exec(
        select(Campaign)
        .where(
            Campaign.issue_id == issue.id,
            Campaign.state != CampaignState.CANCELLED,
            col(Campaign.rehearsal).is_(False),
        )
        .order_by(col(Campaign.id).desc())
    ).first()
    if campaign is not None:
        return campaign, False
    assert issue.id is not None
    campaign = Campaign(issue_id=issue.id)
    session.add(campaign)
    session.flush()
    return campaign, True


def enqueue_active(session: Session, campaign: Campaign) -> int:
    """Add a ledger row for every active subscriber not yet in this campaign's ledger."""
    already = select(Delivery.subscriber_id).where(Delivery.campaign_id == campaign.id)
    # Weekly and monthly readers, and those on leave, get issues through the digest instead
    # (scheduling.cadence.Cadence.takes_each_issue, here in SQL).
    today = utcnow().date()
    takes_each = (col(Subscriber.delivery_mode) == "each") & (
        col(Subscriber.paused_until).is_(None) | (col(Subscriber.paused_until) <= today)
    )
    # sqlalchemy's select: sqlmodel's is typed for at most four columns.
    source = sa_select(
        literal(campaign.id), col(Subscriber.id), literal(DeliveryState.QUEUED.value),
        literal(0), literal(""), literal(""), literal(""), literal(utcnow()),
    ).where(
        col(Subscriber.status) == SubscriberStatus.ACTIVE, col(Subscriber.id).not_in(already),
        takes_each,
    )  # fmt: skip
    statement = insert(Delivery).from_select(
        ["campaign_id", "subscriber_id", "state", "attempts", "profile", "message_id", "reply",
         "updated_at"],
        source,
    )  # fmt: skip
    result = session.execute(statement)
    session.flush()
    return _rowcount(result)


def mark_lost_unknown(
    session: Session, campaign_id: int, *, now: dt.datetime, everyone: bool
) -> int:
    """Rows left `sending` by a worker that died: we cannot know whether they went out.

    `everyone` (SQLite: the lock proves no other sender lives) takes every `sending` row;
    otherwise only rows whose lease has run out, so live workers keep theirs.
    """
    lost = (col(Delivery.campaign_id) == campaign_id) & (
        col(Delivery.state) == DeliveryState.SENDING
    )
    if not everyone:
        lost = lost & (col(Delivery.lease_until) < now)
    result = session.execute(
        update(Delivery)
        .where(lost)
        .values(
            state=DeliveryState.UNKNOWN, reply="in flight when its sender stopped; not resent",
            worker="", lease_until=None, updated_at=now,
        )
    )  # fmt: skip
    session.flush()
    return _rowcount(result)


def requeue_unknown(session: Session, campaign_id: int) -> int:
    """`--resend-unknown`: staff accept that these few may get the issue twice."""
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.campaign_id) == campaign_id, col(Delivery.state) == DeliveryState.UNKNOWN
        )
        .values(state=DeliveryState.QUEUED, reply="", updated_at=utcnow())
    )
    session.flush()
    return _rowcount(result)


def under_way(
    session: Session, campaign_id: int, now: dt.datetime | None = None
) -> CampaignState | None:
    """What a campaign with rows still to send is: `scheduled` while every one of them waits for
    a send window still to open (only planned sends set one ahead), else `sending`; None when
    no row is live."""
    when = now or utcnow()
    live = col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(LIVE)
    if not session.exec(select(func.count()).where(*live)).one():
        return None
    # `IS NOT NULL` first: a row without a window is due, and NOT (NULL) would be NULL.
    later = (
        col(Delivery.state).in_(WAITING)
        & col(Delivery.not_before).is_not(None)
        & (col(Delivery.not_before) > when)
    )
    due_or_out = session.exec(select(func.count()).where(*live, ~later)).one()
    return CampaignState.SENDING if due_or_out else CampaignState.SCHEDULED


def settle(session: Session, campaign: Campaign, *, now: dt.datetime, why: str) -> None:
    """A campaign under way takes the state its rows say (no commit).

    With no live row: finished if anyone got it, else ready again with `why` (`finished` would
    claim a delivery nobody received; `ready` lets staff send or schedule it again, which takes
    back the rows a missed or cancelled plan skipped). With live rows: `scheduled` while all
    wait for a later plan, `sending` once one is due.
    """
    if campaign.state not in (CampaignState.SCHEDULED, CampaignState.SENDING):
        return
    assert campaign.id is not None
    state = under_way(session, campaign.id, now)
    if state is None:
        if counts(session, campaign.id).get(DeliveryState.SENT):
            move(campaign, CampaignState.FINISHED, now=now)
        else:
            move(campaign, CampaignState.READY, reason=f"nobody received it: {why}", now=now)
    elif state != campaign.state:
        move(campaign, state, now=now)
    session.add(campaign)


def pause(session: Session, campaign: Campaign, reason: str = "paused by staff") -> None:
    move(campaign, CampaignState.PAUSED, reason=reason)
    session.add(campaign)
    session.flush()


def resume(session: Session, campaign: Campaign) -> None:
    """Paused -> sending, or scheduled when every row still waits for its planned send."""
    if campaign.state != CampaignState.PAUSED:
        raise CampaignStateError(campaign.id or 0, str(campaign.state), "resumed")
    state = under_way(session, campaign.id or 0) or CampaignState.SENDING
    move(campaign, state, wanted="resumed")
    session.add(campaign)
    session.flush()


@dataclass(frozen=True)
class Cancelled:
    skipped: int  # rows that will never be sent
    in_flight: int  # rows on the wire at that moment: each is recorded as what became of it


def cancel(session: Session, campaign: Campaign) -> Cancelled:
    """Stop for good: rows not yet sent become `skipped`. Rows already sent stay sent.

    A sender that holds rows of this campaign marks none of them again; the messages it has on
    the wire at this moment (at most one window) still end as their SMTP replies say.
    """
    move(campaign, CampaignState.CANCELLED, reason="cancelled by staff")
    session.add(campaign)
    why = SkipReason.CAMPAIGN_CANCELLED
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign.id, col(Delivery.state).in_(WAITING))
        .values(
            state=DeliveryState.SKIPPED,
            reply=SKIP_REPLY[why],
            skip_reason=why,
            updated_at=utcnow(),
        )
    )
    in_flight = counts(session, campaign.id or 0).get(DeliveryState.SENDING, 0)
    session.flush()
    return Cancelled(_rowcount(result), in_flight)


def requeue_failed(session: Session, campaign: Campaign) -> int:
    """Failed rows wait again, attempts and retry budget reset (staff fixed what made them fail).

    Only rows whose subscriber is still active: a bounce or an unsubscribe since then stands.
    """
    if campaign.state == CampaignState.CANCELLED:
        raise CampaignStateError(campaign.id or 0, str(campaign.state), "requeued")
    active = select(Subscriber.id).where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
    result = session.execute(
        update(Delivery)
        .where(
            col(Delivery.campaign_id) == campaign.id,
            col(Delivery.state) == DeliveryState.FAILED,
            col(Delivery.subscriber_id).in_(active),
        )
        .values(
            state=DeliveryState.QUEUED, reply="", attempts=0, first_attempt_at=None,
            next_attempt_at=None, lease_until=None, worker="", updated_at=utcnow(),
        )
    )  # fmt: skip
    requeued = _rowcount(result)
    if requeued and campaign.state == CampaignState.FINISHED:
        move(campaign, CampaignState.SENDING)
        session.add(campaign)
    session.flush()
    return requeued


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
        transport=campaign.transport, rehearsal=campaign.rehearsal,
    )  # fmt: skip


def list_summaries(session: Session) -> list[CampaignSummary]:
    campaigns = session.exec(select(Campaign).order_by(col(Campaign.id))).all()
    return [summarise(session, c) for c in campaigns]


class CampaignPausedError(NewsletterError, RuntimeError):
    def __init__(self, campaign: Campaign) -> None:
        self.campaign_id = campaign.id
        super().__init__(
            f"campaign {campaign.id} is paused ({campaign.reason or 'no reason given'}); "
            f"fix the cause, then `newsletter campaign resume {campaign.id}`"
        )


# The reply texts these skips write, for people; code reads `Delivery.skip_reason`.
MISSED_REPLY = SKIP_REPLY[SkipReason.MISSED_WINDOW]
CANCELLED_REPLY = SKIP_REPLY[SkipReason.PLAN_CANCELLED]


def taken_back() -> ColumnElement[bool]:
    """Rows a missed or cancelled plan skipped: never sent, and nobody decided against them."""
    return (col(Delivery.state) == DeliveryState.SKIPPED) & col(Delivery.skip_reason).in_(
        RESCHEDULABLE
    )


def take_back_unsent(session: Session, campaign_id: int) -> int:
    """Rows a missed or cancelled schedule skipped wait again, with no send window."""
    result = session.execute(
        update(Delivery)
        .where(col(Delivery.campaign_id) == campaign_id, taken_back())
        .values(
            state=DeliveryState.QUEUED,
            reply="",
            skip_reason=None,
            not_before=None,
            not_after=None,
        )
    )
    session.flush()
    return _rowcount(result)


def prepare_send(
    session: Session, issue: IssueRecord, *, resend_unknown: bool = False
) -> tuple[Campaign, int]:
    """The campaign to send now, with every active subscriber in its ledger; (campaign, added)."""
    campaign, _ = open_campaign(session, issue)
    if campaign.state == CampaignState.PAUSED:
        raise CampaignPausedError(campaign)
    # `send` means now: rows a missed or cancelled schedule left behind go too.
    take_back_unsent(session, campaign.id or 0)
    added = enqueue_active(session, campaign)
    if resend_unknown:
        requeue_unknown(session, campaign.id or 0)
    idle = (CampaignState.READY, CampaignState.SCHEDULED, CampaignState.FINISHED)
    if campaign.state in idle and any(counts(session, campaign.id or 0).get(s) for s in LIVE):
        move(campaign, CampaignState.SENDING, reason=campaign.reason)
        session.add(campaign)
        session.flush()
    return campaign, added


@dataclass(frozen=True)
class LedgerRow:
    email: str
    embassy: str
    state: str
    attempts: int
    reply: str
    sent_at: dt.datetime | None
    message_id: str
    skip_reason: str = ""  # with state `skipped`: why, as `SkipReason` names it


def ledger(session: Session, campaign_id: int) -> list[LedgerRow]:
    """Who got what: every recipient of a campaign with its state and the last SMTP reply."""
    rows = session.exec(
        select(Subscriber.email, Subscriber.embassy_code, Delivery)
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(Delivery.campaign_id == campaign_id)
        .order_by(col(Subscriber.embassy_code), col(Subscriber.email))
    ).all()
    return [
        LedgerRow(
            email,
            embassy,
            str(d.state),
            d.attempts,
            d.reply,
            d.sent_at,
            d.message_id,
            str(d.skip_reason or ""),
        )
        for email, embassy, d in rows
    ]


def counts_by_embassy(rows: list[LedgerRow]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        per = table.setdefault(row.embassy, {})
        per[row.state] = per.get(row.state, 0) + 1
    return table


def campaigns_with_work(session: Session, now: dt.datetime | None = None) -> list[tuple[int, str]]:
    """(campaign id, issue slug) of sending campaigns that still have rows to send or retry,
    and of scheduled ones with a row whose window has opened (or closed) by `now`.

    The scheduler's firing a plan makes its campaign `sending`; a worker alone takes a
    scheduled one up at the rows' own time all the same, and skips them once it is past.
    """
    when = now or utcnow()
    mine = col(Delivery.campaign_id) == col(Campaign.id)
    live = select(Delivery.id).where(mine, col(Delivery.state).in_(LIVE)).limit(1)
    opened = (
        select(Delivery.id)
        .where(mine, col(Delivery.state).in_(WAITING), col(Delivery.not_before) <= when)
        .limit(1)
    )
    sending = (col(Campaign.state) == CampaignState.SENDING) & exists(live)
    scheduled = (col(Campaign.state) == CampaignState.SCHEDULED) & exists(opened)
    rows = session.exec(
        select(Campaign.id, IssueRecord.slug)
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        # A rehearsal's rows are sent only by the `send` that made it, through its own transport.
        .where(sending | scheduled, col(Campaign.rehearsal).is_(False))
        .order_by(col(Campaign.id))
    ).all()
    return [(int(cid), str(slug)) for cid, slug in rows if cid is not None]


@dataclass(frozen=True)
class Received:
    """One issue's delivery to one subscriber, as their own data export shows it."""

    issue: str
    state: str
    sent_at: dt.datetime | None
    reply: str


def deliveries_of(session: Session, subscriber_id: int) -> list[Received]:
    """Every ledger row of one subscriber, real sends only (rehearsals delivered nothing)."""
    rows = session.exec(
        select(IssueRecord.slug, Delivery.state, Delivery.sent_at, Delivery.reply)
        .join(Campaign, col(Campaign.id) == col(Delivery.campaign_id))
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .where(Delivery.subscriber_id == subscriber_id, col(Campaign.rehearsal).is_(False))
        .order_by(col(Delivery.id))
    ).all()
    return [Received(str(slug), str(state), sent, reply or "") for slug, state, sent, reply in rows]
