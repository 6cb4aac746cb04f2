"""Recurring digests: jobs per zone, each run sends only issues not yet received, never twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from sqlalchemy import update
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.daemon import Daemon
from newsletter.models import Delivery, DigestRun, ReceivedItem
from newsletter.scheduling import jobs
from newsletter.scheduling.digests import owes_issue
from newsletter.services.worker import Worker
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, database, fails, load_sample

SAMPLE = Path(__file__).parent.parent / "newsletter" / "content" / "samples" / "2020-01.yaml"


def test_an_issue_is_owed_only_whole_and_unseen() -> None:
    assert owes_issue(frozenset({1, 2}), frozenset())
    assert owes_issue(frozenset({1, 2}), frozenset({7}))
    assert not owes_issue(frozenset(), frozenset())  # nothing in it for them
    assert not owes_issue(frozenset({1, 2}), frozenset({2}))  # part of it already sent


def test_digest_jobs_per_zone_with_crontab_weekdays(runner: CliRunner, instance: Instance) -> None:
    [utc] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * 1", "--json"))
    nxt = dt.datetime.fromisoformat(utc["next_run_utc"])
    assert (nxt.isoweekday(), nxt.time()) == (1, dt.time(9)) and utc["timezone"] == "UTC"
    local = json.loads(
        cli(
            runner,
            instance,
            "digest",
            "schedule",
            "--cron",
            "30 8 * * MON-FRI",
            "--local",
            "--json",
        )
    )
    zones = {r["timezone"] for r in local}
    assert {"Europe/Berlin", "Asia/Kolkata", "America/New_York", "Australia/Sydney"} <= zones
    for row in local:
        when = dt.datetime.fromisoformat(row["next_run_local"])
        assert when.time() == dt.time(8, 30) and when.isoweekday() <= 5
    listed = json.loads(cli(runner, instance, "digest", "list", "--json"))
    assert len(listed) == 1 + len(local)
    assert "not both" in fails(runner, instance, "digest", "schedule", "--cron", "0 9 1 * MON")
    assert "--cron" in fails(runner, instance, "digest", "schedule", "--cron", "every monday")

    result = runner.invoke(
        app, ["--config", str(instance.config), "digest", "cancel", str(local[0]["id"])]
    )
    assert result.exit_code == 0 and f"{len(local)} jobs removed" in result.stderr
    with database(instance) as db:
        assert list(jobs.next_run_times(db)) == [jobs.digest_job_id(utc["id"], "")]


def _second_issue(tmp_path: Path) -> Path:
    text = SAMPLE.read_text(encoding="utf-8").replace("\nnumber: 1\n", "\nnumber: 2\n", 1)
    target = tmp_path / "2020-02.yaml"
    target.write_text(text, encoding="utf-8")
    return target


async def _run_digest_and_send(instance: Instance, digest_id: int, timezone: str) -> None:
    """One digest run as the leader runs it, then the sender until the queue is empty."""
    settings = instance.settings
    with database(instance) as db:
        stop = asyncio.Event()
        daemon = Daemon(settings, db, stop=stop, say=lambda _: None)
        jobs.bind(jobs.JobContext(db=db, wake=lambda: None, grace=dt.timedelta(hours=6)))
        try:
            await jobs.run_digest(digest_id, timezone)
        finally:
            jobs.unbind()
        worker = Worker(settings, db, stop=stop, on_report=daemon.reported)
        while await worker.round():
            pass


def test_each_run_sends_only_what_is_new_and_nothing_twice(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    [digest] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * MON",
                              "--json"))  # fmt: skip

    asyncio.run(_run_digest_and_send(instance, digest["id"], ""))
    assert Counter(r.rcpt for r in smtp_server.handler.received) == Counter(active)
    with database(instance) as db, Session(db) as session:
        ledger = session.exec(select(ReceivedItem)).all()
        assert {r.subscriber_id for r in ledger} and len(ledger) > len(active)

    asyncio.run(_run_digest_and_send(instance, digest["id"], ""))  # nothing new: nothing sent
    assert len(smtp_server.handler.received) == len(active)

    cli(runner, instance, "issue", "import", str(_second_issue(tmp_path)))
    asyncio.run(_run_digest_and_send(instance, digest["id"], ""))
    second = smtp_server.handler.received[len(active) :]
    assert Counter(r.rcpt for r in second) == Counter(active)
    assert all("第2期" in str(r.parsed()["Subject"]) or "No. 2" in str(r.parsed()["Subject"])
               for r in second)  # fmt: skip
    with database(instance) as db, Session(db) as session:
        runs = session.exec(select(DigestRun).order_by(DigestRun.id)).all()  # type: ignore[arg-type]
        assert [r.enqueued for r in runs] == [len(active), 0, len(active)]
    campaigns = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert [c["issue"] for c in campaigns] == ["2020-01", "2020-02"]


def test_local_digest_run_serves_only_its_zone(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    load_sample(runner, instance)
    rows = json.loads(cli(runner, instance, "subscribers", "list", "--json"))
    berlin = {r["email"] for r in rows if r["status"] == "active" and r["embassy"] in
              ("de-berlin", "de-munich-cg")}  # fmt: skip
    [digest, *_] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * MON",
                                  "--local", "--json"))  # fmt: skip
    asyncio.run(_run_digest_and_send(instance, digest["id"], "Europe/Berlin"))
    assert berlin and {r.rcpt for r in smtp_server.handler.received} == berlin


def test_a_missed_digest_run_is_recorded(runner: CliRunner, instance: Instance) -> None:
    [digest] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * MON",
                              "--json"))  # fmt: skip
    with database(instance) as db:
        jobs.bind(jobs.JobContext(db=db, wake=lambda: None, grace=dt.timedelta(hours=6)))
        try:
            when = dt.datetime(2030, 1, 7, 9, tzinfo=dt.UTC)
            jobs.on_missed(JobExecutionEvent(EVENT_JOB_MISSED, jobs.digest_job_id(digest["id"], ""),
                                             "default", when))  # fmt: skip
        finally:
            jobs.unbind()
    [row] = json.loads(cli(runner, instance, "digest", "list", "--json"))
    assert row["last_run_state"] == "missed" and row["last_enqueued"] == 0


def test_digest_sends_what_a_cancelled_schedule_left_unsent(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP__PORT", str(smtp_server.port))
    active = load_sample(runner, instance)
    cli(runner, instance, "schedule", "2020-01", "--at", "2030-01-07T09:00Z")
    cli(runner, instance, "schedule", "cancel", "--issue", "2020-01")
    with database(instance) as db, Session(db) as session:
        assert set(session.exec(select(Delivery.skip_reason)).all()) == {"plan_cancelled"}
        # The reply is for people and may be reworded: what is taken back is read elsewhere.
        session.execute(update(Delivery).values(reply="Versand abgesagt"))
        session.commit()
    [digest] = json.loads(cli(runner, instance, "digest", "schedule", "--cron", "0 9 * * MON",
                              "--json"))  # fmt: skip
    asyncio.run(_run_digest_and_send(instance, digest["id"], ""))
    assert Counter(r.rcpt for r in smtp_server.handler.received) == Counter(active)
    [campaign] = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert campaign["sent"] == len(active) and campaign["total"] == len(active)
