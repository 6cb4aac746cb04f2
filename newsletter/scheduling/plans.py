"""Scheduled sends in the database: plans per time zone and date, their ledger rows and states."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, delete, insert, update
from sqlmodel import Session, col, func, select

from newsletter.delivery.campaigns import (
    CampaignPausedError,
    enqueue_active,
    open_campaign,
    settle,
    take_back_unsent,
    under_way,
)
from newsletter.errors import NewsletterError, NotFoundError
from newsletter.models import (
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    IssueRecord,
    PlanState,
    ScheduleDelivery,
    SchedulePlan,
    SkipReason,
    Subscriber,
)
from newsletter.scheduling.missions import missions as missions_of
from newsletter.scheduling.rules import Mission, Slot, in_local_time
from newsletter.states import LIVE, SKIP_REPLY, WAITING, move


class AlreadyScheduledError(NewsletterError, ValueError):
    def __init__(self, slug: str, plan_ids: Sequence[int]) -> None:
        ids = ", ".join(str(i) for i in plan_ids)
        super().__init__(
            f"issue {slug} is already scheduled (plans {ids}); cancel them first with "
            f"`newsletter schedule cancel --issue {slug}` to schedule it again"
        )


class CampaignBusyError(NewsletterError, RuntimeError):
    def __init__(self, slug: str, campaign_id: int) -> None:
        super().__init__(
            f"issue {slug} is being sent now (campaign {campaign_id}); let it finish "
            f"(`newsletter campaign status {campaign_id}`) or pause it before scheduling"
        )


class NothingToScheduleError(NewsletterError, ValueError):
    def __init__(self, slug: str) -> None:
        super().__init__(
            f"issue {slug}: every active subscriber has already been sent it or is being "
            "sent it; nothing to schedule (see `newsletter campaign list`)"
        )


class PlanStateError(NewsletterError, ValueError):
    def __init__(self, plan_id: int, state: str) -> None:
        super().__init__(
            f"plan {plan_id} is {state}, only a planned send can be cancelled; "
            "stop a send under way with `newsletter campaign pause` or `campaign cancel`"
        )


def _live_rows(session: Session, campaign_id: int) -> int:
    query = select(func.count()).where(
        col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(LIVE)
    )
    return int(session.exec(query).one())


def planned_ids(session: Session, campaign_id: int) -> list[int]:
    query = select(SchedulePlan.id).where(
        col(SchedulePlan.campaign_id) == campaign_id, col(SchedulePlan.state) == PlanState.PLANNED
    )
    return [int(i) for i in session.exec(query) if i is not None]


def prepare_campaign(session: Session, issue: IssueRecord) -> Campaign:
    """The issue's campaign with every active subscriber waiting in its ledger, not yet sending."""
    campaign, _ = open_campaign(session, issue)
    assert campaign.id is not None
    if campaign.state == CampaignState.PAUSED:
        raise CampaignPausedError(campaign)
    planned = planned_ids(session, campaign.id)
    if planned:
        raise AlreadyScheduledError(issue.slug, planned)
    if campaign.state == CampaignState.SENDING and _live_rows(session, campaign.id):
        raise CampaignBusyError(issue.slug, campaign.id)
    take_back_unsent(session, campaign.id)
    # The campaign is not `sending`, so no worker takes these rows before their window is set.
    enqueue_active(session, campaign)
    return campaign


