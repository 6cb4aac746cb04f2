"""APScheduler 3.11 wiring: the job store on the application database and module-level jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Engine
from sqlmodel import Session

from newsletter.errors import NewsletterError
from newsletter.models import DigestSchedule, SchedulePlan, utcnow
from newsletter.scheduling import digests, plans
from newsletter.scheduling.arrival import DEFAULT_CATCH_UP
from newsletter.scheduling.rules import (
    HORIZON,
    HORIZON_YEARS,
    ScheduleInputError,
    crontab_fields,
    grace_seconds,
    zone,
)

log = logging.getLogger(__name__)
JOBSTORE_TABLE = "apscheduler_jobs"


def plan_job_id(plan_id: int) -> str:
    return f"plan-{plan_id}"


def digest_job_id(digest_id: int, timezone: str) -> str:
    return f"digest-{digest_id}@{timezone}" if timezone else f"digest-{digest_id}"


def parse_job_id(job_id: str) -> tuple[str, int, str]:
    """("plan", id, "") or ("digest", id, zone) from a job id; ("", 0, "") for anything else."""
    kind, _, rest = job_id.partition("-")
    number, _, timezone = rest.partition("@")
    if kind in ("plan", "digest") and number.isdigit():
        return kind, int(number), timezone
    return "", 0, ""


class SharedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The SQLAlchemy job store on the application's engine, written by several processes.

    `schedule cancel` may delete a job between the scheduler reading it and updating or
    removing it; APScheduler 3 would then raise JobLookupError out of its main loop and stop
    firing anything. A job another process removed is simply gone. The engine belongs to the
    application, so shutting the store down must not dispose of it.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine=engine, tablename=JOBSTORE_TABLE)

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            log.info("job %s was removed by another process", job.id)

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            log.info("job %s was already removed", job_id)

    def shutdown(self) -> None:
        pass


class _StoreWriter(BaseScheduler):  # type: ignore[misc]
    """A scheduler that never runs jobs, for commands that only add, list or remove them.

    A started-but-paused BackgroundScheduler would do, except that its thread processes due
    jobs once more on shutdown (APScheduler 3.11) and may drop one it cannot submit.
    """

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def wakeup(self) -> None:
        pass


@contextmanager
def job_store(db: Engine) -> Iterator[Any]:
    """A paused scheduler over the shared job store: add, get and remove jobs, fire nothing."""
    writer = _StoreWriter(jobstores={"default": SharedJobStore(db)}, timezone=dt.UTC)
    writer.start(paused=True)
    try:
        yield writer
    finally:
        writer.shutdown(wait=False)


def _add_plan_job(scheduler: Any, plan: SchedulePlan, *, replace: bool = True) -> None:
    assert plan.id is not None
    scheduler.add_job(
        fire, trigger=DateTrigger(run_date=plan.fire_at), args=[plan.id],
        id=plan_job_id(plan.id), name=f"send plan {plan.id} ({plan.timezone})",
        misfire_grace_time=grace_seconds(plan.not_after - plan.fire_at),
        coalesce=True, replace_existing=replace,
    )  # fmt: skip


def add_plan_jobs(db: Engine, created: Iterable[SchedulePlan]) -> None:
    with job_store(db) as store:
        for plan in created:
            _add_plan_job(store, plan)


def cron_trigger(cron: str, timezone: str) -> Any:
    try:
        return CronTrigger(**crontab_fields(cron), timezone=zone(timezone or "UTC"))
    except ValueError as exc:
        if isinstance(exc, NewsletterError):
            raise
        raise ScheduleInputError("--cron", cron, str(exc)) from None


def refuse_never_firing(cron: str, now: dt.datetime) -> None:
    """Refuse a cron with no run between `now` and the horizon (and a malformed one).

    `0 9 31 2 *` parses, but February has no 31st: the digest would wait for ever. A leap-day
    cron (`29 2`) fires within eight years, inside the horizon.
    """
    cron_trigger(cron, "")  # a malformed expression gets its own message first
    bounded = CronTrigger(**crontab_fields(cron), timezone=dt.UTC, end_date=now + HORIZON)
    if bounded.get_next_fire_time(None, now) is None:
        raise ScheduleInputError(
            "--cron", cron,
            f"never fires in the next {HORIZON_YEARS} years; check that the day of month "
            "exists in the month (February has no 30th or 31st, April no 31st)",
        )  # fmt: skip


def _add_digest_job(scheduler: Any, digest: DigestSchedule, timezone: str, grace: int) -> None:
    assert digest.id is not None
    scheduler.add_job(
        run_digest, trigger=cron_trigger(digest.cron, timezone), args=[digest.id, timezone],
        id=digest_job_id(digest.id, timezone), name=f"digest {digest.id} {timezone or 'UTC'}",
        misfire_grace_time=grace, coalesce=True, replace_existing=True,
    )  # fmt: skip


def add_digest_jobs(
    db: Engine, digest: DigestSchedule, zones: Iterable[str], grace: dt.timedelta
) -> None:
    with job_store(db) as store:
        for timezone in zones:
            _add_digest_job(store, digest, timezone, grace_seconds(grace))


def remove_jobs(db: Engine, job_ids: Iterable[str]) -> None:
    with job_store(db) as store:
        for job_id in job_ids:
            try:
                store.remove_job(job_id)
            except JobLookupError:
                pass  # already fired or removed: nothing left to cancel


def next_run_times(db: Engine) -> dict[str, dt.datetime | None]:
    with job_store(db) as store:
        return {job.id: job.next_run_time for job in store.get_jobs()}


@dataclass(frozen=True)
class JobContext:
    """What jobs need from the process running the scheduler (jobs themselves carry ids only)."""

    db: Engine
    wake: Callable[[], None]
    grace: dt.timedelta
    clock: Callable[[], dt.datetime] = utcnow
    # How long after an issue went out a newcomer still gets it from a digest (0: never).
    catch_up: dt.timedelta = DEFAULT_CATCH_UP


class SchedulerNotBoundError(NewsletterError, RuntimeError):
    def __init__(self) -> None:
        super().__init__("scheduler jobs run only inside `newsletter run`")


# Set by the process that holds the scheduler lock while its scheduler runs.
_context: JobContext | None = None


def bind(context: JobContext) -> None:
    global _context
    _context = context


def unbind() -> None:
    global _context
    _context = None


def _bound() -> JobContext:
    if _context is None:
        raise SchedulerNotBoundError()
    return _context


async def fire(plan_id: int) -> None:
    """A plan's time came: record it and wake the sender; the rows' window is open now."""
    context = _bound()
    with Session(context.db, expire_on_commit=False) as session:
        outcome = plans.fire_plan(session, plan_id, context.clock())
        session.commit()
    log.info("plan %s: %s", plan_id, outcome or "nothing to do")
    context.wake()


async def run_digest(digest_id: int, timezone: str) -> None:
    """A digest run: queue each subscriber (of one zone) the issues they are owed."""
    context = _bound()
    # Tailoring every subscriber can take a moment: off the event loop the sender keeps going.
    outcome = await asyncio.to_thread(
        digests.run_digest_once, context.db, digest_id, timezone,
        now=context.clock(), grace=context.grace, catch_up=context.catch_up,
    )  # fmt: skip
    if outcome is not None:
        log.info("digest %s %s: %s queued", digest_id, timezone or "UTC", outcome.enqueued)
    context.wake()


def on_missed(event: JobExecutionEvent) -> None:
    """A job past its misfire grace when the scheduler came back: report it, send nothing."""
    context = _bound()
    kind, number, timezone = parse_job_id(event.job_id)
    now = context.clock()
    with Session(context.db, expire_on_commit=False) as session:
        if kind == "plan":
            plans.miss_plan(session, number, now)
        elif kind == "digest":
            digests.record_run(
                session, number, timezone, state="missed", now=now,
                scheduled_for=event.scheduled_run_time,
            )  # fmt: skip
        session.commit()


def make_scheduler(db: Engine) -> Any:
    """The scheduler `newsletter run` starts once it holds the scheduler lock."""
    scheduler = AsyncIOScheduler(jobstores={"default": SharedJobStore(db)}, timezone=dt.UTC)
    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    return scheduler


def reconcile(scheduler: Any, context: JobContext) -> list[str]:
    """Repair what a crash between two steps could leave: plans or digests without a job.

    A plan whose job is gone is fired now if its window is still open (else marked
    missed); one still ahead gets its job back. Active digests get any job they lack.
    """
    present = {job.id for job in scheduler.get_jobs()}
    known = {n for kind, n, _ in map(parse_job_id, present) if kind == "plan"}
    now = context.clock()
    notes: list[str] = []
    with Session(context.db, expire_on_commit=False) as session:
        for plan in plans.planned_without_job(session, known):
            assert plan.id is not None
            if plan.fire_at > now:
                _add_plan_job(scheduler, plan, replace=False)
                notes.append(f"plan {plan.id}: job restored")
            else:
                outcome = plans.fire_plan(session, plan.id, now)
                notes.append(f"plan {plan.id}: job was lost; {outcome}")
                context.wake()
        for digest in digests.active_digests(session):
            assert digest.id is not None
            for timezone in digests.digest_zones(session, digest):
                if digest_job_id(digest.id, timezone) not in present:
                    _add_digest_job(scheduler, digest, timezone, grace_seconds(context.grace))
                    notes.append(f"digest {digest.id}: job for {timezone or 'UTC'} added")
        session.commit()
    return notes
