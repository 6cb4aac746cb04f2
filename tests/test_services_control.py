"""The control services every door calls: campaigns, schedules and digests, bounces."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.errors import NewsletterError
from newsletter.models import (
    AuditEvent,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberStatus,
)
from newsletter.scheduling import jobs
from newsletter.scheduling.plans import PlanStateError
from newsletter.scheduling.rules import When
from newsletter.services import bounces, campaigns, scheduling, sending
from newsletter.services import subscribers as people
from newsletter.services.actors import Actor, Scope
from newsletter.states import CampaignStateError
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, invoke, load_sample

STAFF = Actor.staff("li.wei@example.org")
BERLIN = Scope.of({"de-berlin"})
FAR = dt.datetime(2035, 3, 1, 9, 0, tzinfo=dt.UTC)
BOUNCES = Path(__file__).parent / "fixtures" / "bounces"
ZHANG = "zhang.san@mission-berlin.example.org"  # the recipient of postfix-5.1.1.eml
OUR_ID = re.compile(rb"<\d+\.[0-9a-f]{20}@newsletter\.example\.org>")


@pytest.fixture
def db(instance: Instance) -> Iterator[Engine]:
    engine = make_engine(instance.settings.resolved_database_url)
    yield engine
    engine.dispose()


def _to(smtp: LoopbackController, settings: Settings) -> Settings:
    return settings.overridden({"smtp.host": "127.0.0.1", "smtp.port": smtp.port})


def _said(caplog: pytest.LogCaptureFixture, module: object) -> list[str]:
    name = getattr(module, "__name__", "")
    return [r.getMessage() for r in caplog.records if r.name == name]


def _plan_jobs(db: Engine) -> set[str]:
    return {j for j in jobs.next_run_times(db) if j.startswith("plan-")}


# --- campaigns --------------------------------------------------------------------------------


def test_a_cancel_takes_its_plans_and_jobs_with_it_and_each_change_names_who(
    runner: CliRunner, instance: Instance, db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = instance.settings
    active = load_sample(runner, instance)
    scheduled = scheduling.schedule_issue(settings, "2020-01", When(at=FAR), actor=STAFF, db=db)
    ids = tuple(p.id for p in scheduled.plans)
    assert scheduled.recipients == len(active)
    assert _plan_jobs(db) == {jobs.plan_job_id(i) for i in ids}

    campaign = scheduled.campaign
    paused = campaigns.pause_campaign(settings, campaign, actor=STAFF, db=db)
    assert paused.state == "paused"
    assert campaigns.resume_campaign(settings, campaign, actor=STAFF, db=db).state == "scheduled"
    done = campaigns.cancel_campaign(settings, campaign, actor=STAFF, db=db)
    assert (done.skipped, done.in_flight, done.plans) == (len(active), 0, ids)

    assert {p.state for p in scheduling.list_plans(settings, db=db)} == {"cancelled"}
    assert _plan_jobs(db) == set()  # no job is left to fire for a cancelled campaign
    status = campaigns.campaign_status(settings, campaign, db=db)
    assert (status.state, status.counts) == ("cancelled", {"skipped": len(active)})
    who = "staff:li.wei@example.org (via console)"
    assert _said(caplog, campaigns) == [
        f"{who} paused campaign {campaign}",
        f"{who} resumed campaign {campaign}",
        f"{who} cancelled campaign {campaign}",
    ]
    with pytest.raises(CampaignStateError):
        campaigns.resend_unknown(settings, campaign, actor=STAFF, db=db)


def test_a_report_shows_only_the_scope_s_missions_as_the_smtp_server_saw_them(
    runner: CliRunner, instance: Instance, db: Engine, smtp_server: LoopbackController
) -> None:
    load_sample(runner, instance)
    settings = _to(smtp_server, instance.settings)
    sent = sending.send_issue(settings, "2020-01", actor=STAFF, transport="smtp", db=db)
    received = {m.rcpt for m in smtp_server.handler.received}
    berliners = {v.email for v in people.list_subscribers(settings, scope=BERLIN, db=db)}
    assert berliners and received - berliners  # the sample has people in other missions too

    everyone = campaigns.campaign_report(settings, sent.campaign, scope=Scope.all(), db=db)
    assert {r.email for r in everyone.recipients if r.state == "sent"} == received
    mine = campaigns.campaign_report(settings, sent.campaign, scope=BERLIN, db=db)
    assert {r.email for r in mine.recipients} == berliners & received
    assert set(mine.by_embassy) == {"de-berlin"}
    assert mine.summary == everyone.summary  # the counts are the campaign's, nobody's in them
    assert [c.id for c in campaigns.list_campaigns(settings, db=db)] == [sent.campaign]


def test_resend_unknown_sends_those_rows_again_and_the_finished_campaign_goes_on(
    runner: CliRunner, instance: Instance, db: Engine, smtp_server: LoopbackController
) -> None:
    load_sample(runner, instance)
    settings = _to(smtp_server, instance.settings)
    first = sending.send_issue(settings, "2020-01", actor=STAFF, transport="smtp", db=db)
    assert first.state == "finished"
    lost = smtp_server.handler.received[0].rcpt
    with Session(db) as session:  # as a sender killed mid-send leaves its row
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == lost)).one()
        session.execute(
            update(Delivery)
            .where(col(Delivery.subscriber_id) == subscriber.id)
            .values(state=DeliveryState.UNKNOWN, reply="in flight when its sender stopped")
        )
        session.commit()

    result = invoke(runner, instance, "campaign", "resend-unknown", str(first.campaign))
    assert result.exit_code == 0, result.output
    assert f"campaign {first.campaign}: 1 rows of unknown fate queued again" in result.stderr
    assert campaigns.campaign_status(settings, first.campaign, db=db).state == "sending"
    again = sending.send_campaign_rows(settings, "2020-01", transport="smtp", db=db)
    assert (again.sent, again.state) == (1, "finished")
    counts = Counter(m.rcpt for m in smtp_server.handler.received)
    assert counts[lost] == 2 and {n for r, n in counts.items() if r != lost} == {1}
    assert campaigns.resend_unknown(settings, first.campaign, actor=STAFF, db=db) == 0


# --- schedules and digests --------------------------------------------------------------------


def test_schedule_at_each_missions_hour_then_cancel_the_issue_s_plans(
    runner: CliRunner, instance: Instance, db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = instance.settings
    active = load_sample(runner, instance)
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date()
    when = scheduling.when(settings, local="09:30", date=day.isoformat())
    scheduled = scheduling.schedule_issue(settings, "2020-01", when, actor=STAFF, db=db)
    assert len(scheduled.plans) > 1 and scheduled.recipients == len(active)
    for plan in scheduled.plans:
        assert (plan.next_run_local.date(), plan.next_run_local.time()) == (day, dt.time(9, 30))
        assert plan.next_run_local == plan.next_run_utc  # the same instant, on two clocks
    with pytest.raises(NewsletterError, match="already scheduled"):
        scheduling.schedule_issue(settings, "2020-01", when, actor=STAFF, db=db)

    told: list[scheduling.CancelledPlan] = []
    done = scheduling.cancel_plans(
        settings, issue="2020-01", actor=STAFF, on_cancelled=told.append, db=db
    )
    assert told == done and [d.plan for d in done] == [p.id for p in scheduled.plans]
    assert sum(d.skipped for d in done) == len(active)
    assert _plan_jobs(db) == set()
    with pytest.raises(PlanStateError):
        scheduling.cancel_plans(settings, [done[0].plan], actor=STAFF, db=db)
    assert _said(caplog, scheduling)[-1] == (
        f"staff:li.wei@example.org (via console) cancelled plan {done[-1].plan}"
    )
    with pytest.raises(scheduling.ConflictingTimesError):
        scheduling.when(settings, local="09:00", at=FAR.isoformat())


def test_a_local_digest_has_a_job_per_zone_until_it_is_cancelled(
    runner: CliRunner, instance: Instance, db: Engine
) -> None:
    settings = instance.settings
    load_sample(runner, instance)
    made = scheduling.schedule_digest(settings, cron="0 9 * * MON", local=True, actor=STAFF, db=db)
    assert len(made.zones) > 1 and [j.timezone for j in made.jobs] == list(made.zones)
    for job in made.jobs:
        assert job.next_run_local is not None
        local = dt.datetime.fromisoformat(job.next_run_local)
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    assert scheduling.list_digests(settings, db=db) == list(made.jobs)

    assert scheduling.cancel_digest(settings, made.digest, actor=STAFF, db=db) == len(made.zones)
    listed = scheduling.list_digests(settings, db=db)
    assert {(j.state, j.next_run_utc) for j in listed} == {("cancelled", None)}
    with pytest.raises(NewsletterError):
        scheduling.cancel_digest(settings, made.digest, actor=STAFF, db=db)


# --- bounces ----------------------------------------------------------------------------------


def _status(db: Engine, email: str) -> str:
    with Session(db) as session:
        return str(session.exec(select(Subscriber).where(Subscriber.email == email)).one().status)


def test_bounces_rehearse_then_apply_and_an_undo_names_who_undid_it(
    runner: CliRunner,
    instance: Instance,
    db: Engine,
    smtp_server: LoopbackController,
    tmp_path: Path,
) -> None:
    settings = _to(smtp_server, instance.settings)
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    people.add_subscriber(settings, ZHANG, embassy="de-berlin", actor=STAFF, scope=BERLIN, db=db)
    sending.send_issue(settings, "2020-01", actor=STAFF, transport="smtp", db=db)
    [ours] = [m for m in smtp_server.handler.received if m.rcpt == ZHANG]
    report = tmp_path / "reports" / "postfix-5.1.1.eml"
    report.parent.mkdir()
    returned = str(ours.parsed()["Message-ID"]).encode()
    report.write_bytes(OUR_ID.sub(returned, (BOUNCES / "postfix-5.1.1.eml").read_bytes()))

    rehearsal = bounces.ingest_bounces(settings, [report.parent], actor=STAFF, dry_run=True, db=db)
    [(source, applied)] = rehearsal.bounces
    assert (source, str(applied.outcome)) == (str(report), "disabled")
    assert rehearsal.summary["disabled"] == 1 and _status(db, ZHANG) == "active"
    shown = invoke(runner, instance, "bounces", "ingest", str(report.parent), "--dry-run")
    assert shown.exit_code == 0 and shown.stderr.rstrip().endswith("(dry run)")
    assert _status(db, ZHANG) == "active"

    applied_now = bounces.ingest_bounces(settings, [report.parent], actor=STAFF, db=db)
    assert applied_now.summary["disabled"] == 1 and _status(db, ZHANG) == "bounced"

    why = "relay misconfigured, ticket 4711"
    tried = bounces.undo_bounces(
        settings, emails=[ZHANG], reason=why, actor=STAFF, dry_run=True, db=db
    )
    assert [(d.email, d.status) for d in tried] == [(ZHANG, "active")]
    assert _status(db, ZHANG) == "bounced"
    bounces.undo_bounces(settings, emails=[ZHANG], reason=why, actor=STAFF, db=db)
    assert _status(db, ZHANG) == str(SubscriberStatus.ACTIVE)
    with Session(db) as session:
        last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc())).first()
    assert last is not None
    assert (last.actor, last.via, last.detail) == (
        "staff:li.wei@example.org", "console", f"bounce undone by li.wei@example.org: {why}",
    )  # fmt: skip