def waiting_rows(session: Session, campaign_id: int) -> list[tuple[int, Mission]]:
    """(delivery id, the recipient's mission with its calendar) for every row still to send."""
    rows = session.exec(
        select(Delivery.id, Subscriber.embassy_code)
        .join(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(col(Delivery.campaign_id) == campaign_id, col(Delivery.state).in_(WAITING))
        .order_by(col(Delivery.id))
    ).all()
    known = missions_of(session)
    return [(int(i), known[code]) for i, code in rows if i is not None and code in known]


def slotted_rows(
    session: Session, campaign: Campaign, slug: str, plan: Callable[[list[Mission]], list[Slot]]
) -> list[tuple[Slot, list[int]]]:
    """The slots for the campaign's waiting rows, each with the delivery ids it sends."""
    assert campaign.id is not None
    rows = waiting_rows(session, campaign.id)
    if not rows:
        raise NothingToScheduleError(slug)
    missions = sorted({m for _, m in rows}, key=lambda m: m.code)
    slots = plan(missions)
    slot_of = {code: slot for slot in slots for code in slot.missions}
    return [(slot, [i for i, m in rows if slot_of[m.code] is slot]) for slot in slots]


def create_plans(
    session: Session,
    campaign: Campaign,
    slug: str,
    plan: Callable[[list[Mission]], list[Slot]],
    *,
    now: dt.datetime,
) -> list[SchedulePlan]:
    """One plan per slot; each waiting row gets its slot's window; the campaign is scheduled."""
    assert campaign.id is not None
    created: list[SchedulePlan] = []
    for slot, ids in slotted_rows(session, campaign, slug, plan):
        record = SchedulePlan(
            campaign_id=campaign.id, timezone=slot.timezone, local_date=slot.day,
            local_time=slot.local_time, fire_at=slot.fire_at, not_after=slot.not_after,
            recipients=len(ids), created_at=now, moved=slot.why,
        )  # fmt: skip
        session.add(record)
        session.flush()
        # A row belongs to one plan at a time: one it was cancelled or missed in lets it go.
        session.execute(delete(ScheduleDelivery).where(col(ScheduleDelivery.delivery_id).in_(ids)))
        session.execute(
            insert(ScheduleDelivery), [{"plan_id": record.id, "delivery_id": i} for i in ids]
        )
        session.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(ids))
            .values(not_before=slot.fire_at, not_after=slot.not_after, updated_at=now)
        )
        created.append(record)
    # Until a plan fires no row is due, so no sender takes the campaign up.
    if campaign.state == CampaignState.SCHEDULED:
        campaign.reason = ""
    else:
        move(campaign, CampaignState.SCHEDULED, now=now)
    session.add(campaign)
    session.flush()
    return created


def _linked(plan_id: int) -> ColumnElement[bool]:
    return col(Delivery.id).in_(
        select(ScheduleDelivery.delivery_id).where(col(ScheduleDelivery.plan_id) == plan_id)
    )


def _changed(result: Result[Any]) -> int:
    # Session.execute is typed as returning Result; DML returns a CursorResult with rowcount.
    return int(cast(CursorResult[Any], result).rowcount or 0)


def _skip_waiting(session: Session, plan_id: int, why: SkipReason, now: dt.datetime) -> int:
    result = session.execute(
        update(Delivery)
        .where(_linked(plan_id), col(Delivery.state).in_(WAITING))
        .values(state=DeliveryState.SKIPPED, reply=SKIP_REPLY[why], skip_reason=why, updated_at=now)
    )
    return _changed(result)


def _set_state(
    session: Session, plan_id: int, state: PlanState, now: dt.datetime, reason: str = ""
) -> bool:
    """Move a plan out of `planned`; False when another process already did (no double fire)."""
    values: dict[str, object] = {"state": state, "reason": reason}
    if state == PlanState.FIRED:
        values["fired_at"] = now
    result = session.execute(
        update(SchedulePlan)
        .where(col(SchedulePlan.id) == plan_id, col(SchedulePlan.state) == PlanState.PLANNED)
        .values(**values)
    )
    return bool(_changed(result))


def get_plan(session: Session, plan_id: int) -> SchedulePlan:
    plan = session.get(SchedulePlan, plan_id)
    if plan is None:
        raise NotFoundError("plan", str(plan_id), "see `newsletter schedule list`")
    return plan


def _plan_count(session: Session, plan_id: int, *where: ColumnElement[bool]) -> int:
    return int(session.exec(select(func.count()).where(_linked(plan_id), *where)).one())


