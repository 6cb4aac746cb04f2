"""The sending engine against a real SMTP server: retries, bounces, pauses, windows, crash safety."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.cli import app
from newsletter.config import DeliverySettings, Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.campaigns import get_campaign, prepare_send
from newsletter.delivery.engine import SendReport
from newsletter.issues import get_issue
from newsletter.models import (
    AuditEvent,
    CampaignState,
    Delivery,
    DeliveryState,
    Subscriber,
    utcnow,
)
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from tests.conftest import Clock, Instance, cli, ledger_by_email, send_sample

PEOPLE = [f"p{i}@mission{i % 3}.example.org" for i in range(6)]


@pytest.fixture
def loaded(runner: CliRunner, instance: Instance) -> Instance:
    """The sample issue and six active subscribers."""
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    for i, email in enumerate(PEOPLE):
        cli(
            runner,
            instance,
            "subscribers",
            "add",
            email,
            "--embassy",
            "de-berlin",
            "--name",
            f"人{i}",
        )
    return instance


def _settings(instance: Instance, smtp: LoopbackController, **smtp_overrides: object) -> Settings:
    overrides = {f"smtp.{key}": value for key, value in smtp_overrides.items()}
    return instance.settings.overridden(
        {"smtp.host": "127.0.0.1", "smtp.port": smtp.port, "smtp.timeout": 5, **overrides}
    )


def _run(
    settings: Settings,
    clock: Clock,
    delivery: DeliverySettings | None = None,
    *,
    prepare: bool = True,
) -> SendReport:
    """What `newsletter send` does; `prepare=False`: only the engine, as a worker runs it."""
    return send_sample(
        settings, prepare=prepare, transport="smtp", clock=clock, rng=random.Random(7),
        delivery=delivery or DeliverySettings(retry_base_seconds=60),
    )  # fmt: skip


def _leases_ran_out(settings: Settings) -> bool:
    now = utcnow()
    leases = [r.lease_until for r in ledger_by_email(settings).values() if r.lease_until]
    return all((t if t.tzinfo else t.replace(tzinfo=dt.UTC)) < now for t in leases)


def wait_until(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


def _rows(settings: Settings) -> dict[str, Delivery]:
    return ledger_by_email(settings)


def _subscriber(settings: Settings, email: str) -> tuple[Subscriber, list[AuditEvent]]:
    db = runtime.open_database(settings)
    with Session(db) as session:
        sub = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        events = list(session.exec(select(AuditEvent).where(AuditEvent.subscriber_id == sub.id)))
    db.dispose()
    return sub, events


def test_temporary_failures_are_retried_with_backoff_then_sent_once(
    loaded: Instance, smtp_server: LoopbackController
) -> None:
    settings, clock = _settings(loaded, smtp_server), Clock()
    smtp_server.handler.script(PEOPLE[0], "451 4.7.1 greylisted, try again later")
    first = _run(settings, clock)
    assert first.sent == 5 and first.retry == 1 and first.state == "sending"
    row = _rows(settings)[PEOPLE[0]]
    assert row.state == DeliveryState.RETRY and row.attempts == 1 and "451" in row.reply
    assert row.next_attempt_at is not None
    wait = row.next_attempt_at - clock.now
    assert dt.timedelta(seconds=30) <= wait <= dt.timedelta(seconds=90)

    early = _run(settings, clock)  # not yet due: nothing happens
    assert early.sent == 0 and early.retry == 1
    clock.advance(seconds=91)
    second = _run(settings, clock)
    assert second.sent == 1 and second.state == "finished"
    assert Counter(r.rcpt for r in smtp_server.handler.received) == Counter(PEOPLE)
    assert _rows(settings)[PEOPLE[0]].attempts == 2


def test_retries_stop_at_max_attempts(loaded: Instance, smtp_server: LoopbackController) -> None:
    settings, clock = _settings(loaded, smtp_server), Clock()
    smtp_server.handler.script(PEOPLE[1], *["450 4.2.0 mailbox busy"] * 10)
    policy = DeliverySettings(max_attempts=3, retry_base_seconds=1)
    for _ in range(3):
        report = _run(settings, clock, policy)
        clock.advance(hours=1)
    assert report.state == "finished"
    row = _rows(settings)[PEOPLE[1]]
    assert row.state == DeliveryState.FAILED and row.attempts == 3
    assert _subscriber(settings, PEOPLE[1])[0].status == "active"


def test_user_unknown_fails_at_once_and_marks_the_subscriber_bounced(
    loaded: Instance, smtp_server: LoopbackController
) -> None:
    settings = _settings(loaded, smtp_server)
    smtp_server.handler.script(PEOPLE[2], "550 5.1.1 <p2@mission2.example.org>: user unknown")
    smtp_server.handler.script(PEOPLE[3], "554 5.7.1 rejected by policy")
    report = _run(settings, Clock())
    assert report.sent == 4 and report.failed == 2 and report.state == "finished"
    rows = _rows(settings)
    assert rows[PEOPLE[2]].attempts == 1 and rows[PEOPLE[2]].state == DeliveryState.FAILED
    bounced, events = _subscriber(settings, PEOPLE[2])
    assert bounced.status == "bounced"
    assert any(
        e.new_status == "bounced" and "5.1.1" in e.detail and e.via == "bounce" for e in events
    )
    assert _subscriber(settings, PEOPLE[3])[0].status == "active"


def test_authentication_failure_pauses_the_campaign_and_blames_nobody(
    loaded: Instance,
) -> None:
    server = start_sink(RecordingHandler(), login=("newsletter", "right"))
    try:
        settings = _settings(loaded, server, username="newsletter", password="wrong")
        report = _run(settings, Clock())
        assert report.state == "paused" and "authentication" in report.reason
        rows = _rows(settings)
        assert {r.state for r in rows.values()} == {DeliveryState.QUEUED}
        assert {r.attempts for r in rows.values()} == {0}
        assert all(_subscriber(settings, p)[0].status == "active" for p in PEOPLE)

        settings = settings.overridden({"smtp.password": "right"})
        db = runtime.open_database(settings)
        with Session(db) as session:
            campaign = get_campaign(session, 1)
            campaign.state = CampaignState.SENDING  # what `campaign resume` does
            session.add(campaign)
            session.commit()
        db.dispose()
        assert _run(settings, Clock()).sent == len(PEOPLE)
        assert len(server.handler.received) == len(PEOPLE)
    finally:
        server.stop()


def test_unreachable_server_pauses_instead_of_failing_everyone(loaded: Instance) -> None:
    server = start_sink()
    port = server.port
    server.stop()  # nothing listens there now
    settings = loaded.settings.overridden(
        {"smtp.host": "127.0.0.1", "smtp.port": port, "smtp.timeout": 2}
    )
    report = _run(settings, Clock())
    assert report.state == "paused" and "cannot reach" in report.reason
    assert {r.state for r in _rows(settings).values()} == {DeliveryState.QUEUED}


def test_a_burst_of_421_pauses_the_campaign(
    loaded: Instance, smtp_server: LoopbackController
) -> None:
    settings = _settings(loaded, smtp_server)
    smtp_server.handler.mail_replies.extend(["421 4.7.0 too many connections"] * 20)
    report = _run(settings, Clock())
    assert report.state == "paused" and "421" in report.reason
    assert report.failed == 0


def test_send_window_is_honoured_and_a_missed_window_is_never_sent_late(
    loaded: Instance, smtp_server: LoopbackController
) -> None:
    settings, clock = _settings(loaded, smtp_server), Clock()
    db = runtime.open_database(settings)
    with Session(db) as session:
        campaign, _ = prepare_send(session, get_issue(session, "2020-01").record)
        rows = list(session.exec(select(Delivery).order_by(col(Delivery.id))))
        for i, row in enumerate(rows):
            # Half due in an hour (open for six), half whose window closed an hour ago.
            start = (
                clock.now + dt.timedelta(hours=1) if i % 2 else clock.now - dt.timedelta(hours=7)
            )
            row.not_before, row.not_after = start, start + dt.timedelta(hours=6)
            session.add(row)
        session.commit()
    db.dispose()
    early = _run(settings, clock, prepare=False)
    assert early.sent == 0 and early.skipped == 3
    clock.advance(hours=1, seconds=1)
    on_time = _run(settings, clock, prepare=False)
    assert on_time.sent == 3 and on_time.state == "finished"
    missed = [r for r in _rows(settings).values() if r.state == DeliveryState.SKIPPED]
    assert len(missed) == 3 and all("missed" in r.reply for r in missed)
    # Staff asking for a send now is different: the missed rows go.
    assert _run(settings, clock).sent == 3


def test_a_second_sqlite_sender_is_refused_with_a_reason(runner: CliRunner, tmp_path: Path) -> None:
    from newsletter.delivery.locks import SenderLock
    from tests.conftest import make_instance

    # SQLite only: on PostgreSQL several senders share a campaign (see the workers test).
    sqlite = make_instance(tmp_path, f"sqlite:///{tmp_path / 'one.db'}")
    cli(runner, sqlite, "init")
    cli(runner, sqlite, "issue", "import", str(sample_issue_path()))
    db = runtime.open_database(sqlite.settings)
    with SenderLock(db):
        result = runner.invoke(app, ["--config", str(sqlite.config), "send", "2020-01"])
        worker = runner.invoke(app, ["--config", str(sqlite.config), "worker", "--once"])
    db.dispose()
    # The refusal names the process holding the lock and what works beside it.
    assert worker.exit_code == 1 and f"another sender (pid {os.getpid()}:" in worker.stderr
    assert "`newsletter send SLUG` hands it one" in worker.stderr
    # `send` is not refused: it would leave its campaign to that sender (tests/
    # test_first_day_send.py sees one sent), and here says there is nobody to send it to.
    assert result.exit_code == 0, result.output
    assert "nothing to send: 2020-01 has no recipients" in result.stdout


def _newsletter() -> str:
    return str(Path(sys.executable).parent / "newsletter")


def test_kill_9_mid_send_then_send_again_reaches_everyone_once(
    runner: CliRunner, instance: Instance
) -> None:
    """The ledger, not the process, is the truth: a crash loses nobody and doubles nobody."""
    people = [f"k{i:03d}@example.org" for i in range(60)]
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    csv_text = "email,name,title,sectors,language\n" + "".join(f"{p},,,,zh\n" for p in people)
    lists = instance.dir / "lists"
    lists.mkdir()
    (lists / "de-berlin.csv").write_text(csv_text, encoding="utf-8")
    cli(runner, instance, "subscribers", "import", str(lists))

    handler = RecordingHandler(data_delay=0.05)
    server = start_sink(handler)
    # A short lease: on PostgreSQL a claimed row is only presumed lost once its lease runs out
    # (another host's worker may still be sending it); SQLite's lock proves nobody else is.
    env = {**os.environ, "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__PORT": str(server.port),
           "NEWSLETTER_SMTP__CONCURRENCY": "4", "NEWSLETTER_DELIVERY__BATCH_SIZE": "8",
           "NEWSLETTER_DELIVERY__LEASE_SECONDS": "1"}  # fmt: skip
    command = [_newsletter(), "--config", str(instance.config), "send", "2020-01"]
    try:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while len(handler.received) < 15 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert 15 <= len(handler.received) < len(people)
        # Until the dead sender's leases have run out (in the database's own terms).
        wait_until(lambda: _leases_ran_out(instance.settings), timeout=30)

        again = subprocess.run(
            [*command, "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0, again.stderr
        counts = Counter(r.rcpt for r in handler.received)
        assert max(counts.values()) == 1  # nobody twice
        rows = _rows(instance.settings)
        unknown = {e for e, r in rows.items() if r.state == DeliveryState.UNKNOWN}
        assert len(unknown) <= 4  # at most one window (concurrency) was on the wire at the kill
        assert json.loads(again.stdout)["unknown"] == len(unknown)
        assert set(counts) | unknown == set(people)  # nobody lost

        resend = subprocess.run(
            [*command, "--resend-unknown"], env=env, capture_output=True, text=True, timeout=60
        )
        assert resend.returncode == 0, resend.stderr
        assert {r.rcpt for r in handler.received} == set(people)
        assert {r.state for r in _rows(instance.settings).values()} == {DeliveryState.SENT}
    finally:
        server.stop()


@pytest.mark.postgres
def test_several_workers_share_one_campaign_on_postgresql(
    runner: CliRunner, tmp_path: Path, pg_url: str
) -> None:
    from tests.conftest import make_instance

    instance = make_instance(tmp_path, pg_url)
    cli(runner, instance, "init")
    people = [f"w{i:03d}@example.org" for i in range(120)]
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "fr-paris.csv").write_text(
        "email,name,title,sectors,language\n" + "".join(f"{p},,,,zh\n" for p in people),
        encoding="utf-8",
    )
    cli(runner, instance, "subscribers", "import", str(lists))
    db = runtime.open_database(instance.settings)
    with Session(db) as session:
        prepare_send(session, get_issue(session, "2020-01").record)
        session.commit()
    db.dispose()

    handler = RecordingHandler(data_delay=0.01, hold_until_greeted=3)
    server = start_sink(handler)
    env = {**os.environ, "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__PORT": str(server.port),
           "NEWSLETTER_DELIVERY__BATCH_SIZE": "10"}  # fmt: skip
    command = [_newsletter(), "--config", str(instance.config), "worker", "--once"]
    try:
        # Each worker greets (EHLO) and signs its Message-IDs with a domain of its own.
        workers = [
            subprocess.Popen(
                command,
                env={**env, "NEWSLETTER_DOMAIN": f"worker{i}.example.org"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(3)
        ]
        for w in workers:
            _, stderr = w.communicate(timeout=60)
            assert w.returncode == 0, stderr
        counts = Counter(r.rcpt for r in handler.received)
        assert set(counts) == set(people) and max(counts.values()) == 1
        rows = _rows(instance.settings)
        assert {r.state for r in rows.values()} == {DeliveryState.SENT}
        # Every worker did real work: each row's Message-ID names the worker that sent it.
        senders = Counter(r.message_id.rsplit("@", 1)[1].rstrip(">") for r in rows.values())
        assert set(senders) == {f"worker{i}.example.org" for i in range(3)}, senders
        assert len({r.message_id for r in rows.values()}) == len(people)
    finally:
        server.stop()


def test_a_hang_up_after_the_final_dot_is_retried_not_counted_sent(
    loaded: Instance, smtp_server: LoopbackController
) -> None:
    """The server stored the message but never said so: SMTP cannot tell, so the row retries
    (a second copy beats a lost one, as every MTA decides), and the ledger says why."""
    settings, clock = _settings(loaded, smtp_server), Clock()
    smtp_server.handler.hang_up_after_data.add(PEOPLE[0])
    first = _run(settings, clock)
    assert first.sent == 5 and first.retry == 1 and first.state == "sending"
    row = _rows(settings)[PEOPLE[0]]
    assert row.state == DeliveryState.RETRY and "connection" in row.reply
    clock.advance(minutes=5)
    assert _run(settings, clock).state == "finished"
    assert _rows(settings)[PEOPLE[0]].state == DeliveryState.SENT


def test_a_stalled_server_pauses_the_campaign_within_the_timeout(loaded: Instance) -> None:
    server = start_sink(RecordingHandler(data_delay=3))
    try:
        settings = _settings(loaded, server, timeout=0.5)
        report = _run(settings, Clock())
        # The 0.5 s timeout, not the 3 s the server stalls, ended the attempt: nobody is blamed.
        assert report.state == "paused" and "timed out" in report.reason
        rows = _rows(settings)
        assert {r.state for r in rows.values()} == {DeliveryState.QUEUED}
        assert {r.attempts for r in rows.values()} == {0}
    finally:
        server.stop()
