"""Following and controlling campaigns: list, status, report; pause, resume, cancel, requeue.

Each change takes the `Actor` who asked and logs it (a campaign audit table is still to come);
the per-recipient report takes a `Scope`, so a mission's liaison sees their own people only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine
from newsletter.delivery import campaigns
from newsletter.delivery.campaigns import CampaignSummary, LedgerRow
from newsletter.filelock import lock_path, try_lock, unlock
from newsletter.models import CampaignState, utcnow
from newsletter.scheduling import jobs, plans
from newsletter.services.units import database, unit_of_work
from newsletter.states import CampaignStateError, move

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CampaignReport:
    """A campaign's counts, and its recipients (of the actor's missions) with their replies."""

    summary: CampaignSummary
    recipients: tuple[LedgerRow, ...]

    @property
    def by_embassy(self) -> dict[str, dict[str, int]]:
        return campaigns.counts_by_embassy(list(self.recipients))


@dataclass(frozen=True)
class CancelledCampaign:
    campaign: int
    skipped: int  # rows that will never be sent
    in_flight: int  # on the wire at that moment: recorded as the server answers
    plans: tuple[int, ...]  # planned sends cancelled with it


@dataclass(frozen=True)
class SenderWatch:
    """Whether a sender runs on the database, so staff know what will send a campaign."""

    known: bool  # False on PostgreSQL: workers on other hosts register nowhere
    holder: str | None = None  # the running sender as it named itself: `pid 123: newsletter run`


def _said(actor: Actor, what: str, campaign_id: int) -> None:
    log.info("%s (via %s) %s campaign %s", actor.label, actor.via, what, campaign_id)


# --- reading ----------------------------------------------------------------------------------


def list_campaigns(settings: Settings, *, db: Engine | None = None) -> list[CampaignSummary]:
    """Every campaign with its ledger counts, oldest first."""
    with unit_of_work(settings, db, commit=False) as session:
        return campaigns.list_summaries(session)


def campaign_status(
    settings: Settings, campaign_id: int, *, db: Engine | None = None
) -> CampaignSummary:
    """One campaign's state, the reason for it, and its ledger counts."""
    with unit_of_work(settings, db, commit=False) as session:
        return campaigns.summarise(session, campaigns.get_campaign(session, campaign_id))


def campaign_report(
    settings: Settings, campaign_id: int, *, scope: Scope, db: Engine | None = None
) -> CampaignReport:
    """Who got what: the campaign's counts and every recipient the actor may see."""
    with unit_of_work(settings, db, commit=False) as session:
        summary = campaigns.summarise(session, campaigns.get_campaign(session, campaign_id))
        rows = campaigns.ledger(session, campaign_id)
    return CampaignReport(summary, tuple(r for r in rows if scope.allows(r.embassy)))


# --- control ----------------------------------------------------------------------------------


def pause_campaign(
    settings: Settings, campaign_id: int, *, actor: Actor, db: Engine | None = None
) -> CampaignSummary:
    """Stop sending after the messages in flight; `resume_campaign` continues."""
    with unit_of_work(settings, db) as session:
        campaign = campaigns.get_campaign(session, campaign_id)
        campaigns.pause(session, campaign)
        summary = campaigns.summarise(session, campaign)
    _said(actor, "paused", campaign_id)
    return summary


def resume_campaign(
    settings: Settings, campaign_id: int, *, actor: Actor, db: Engine | None = None
) -> CampaignSummary:
    """A paused campaign sends again (scheduled, when every row waits for a planned send)."""
    with unit_of_work(settings, db) as session:
        campaign = campaigns.get_campaign(session, campaign_id)
        campaigns.resume(session, campaign)
        summary = campaigns.summarise(session, campaign)
    _said(actor, "resumed", campaign_id)
    return summary


def running_sender(settings: Settings, *, db: Engine | None = None) -> SenderWatch:
    """The sender holding a SQLite database's sender lock, if any (unknowable on PostgreSQL).

    The probe holds the lock for an instant only, and only when nobody else does.
    """
    with database(settings, db) as engine:
        path = lock_path(engine, "sender")
    if path is None:
        return SenderWatch(known=False)
    if not path.exists():
        return SenderWatch(known=True)
    fd = try_lock(path)
    if fd is not None:
        unlock(fd)
        return SenderWatch(known=True)
    try:
        holder = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        holder = ""
    return SenderWatch(known=True, holder=holder or "a process that did not say which")


def cancel_campaign(
    settings: Settings, campaign_id: int, *, actor: Actor, db: Engine | None = None
) -> CancelledCampaign:
    """Stop for good: unsent rows are skipped, and the campaign's planned sends cancelled."""
    now = utcnow()
    with database(settings, db) as engine:
        with unit_of_work(settings, engine) as session:
            cancelled = campaigns.cancel(session, campaigns.get_campaign(session, campaign_id))
            planned = plans.planned_ids(session, campaign_id)
            for plan_id in planned:
                plans.cancel_plan(session, plan_id, now)
        # Jobs go once the plans are cancelled: a job left behind by a crash here finds its
        # plan cancelled and sends nothing, while a plan without its job would never fire.
        if planned:
            jobs.remove_jobs(engine, [jobs.plan_job_id(p) for p in planned])
    _said(actor, "cancelled", campaign_id)
    return CancelledCampaign(campaign_id, cancelled.skipped, cancelled.in_flight, tuple(planned))


def requeue_failed(
    settings: Settings, campaign_id: int, *, actor: Actor, db: Engine | None = None
) -> int:
    """Failed rows of still-active subscribers wait again; how many."""
    with unit_of_work(settings, db) as session:
        requeued = campaigns.requeue_failed(session, campaigns.get_campaign(session, campaign_id))
    _said(actor, f"requeued {requeued} failed rows of", campaign_id)
    return requeued


def resend_unknown(
    settings: Settings, campaign_id: int, *, actor: Actor, db: Engine | None = None
) -> int:
    """Rows whose fate is unknown (in flight when a sender died) wait again; how many.

    Staff accept that these few may get the issue twice. A finished or ready campaign sends
    again so a worker takes them; a paused one stays paused until resumed.
    """
    with unit_of_work(settings, db) as session:
        campaign = campaigns.get_campaign(session, campaign_id)
        if campaign.state == CampaignState.CANCELLED:
            raise CampaignStateError(campaign_id, str(campaign.state), "resent")
        requeued = campaigns.requeue_unknown(session, campaign_id)
        if requeued and campaign.state in (CampaignState.READY, CampaignState.FINISHED):
            move(campaign, CampaignState.SENDING, reason=campaign.reason)
            session.add(campaign)
    _said(actor, f"queued {requeued} unknown rows of", campaign_id)
    return requeued