def miss_plan(session: Session, plan_id: int, now: dt.datetime) -> PlanState | None:
    """Its window closed before it fired: waiting rows are skipped, never sent late."""
    _skip_waiting(session, plan_id, SkipReason.MISSED_WINDOW, now)
    # Counted after the update, not from it: a sender that ran after the window closed has
    # already skipped the rows itself (ledger.skip_missed), and they were not sent all the same.
    missed = _plan_count(
        session, plan_id, col(Delivery.state) == DeliveryState.SKIPPED,
        col(Delivery.skip_reason) == SkipReason.MISSED_WINDOW,
    )  # fmt: skip
    sent = _plan_count(session, plan_id, col(Delivery.state) == DeliveryState.SENT)
    # A plain `worker` may have sent the rows on time while the scheduler itself was down.
    state = PlanState.FIRED if sent else PlanState.MISSED
    reason = f"window closed before the scheduler fired; {sent} rows sent, {missed} not sent"
    changed = _set_state(session, plan_id, state, now, reason)
    if changed:
        _settle_campaign(session, plan_id, now, "its send window closed before any row was sent")
    session.flush()
    return state if changed else None


def _settle_campaign(session: Session, plan_id: int, now: dt.datetime, why: str) -> None:
    """The plan's campaign, under way, takes the state its rows now say (see `settle`)."""
    plan = session.get(SchedulePlan, plan_id)
    campaign = session.get(Campaign, plan.campaign_id) if plan is not None else None
    if campaign is not None:
        settle(session, campaign, now=now, why=why)


def fire_plan(session: Session, plan_id: int, now: dt.datetime) -> PlanState | None:
    """Record that a plan's time came; the worker sends its rows (their window is open)."""
    plan = session.get(SchedulePlan, plan_id)
    if plan is None or plan.state != PlanState.PLANNED:
        return None
    if now >= plan.not_after:
        return miss_plan(session, plan_id, now)
    campaign = session.get(Campaign, plan.campaign_id)
    if campaign is not None and campaign.state == CampaignState.CANCELLED:
        changed = _set_state(session, plan_id, PlanState.CANCELLED, now, "campaign cancelled")
        session.flush()
        return PlanState.CANCELLED if changed else None
    changed = _set_state(session, plan_id, PlanState.FIRED, now)
    # Its rows are due: the campaign is sending, and the worker takes it up. A paused one
    # stays paused; its resume finds the rows due.
    if changed and campaign is not None and campaign.state == CampaignState.SCHEDULED:
        if under_way(session, plan.campaign_id, now) is None:  # a worker sent them already
            settle(session, campaign, now=now, why="its planned send found nothing to send")
        else:
            move(campaign, CampaignState.SENDING, now=now)
        session.add(campaign)
    session.flush()
    return PlanState.FIRED if changed else None


def cancel_plan(session: Session, plan_id: int, now: dt.datetime) -> int:
    """Cancel a planned send: its unsent rows are skipped; returns how many."""
    plan = get_plan(session, plan_id)
    if plan.state != PlanState.PLANNED or not _set_state(
        session, plan_id, PlanState.CANCELLED, now, "cancelled by staff"
    ):
        session.rollback()
        raise PlanStateError(plan_id, str(get_plan(session, plan_id).state))
    skipped = _skip_waiting(session, plan_id, SkipReason.PLAN_CANCELLED, now)
    _settle_campaign(session, plan_id, now, "its planned sends were cancelled")
    session.flush()
    return skipped


# Staff plan from Beijing: every view shows a send's time there too.
BEIJING = "Asia/Shanghai"


