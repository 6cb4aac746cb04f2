"""Planned sends and recurring digests: schedule, list and cancel them.

A planned send is a plan row per time zone (and date) among the issue's recipients plus its job
in the job store; `newsletter run` fires the jobs. Each change takes the `Actor` who asked and
logs it. Jobs are written after the plans they fire are stored and removed after the plans are
cancelled: a job whose plan is gone or cancelled fires to no effect, while a plan without its
job is found and re-added when the scheduler starts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery.campaigns import open_campaign
from newsletter.errors import NewsletterError
from newsletter.issues import get_issue
from newsletter.models import utcnow
from newsletter.scheduling import digests, jobs, plans
from newsletter.scheduling.plans import PlanView
from newsletter.scheduling.rules import (
    When,
    in_local_time,
    offset_zone_name,
    parse_date,
    parse_instant,
    parse_local_time,
    plan_send,
)
from newsletter.services.units import database, unit_of_work

log = logging.getLogger(__name__)


class ConflictingTimesError(NewsletterError, ValueError):
    def __init__(self) -> None:
        super().__init__("--at is one absolute time; leave out --local, --date and --working-days")


def _grace(settings: Settings) -> dt.timedelta:
    return dt.timedelta(hours=settings.schedule.misfire_grace_hours)


def when(
    settings: Settings,
    *,
    local: str | None = None,
    date: str | None = None,
    working_days: bool = False,
    at: str | None = None,
) -> When:
    """When to send, from what staff typed: `at` (one instant), or HH:MM on each mission's clock
    (default from config) on `date` (default: the first day it is still ahead everywhere)."""
    if at is not None:
        if local is not None or date is not None or working_days:
            raise ConflictingTimesError()
        instant = parse_instant(at)
        return When(at=instant, given_in=offset_zone_name(instant))
    return When(
        local=parse_local_time(local or settings.schedule.local_time),
        day=parse_date(date) if date else None,
        working_days=working_days,
    )


# --- planned sends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    campaign: int
    plans: tuple[PlanView, ...]  # the plans just created

    @property
    def recipients(self) -> int:
        return sum(p.recipients for p in self.plans)


def schedule_issue(
    settings: Settings,
    slug: str,
    at: When,
    *,
    actor: Actor,
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> Scheduled:
    """One planned send per time zone (and date) among the issue's recipients' missions."""
    moment = now or utcnow()
    with database(settings, db) as engine:
        with unit_of_work(settings, engine) as session:
            campaign = plans.prepare_campaign(session, get_issue(session, slug).record)
            created = plans.create_plans(
                session, campaign, slug,
                lambda missions: plan_send(missions, at, grace=_grace(settings), now=moment),
                now=moment,
            )  # fmt: skip
        jobs.add_plan_jobs(engine, created)
        assert campaign.id is not None
        ids = {p.id for p in created}
        with unit_of_work(settings, engine, commit=False) as session:
            views = plans.list_plans(session, now=moment, campaign_id=campaign.id)
    log.info(
        "%s (via %s) scheduled %s: campaign %s, plans %s",
        actor.label, actor.via, slug, campaign.id, sorted(i for i in ids if i is not None),
    )  # fmt: skip
    return Scheduled(campaign.id, tuple(v for v in views if v.id in ids))


@dataclass(frozen=True)
class PreviewSlot:
    """One send `schedule --dry-run` would plan: nothing is stored."""

    timezone: str
    local: dt.datetime
    utc: dt.datetime
    missions: tuple[str, ...]
    recipients: int
    moved: str

    def as_dict(self) -> dict[str, object]:
        return {
            "timezone": self.timezone, "next_run_local": self.local.isoformat(),
            "next_run_utc": self.utc.isoformat(),
            "next_run_beijing": in_local_time(self.utc, plans.BEIJING).isoformat(),
            "missions": list(self.missions),
            "recipients": self.recipients, "moved": self.moved,
        }  # fmt: skip


def preview_issue(
    settings: Settings,
    slug: str,
    at: When,
    *,
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> list[PreviewSlot]:
    """What `schedule_issue` would plan, each send with why it is later than asked; the
    campaign rows it needs are made in a transaction that is rolled back."""
    moment = now or utcnow()
    with unit_of_work(settings, db, commit=False) as session:
        campaign = plans.prepare_campaign(session, get_issue(session, slug).record)
        slotted = plans.slotted_rows(
            session, campaign, slug,
            lambda missions: plan_send(missions, at, grace=_grace(settings), now=moment),
        )  # fmt: skip
    return [
        PreviewSlot(
            slot.timezone, in_local_time(slot.fire_at, slot.timezone), slot.fire_at,
            slot.missions, len(ids), slot.why,
        )
        for slot, ids in slotted
    ]  # fmt: skip


def list_plans(
    settings: Settings, *, db: Engine | None = None, now: dt.datetime | None = None
) -> list[PlanView]:
    """Every planned send, by when it fires, with its recipients and what became of them."""
    with unit_of_work(settings, db, commit=False) as session:
        return plans.list_plans(session, now=now or utcnow())


@dataclass(frozen=True)
class CancelledPlan:
    plan: int
    skipped: int  # its unsent rows, now skipped


def cancel_plans(
    settings: Settings,
    plan_ids: Sequence[int] = (),
    *,
    issue: str | None = None,
    actor: Actor,
    on_cancelled: Callable[[CancelledPlan], None] | None = None,
    db: Engine | None = None,
) -> list[CancelledPlan]:
    """Cancel planned sends (`issue`: every one of that issue still planned), one at a time.

    A plan that cannot be cancelled (fired, missed, cancelled already) raises `PlanStateError`
    and stops there; those before it stay cancelled, each told to `on_cancelled` as it goes.
    """
    done: list[CancelledPlan] = []
    with database(settings, db) as engine:
        with unit_of_work(settings, engine, commit=False) as session:
            ids = list(plan_ids)
            if issue:
                campaign, _ = open_campaign(session, get_issue(session, issue).record)
                ids += plans.planned_ids(session, campaign.id or 0)
        for plan_id in dict.fromkeys(ids):
            with unit_of_work(settings, engine) as session:
                skipped = plans.cancel_plan(session, plan_id, utcnow())
            jobs.remove_jobs(engine, [jobs.plan_job_id(plan_id)])
            log.info("%s (via %s) cancelled plan %s", actor.label, actor.via, plan_id)
            done.append(CancelledPlan(plan_id, skipped))
            if on_cancelled is not None:
                on_cancelled(done[-1])
    return done


# --- recurring digests ------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestJob:
    """One job of a digest (one per time zone when its cron reads local time)."""

    id: int
    cron: str
    local: bool
    timezone: str
    state: str
    working_days: bool
    next_run_utc: str | None
    next_run_local: str | None
    last_run_at: str | None
    last_run_state: str | None
    last_enqueued: int | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduledDigest:
    digest: int
    zones: tuple[str, ...]
    jobs: tuple[DigestJob, ...]


def _iso(value: dt.datetime | None, timezone: str = "") -> str | None:
    return None if value is None else in_local_time(value, timezone or "UTC").isoformat()


def _digest_jobs(session: Session, db: Engine) -> list[DigestJob]:
    next_runs = jobs.next_run_times(db)
    last = digests.last_runs(session)
    rows = []
    for digest in digests.all_digests(session):
        assert digest.id is not None
        for timezone in digests.digest_zones(session, digest):
            next_run = next_runs.get(jobs.digest_job_id(digest.id, timezone))
            run = last.get((digest.id, timezone))
            rows.append(
                DigestJob(
                    id=digest.id, cron=digest.cron, local=digest.local,
                    timezone=timezone or "UTC", state=str(digest.state),
                    working_days=digest.working_days,
                    next_run_utc=_iso(next_run), next_run_local=_iso(next_run, timezone),
                    last_run_at=_iso(run.ran_at) if run else None,
                    last_run_state=run.state if run else None,
                    last_enqueued=run.enqueued if run else None,
                )
            )  # fmt: skip
    return rows


def schedule_digest(
    settings: Settings,
    *,
    cron: str,
    local: bool,
    actor: Actor,
    working_days: bool = False,
    db: Engine | None = None,
    now: dt.datetime | None = None,
) -> ScheduledDigest:
    """Send every subscriber, on a cron (`local`: each mission's clock), what they have not had
    (`working_days`: a mission closed on a run's day gets it at its next working morning)."""
    moment = now or utcnow()
    # A bad expression, or one that never fires, is refused before anything is stored.
    jobs.refuse_never_firing(cron, moment)
    with database(settings, db) as engine:
        with unit_of_work(settings, engine) as session:
            digest = digests.create_digest(
                session, cron=cron, local=local, now=moment, working_days=working_days
            )
            zones = digests.digest_zones(session, digest)
        jobs.add_digest_jobs(engine, digest, zones, _grace(settings))
        with unit_of_work(settings, engine, commit=False) as session:
            mine = [j for j in _digest_jobs(session, engine) if j.id == digest.id]
    assert digest.id is not None
    log.info("%s (via %s) scheduled digest %s (%s)", actor.label, actor.via, digest.id, cron)
    return ScheduledDigest(digest.id, tuple(zones), tuple(mine))


def list_digests(settings: Settings, *, db: Engine | None = None) -> list[DigestJob]:
    """Each digest job with its next run and its last run."""
    with database(settings, db) as engine, unit_of_work(settings, engine, commit=False) as session:
        return _digest_jobs(session, engine)


def cancel_digest(
    settings: Settings, digest_id: int, *, actor: Actor, db: Engine | None = None
) -> int:
    """Stop a recurring digest (rows its past runs queued still go out); jobs removed."""
    with database(settings, db) as engine:
        with unit_of_work(settings, engine) as session:
            digests.cancel_digest(session, digest_id)
        mine = [
            job_id for job_id in jobs.next_run_times(engine)
            if jobs.parse_job_id(job_id)[:2] == ("digest", digest_id)
        ]  # fmt: skip
        jobs.remove_jobs(engine, mine)
    log.info("%s (via %s) cancelled digest %s", actor.label, actor.via, digest_id)
    return len(mine)
