"""`schedule`: plans per zone in the database, jobs in the APScheduler store, misfires."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from sqlalchemy import Engine, text, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter.models import (
    Campaign,
    Delivery,
    ScheduleDelivery,
    SchedulePlan,
    utcnow,
)
from newsletter.scheduling import jobs
from newsletter.scheduling.leader_lock import SchedulerLock
from newsletter.scheduling.rules import zone
from tests.conftest import Instance, at_in, cli, database, fails, invoke, load_sample, plans_json


def a_future(weekday: int) -> dt.date:
    """A date at least two weeks ahead falling on ISO `weekday`."""
    day = dt.date.today() + dt.timedelta(days=14)
    return day + dt.timedelta(days=(weekday - day.isoweekday()) % 7)


def test_one_plan_per_zone_at_the_local_hour(runner: CliRunner, instance: Instance) -> None:
    active = load_sample(runner, instance)
    friday = a_future(5)
    rows = json.loads(cli(runner, instance, "schedule", "2020-01", "--local", "09:00",
                          "--date", friday.isoformat(), "--json"))  # fmt: skip
    assert sum(r["recipients"] for r in rows) == len(active)
    assert len({r["timezone"] for r in rows}) == len(rows)
    keys = {"id", "campaign", "issue", "timezone", "next_run_utc", "next_run_local", "state",
            "recipients", "sent", "missed"}  # fmt: skip
    for r in rows:
        assert keys <= set(r)
        local = dt.datetime.fromisoformat(r["next_run_local"])
        assert (local.date(), local.time()) == (friday, dt.time(9))
        assert local.utcoffset() == zone(r["timezone"]).utcoffset(local.replace(tzinfo=None))
        assert dt.datetime.fromisoformat(r["next_run_utc"]) == local
        assert r["state"] == "planned" and r["issue"] == "2020-01"
    kolkata = next(r for r in rows if r["timezone"] == "Asia/Kolkata")
    assert kolkata["next_run_utc"].endswith("03:30:00+00:00")
    assert plans_json(runner, instance) == rows

    with database(instance) as db, Session(db) as session:
        # Each ledger row waits for its own zone's instant, with the default 6 h grace.
        windows = session.execute(
            select(SchedulePlan.fire_at, Delivery.not_before, Delivery.not_after)
            .join(ScheduleDelivery, col(ScheduleDelivery.plan_id) == col(SchedulePlan.id))
            .join(Delivery, col(Delivery.id) == col(ScheduleDelivery.delivery_id))
        ).all()
        assert len(windows) == len(active)
        for fire_at, not_before, not_after in windows:
            assert not_before == fire_at and not_after - fire_at == dt.timedelta(hours=6)
        stored = jobs.next_run_times(db)
        assert {jobs.plan_job_id(r["id"]) for r in rows} == set(stored)
        for r in rows:
            assert stored[jobs.plan_job_id(r["id"])] == dt.datetime.fromisoformat(r["next_run_utc"])
        campaign = session.get(Campaign, rows[0]["campaign"])
        # Nothing is due before the first plan fires: the campaign waits, it is not sending.
        assert campaign is not None and campaign.state == "scheduled"
    assert {r["campaign_state"] for r in plans_json(runner, instance)} == {"scheduled"}


def test_working_days_move_weekend_missions(runner: CliRunner, instance: Instance) -> None:
    load_sample(runner, instance)
    friday = a_future(5)
    rows = json.loads(cli(runner, instance, "schedule", "2020-01", "--date", friday.isoformat(),
                          "--working-days", "--json"))  # fmt: skip
    dates = {r["timezone"]: r["local_date"] for r in rows}
    sunday = (friday + dt.timedelta(days=2)).isoformat()
    assert dates["Africa/Cairo"] == sunday and dates["Asia/Riyadh"] == sunday
    assert dates["Europe/Berlin"] == friday.isoformat()
    assert all(r["next_run_local"][11:16] == "09:00" for r in rows)


def test_absolute_time_and_input_errors(runner: CliRunner, instance: Instance) -> None:
    active = load_sample(runner, instance)
    assert "UTC offset" in fails(
        runner, instance, "schedule", "2020-01", "--at", "2030-01-01T09:00"
    )
    assert "HH:MM" in fails(runner, instance, "schedule", "2020-01", "--local", "9am")
    assert "already passed" in fails(runner, instance, "schedule", "2020-01", "--at",
                                     "2020-01-01T09:00+08:00")  # fmt: skip
    assert "not found" in fails(runner, instance, "schedule", "2099-09", "--local", "09:00")
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at",
                           "2030-01-07T09:00+08:00", "--json"))  # fmt: skip
    assert row["timezone"] == "UTC+08:00" and row["recipients"] == len(active)
    assert row["next_run_utc"] == "2030-01-07T01:00:00+00:00"
    assert row["next_run_local"] == "2030-01-07T09:00:00+08:00"
    assert "already scheduled" in fails(runner, instance, "schedule", "2020-01", "--local", "09:00")


def test_cancel_skips_rows_removes_the_job_and_allows_rescheduling(
    runner: CliRunner, instance: Instance
) -> None:
    active = load_sample(runner, instance)
    rows = json.loads(cli(runner, instance, "schedule", "2020-01", "--date",
                          a_future(2).isoformat(), "--json"))  # fmt: skip
    berlin = next(r for r in rows if r["timezone"] == "Europe/Berlin")
    result = invoke(runner, instance, "schedule", "cancel", str(berlin["id"]))
    assert result.exit_code == 0, result.output
    assert f"{berlin['recipients']} unsent rows skipped" in result.stderr
    listed = {r["id"]: r for r in plans_json(runner, instance)}
    assert listed[berlin["id"]]["state"] == "cancelled"
    with database(instance) as db:
        assert jobs.plan_job_id(berlin["id"]) not in jobs.next_run_times(db)
    status = json.loads(
        cli(runner, instance, "campaign", "status", str(berlin["campaign"]), "--json")
    )
    assert status["skipped"] == berlin["recipients"]
    assert "cancelled" in fails(runner, instance, "schedule", "cancel", str(berlin["id"]))

    cli(runner, instance, "schedule", "cancel", "--issue", "2020-01")
    with database(instance) as db:
        assert jobs.next_run_times(db) == {}
    again = json.loads(cli(runner, instance, "schedule", "2020-01", "--at",
                           "2030-01-07T09:00Z", "--json"))  # fmt: skip
    assert again[0]["recipients"] == len(active)  # the cancelled rows are taken back


def _backdate(db: Engine, plan_id: int, *, late: dt.timedelta, grace: dt.timedelta) -> None:
    """As if the plan fell due `late` ago while no scheduler ran; its job says the same."""
    fire_at = utcnow() - late
    with Session(db) as session:
        session.execute(update(SchedulePlan).where(col(SchedulePlan.id) == plan_id)
                        .values(fire_at=fire_at, not_after=fire_at + grace))  # fmt: skip
        linked = select(ScheduleDelivery.delivery_id).where(
            col(ScheduleDelivery.plan_id) == plan_id
        )
        session.execute(update(Delivery).where(col(Delivery.id).in_(linked))
                        .values(not_before=fire_at, not_after=fire_at + grace))  # fmt: skip
        session.commit()
        plan = session.get(SchedulePlan, plan_id)
        assert plan is not None
        jobs.add_plan_jobs(db, [plan])


async def _lead_once(db: Engine, seconds: float = 0.5, *, until_woken: bool = False) -> list[str]:
    """A leader's scheduler for a moment, as `run` starts it; what woke the sender.

    `until_woken`: for as long as it takes the sender to be woken (at most `seconds`), not a
    fixed time a busy machine may not be done within.
    """
    woken: list[str] = []
    context = jobs.JobContext(db=db, wake=lambda: woken.append("wake"), grace=dt.timedelta(hours=2))
    jobs.bind(context)
    scheduler = jobs.make_scheduler(db)
    scheduler.start(paused=True)
    try:
        jobs.reconcile(scheduler, context)
        scheduler.resume()
        if until_woken:
            deadline = asyncio.get_running_loop().time() + seconds
            while not woken and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(seconds)
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
        jobs.unbind()
    return woken


@pytest.mark.parametrize(("late", "expected"), [(dt.timedelta(hours=1), "fired"),
                                                (dt.timedelta(hours=3), "missed")])  # fmt: skip
def test_after_downtime_late_within_grace_else_missed(
    runner: CliRunner, instance: Instance, late: dt.timedelta, expected: str
) -> None:
    active = load_sample(runner, instance)
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z",
                           "--json"))  # fmt: skip
    with database(instance) as db:
        _backdate(db, row["id"], late=late, grace=dt.timedelta(hours=2))
        woken = asyncio.run(_lead_once(db))
        assert jobs.next_run_times(db) == {}  # a date job runs (or is missed) once, then goes
        assert bool(woken) == (expected == "fired")
        with Session(db) as session:
            plan = session.get(SchedulePlan, row["id"])
            assert plan is not None and plan.state == expected
            replies = session.exec(select(Delivery.state, Delivery.reply)).all()
    [listed] = plans_json(runner, instance)
    status = json.loads(cli(runner, instance, "campaign", "status", str(row["campaign"]), "--json"))
    if expected == "missed":
        assert {tuple(r) for r in replies} == {("skipped", "missed: send window closed")}
        assert listed["missed"] == len(active) and status["skipped"] == len(active)
    else:
        assert {r[0] for r in replies} == {"queued"}  # due now: the sender takes them
        assert listed["state"] == "fired" and status["queued"] == len(active)
        assert status["state"] == "sending" and listed["campaign_state"] == "sending"


def test_a_missed_plan_reports_the_rows_a_sender_already_skipped(
    runner: CliRunner, instance: Instance
) -> None:
    """A worker that ran after the window closed skips the rows first; the plan still counts them."""
    active = load_sample(runner, instance)
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z",
                           "--json"))  # fmt: skip
    with database(instance) as db:
        _backdate(db, row["id"], late=dt.timedelta(hours=3), grace=dt.timedelta(hours=2))
    cli(runner, instance, "worker", "--once")
    with database(instance) as db:
        asyncio.run(_lead_once(db))
    [listed] = plans_json(runner, instance)
    assert listed["state"] == "missed" and listed["missed"] == len(active)
    assert listed["reason"].endswith(f"0 rows sent, {len(active)} not sent")


def test_a_campaign_whose_only_plan_was_missed_is_not_finished(
    runner: CliRunner, instance: Instance
) -> None:
    active = load_sample(runner, instance)
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z",
                           "--json"))  # fmt: skip
    with database(instance) as db:
        _backdate(db, row["id"], late=dt.timedelta(hours=3), grace=dt.timedelta(hours=2))
        asyncio.run(_lead_once(db))
    status = json.loads(cli(runner, instance, "campaign", "status", str(row["campaign"]), "--json"))
    assert status["state"] == "ready" and status["skipped"] == len(active)
    assert "nobody received it" in status["reason"]
    # Scheduling again takes the missed rows back, and the stale reason goes.
    [again] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z",
                             "--json"))  # fmt: skip
    assert again["recipients"] == len(active)
    status = json.loads(cli(runner, instance, "campaign", "status", str(row["campaign"]), "--json"))
    assert status["state"] == "scheduled" and status["reason"] == ""


def test_job_survives_a_scheduler_restart_and_fires_once(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    # An hour ahead, so the first scheduler cannot fire it however slow the machine.
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", at_in(3600), "--json"))
    job_id = jobs.plan_job_id(row["id"])
    with database(instance) as db:
        # A scheduler that comes and goes before the time leaves the job where it was.
        assert asyncio.run(_lead_once(db, 0.1)) == []
        with jobs.job_store(db) as store:
            job = store.get_job(job_id)
            assert job.func is jobs.fire and job.args == (row["id"],)
            assert job.misfire_grace_time == 6 * 3600 and job.coalesce
        # Its time comes while no scheduler runs; the next one fires it (the first leader saw
        # it, a second is a new process's view).
        _backdate(db, row["id"], late=dt.timedelta(seconds=1), grace=dt.timedelta(hours=6))
        assert asyncio.run(_lead_once(db, 30, until_woken=True)) == ["wake"]
        assert asyncio.run(_lead_once(db, 0.1)) == []
        assert job_id not in jobs.next_run_times(db)
    [listed] = plans_json(runner, instance)
    assert listed["state"] == "fired"


def test_reconcile_restores_a_lost_job_and_fires_a_lost_due_plan(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    rows = json.loads(cli(runner, instance, "schedule", "2020-01", "--date",
                          a_future(3).isoformat(), "--json"))  # fmt: skip
    first, second = rows[0]["id"], rows[1]["id"]
    with database(instance) as db:
        _backdate(db, second, late=dt.timedelta(minutes=5), grace=dt.timedelta(hours=6))
        with db.begin() as conn:
            conn.execute(text("DELETE FROM apscheduler_jobs WHERE id IN (:a, :b)"),
                         {"a": jobs.plan_job_id(first), "b": jobs.plan_job_id(second)})  # fmt: skip
        assert asyncio.run(_lead_once(db, 0.1)) == ["wake"]
        assert jobs.plan_job_id(first) in jobs.next_run_times(db)
    states = {r["id"]: r["state"] for r in plans_json(runner, instance)}
    assert states[first] == "planned" and states[second] == "fired"


def test_a_plan_of_a_cancelled_campaign_does_not_fire(
    runner: CliRunner, instance: Instance
) -> None:
    load_sample(runner, instance)
    [row] = json.loads(cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z",
                           "--json"))  # fmt: skip
    cli(runner, instance, "campaign", "cancel", str(row["campaign"]))
    with database(instance) as db:
        _backdate(db, row["id"], late=dt.timedelta(minutes=1), grace=dt.timedelta(hours=2))
        assert asyncio.run(_lead_once(db)) == ["wake"]
    [listed] = plans_json(runner, instance)
    assert listed["state"] == "cancelled" and listed["sent"] == 0


def test_shared_store_tolerates_jobs_removed_by_another_process(instance: Instance) -> None:
    with database(instance) as db:
        store = jobs.SharedJobStore(db)
        store.remove_job("plan-404")  # no JobLookupError to stop a scheduler's loop
        with jobs.job_store(db) as writer:
            assert writer.get_jobs() == []


def test_one_scheduler_lock_per_database(instance: Instance) -> None:
    with database(instance) as db:
        first, second = SchedulerLock(db), SchedulerLock(db)
        try:
            assert first.acquire() and first.alive()
            assert not second.acquire()
            first.release()
            assert second.acquire()
            assert not first.acquire()
        finally:
            first.release()
            second.release()