@dataclass(frozen=True)
class PlanView:
    id: int
    campaign: int
    issue: str
    timezone: str
    local_date: dt.date | None
    local_time: str
    next_run_utc: dt.datetime
    next_run_local: dt.datetime
    recipients: int
    state: str
    sent: int
    missed: int
    waiting: int
    reason: str
    campaign_state: str = ""
    moved: str = ""  # why it fires later than the date asked for

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "campaign": self.campaign, "issue": self.issue,
            "timezone": self.timezone,
            "local_date": self.local_date.isoformat() if self.local_date else None,
            "local_time": self.local_time, "next_run_utc": self.next_run_utc.isoformat(),
            "next_run_local": self.next_run_local.isoformat(),
            "next_run_beijing": in_local_time(self.next_run_utc, BEIJING).isoformat(),
            "recipients": self.recipients,
            "state": self.state, "sent": self.sent, "missed": self.missed,
            "waiting": self.waiting, "reason": self.reason, "campaign_state": self.campaign_state,
            "moved": self.moved,
        }  # fmt: skip


def shown_state(plan: SchedulePlan, now: dt.datetime) -> PlanState:
    """A plan still `planned` past its window was missed, even before the scheduler says so."""
    if plan.state == PlanState.PLANNED and now >= plan.not_after:
        return PlanState.MISSED
    return PlanState(plan.state)


def _row_counts(session: Session, plan_ids: list[int]) -> dict[int, Counter[str]]:
    """Per plan: rows by ledger state, plus `missed` (skipped because the window closed)."""
    joined = col(Delivery.id) == col(ScheduleDelivery.delivery_id)
    mine = col(ScheduleDelivery.plan_id).in_(plan_ids)
    out: dict[int, Counter[str]] = {}
    by_state = session.exec(
        select(ScheduleDelivery.plan_id, Delivery.state, func.count())
        .join(Delivery, joined)
        .where(mine)
        .group_by(col(ScheduleDelivery.plan_id), col(Delivery.state))
    ).all()
    for plan_id, state, n in by_state:
        out.setdefault(int(plan_id), Counter())[str(state)] += int(n)
    missed = session.exec(
        select(ScheduleDelivery.plan_id, func.count())
        .join(Delivery, joined)
        .where(mine, col(Delivery.state) == DeliveryState.SKIPPED)
        .where(col(Delivery.skip_reason) == SkipReason.MISSED_WINDOW)
        .group_by(col(ScheduleDelivery.plan_id))
    ).all()
    for plan_id, n in missed:
        out.setdefault(int(plan_id), Counter())["missed"] += int(n)
    return out


def list_plans(
    session: Session, *, now: dt.datetime, campaign_id: int | None = None
) -> list[PlanView]:
    query = (
        select(SchedulePlan, IssueRecord.slug, Campaign.state)
        .join(Campaign, col(Campaign.id) == col(SchedulePlan.campaign_id))
        .join(IssueRecord, col(IssueRecord.id) == col(Campaign.issue_id))
        .order_by(col(SchedulePlan.fire_at), col(SchedulePlan.id))
    )
    if campaign_id is not None:
        query = query.where(col(SchedulePlan.campaign_id) == campaign_id)
    rows = session.exec(query).all()
    counts = _row_counts(session, [p.id for p, _, _ in rows if p.id is not None])
    views = []
    for plan, slug, campaign_state in rows:
        assert plan.id is not None
        per = counts.get(plan.id, Counter())
        local = in_local_time(plan.fire_at, plan.timezone)
        views.append(
            PlanView(
                id=plan.id, campaign=plan.campaign_id, issue=slug, timezone=plan.timezone,
                local_date=plan.local_date, local_time=plan.local_time,
                next_run_utc=plan.fire_at, next_run_local=local,
                recipients=plan.recipients, state=str(shown_state(plan, now)),
                sent=per["sent"], missed=per["missed"],
                waiting=sum(per[s] for s in LIVE), reason=plan.reason,
                campaign_state=str(campaign_state), moved=plan.moved,
            )
        )  # fmt: skip
    return views


def planned_without_job(session: Session, known_jobs: set[int]) -> list[SchedulePlan]:
    """Planned sends whose job is not in the job store (lost in a crash between its steps)."""
    query = select(SchedulePlan).where(col(SchedulePlan.state) == PlanState.PLANNED)
    return [p for p in session.exec(query) if p.id is not None and p.id not in known_jobs]
