"""Ordinary relay behaviour, no crash: nobody twice, nobody failed or bounced by a server fault,
pause and cancel within one window. Asserted at the SMTP server's own log and in the ledger."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import update
from sqlmodel import Session as DbSession
from sqlmodel import col, select
from typer.testing import CliRunner

from newsletter import runtime
from newsletter.cli import app
from newsletter.config import Settings
from newsletter.content.issue_intake import sample_issue_path
from newsletter.delivery.campaigns import prepare_send
from newsletter.delivery.engine import SendReport
from newsletter.issues import get_issue
from newsletter.models import Delivery, DeliveryState, Subscriber, SubscriberStatus, utcnow
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from tests.conftest import (
    Clock,
    Instance,
    cli,
    invoke,
    ledger_by_email,
    make_instance,
    send_sample,
)

DOMAINS = ("mission0.example.org", "mission1.example.org", "mission2.example.org")


class RelayHandler(RecordingHandler):
    """The sink, plus a relay-wide answer to every RCPT (a smarthost's fault) and a RCPT hook."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_every_rcpt: str | None = None
        self.on_rcpt: Callable[[str], None] | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.on_rcpt is not None:
            self.on_rcpt(address)
        if self.refuse_every_rcpt is not None:
            return self.refuse_every_rcpt
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def relay() -> Iterator[LoopbackController]:
    controller = start_sink(RelayHandler())
    yield controller
    controller.stop()


def _handler(relay: LoopbackController) -> RelayHandler:
    handler = relay.handler
    assert isinstance(handler, RelayHandler)
    return handler


def _people(count: int) -> list[str]:
    return [f"p{i:03d}@{DOMAINS[i % len(DOMAINS)]}" for i in range(count)]


def _load(runner: CliRunner, instance: Instance, count: int) -> list[str]:
    """The sample issue and `count` active subscribers at three mission domains."""
    people = _people(count)
    lists = instance.dir / "lists"
    lists.mkdir()
    rows = "".join(f"{p},人{i},参赞,,zh\n" for i, p in enumerate(people))
    (lists / "de-berlin.csv").write_text("email,name,title,sectors,language\n" + rows, "utf-8")
    cli(runner, instance, "subscribers", "import", str(lists))
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    return people


def _settings(instance: Instance, relay: LoopbackController, **delivery: float) -> Settings:
    changes = {f"delivery.{key}": value for key, value in delivery.items()}
    return instance.settings.overridden(
        {"smtp.host": "127.0.0.1", "smtp.port": relay.port, "smtp.timeout": 10, **changes}
    )


def _run(
    settings: Settings, clock: Callable[[], dt.datetime] = utcnow, *, prepare: bool = True
) -> SendReport:
    """What `newsletter send` does (`prepare=False`: the engine alone, as a worker runs it)."""
    return send_sample(
        settings, prepare=prepare, transport="smtp", clock=clock, rng=random.Random(7)
    )


def _statuses(settings: Settings) -> Counter[str]:
    db = runtime.open_database(settings)
    with DbSession(db) as session:
        statuses = Counter(str(s) for s in session.exec(select(Subscriber.status)))
    db.dispose()
    return statuses


def _states(settings: Settings) -> Counter[str]:
    return Counter(str(d.state) for d in ledger_by_email(settings).values())


def _received(relay: LoopbackController) -> Counter[str]:
    return Counter(r.rcpt for r in relay.handler.received)


# --- Ownership outlives any wait ----------------------------------------------------------------


@pytest.mark.parametrize("limit", ["rate", "per_domain_rate"])
def test_a_throttled_send_sends_nobody_twice(
    runner: CliRunner, instance: Instance, relay: LoopbackController, limit: str
) -> None:
    """A batch takes far longer than the lease (1 s): the rows claimed ahead stay this sender's."""
    people = _load(runner, instance, 60)
    # 20 messages a second: 60 take 3 s; at one domain's rate (all three domains at 7/s) as long.
    rate = {"rate": 20.0} if limit == "rate" else {"per_domain_rate": 7.0}
    settings = _settings(instance, relay, lease_seconds=1.0, batch_size=25, **rate)
    report = _run(settings)  # the real clock: leases run out in real time
    assert _received(relay) == Counter(people)  # each once
    assert report.sent == 60 and report.state == "finished"
    assert _states(settings) == Counter({"sent": 60})


# --- Server faults are not recipients' faults --------------------------------------------------


@pytest.mark.parametrize(
    "refusal",
    [
        "550 5.1.1 <x>: Recipient address rejected: User unknown in local recipient table",
        "554 5.7.1 <x>: Relay access denied",
        "500 5.3.0 Internal error",
    ],
)
def test_a_relay_refusing_everyone_pauses_and_fails_or_bounces_nobody(
    runner: CliRunner, instance: Instance, relay: LoopbackController, refusal: str
) -> None:
    people = _load(runner, instance, 60)
    settings = _settings(instance, relay)
    _handler(relay).refuse_every_rcpt = refusal
    report = _run(settings)
    assert report.state == "paused" and "refused" in report.reason and refusal[:9] in report.reason
    assert report.failed == 0
    assert _states(settings) == Counter({"queued": 60})
    assert _statuses(settings) == Counter({"active": 60})

    _handler(relay).refuse_every_rcpt = None  # the relay is fixed; staff resume
    cli(runner, instance, "campaign", "resume", "1")
    assert _run(settings).state == "finished"
    assert _received(relay) == Counter(people)


def test_refusals_at_one_domain_stay_that_domains_own(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    """A mission whose mail domain is gone refuses all its people: that is no relay fault."""
    people = _load(runner, instance, 60)
    settings = _settings(instance, relay)
    gone = [p for p in people if p.endswith(DOMAINS[0])]
    for person in gone:
        relay.handler.script(person, "550 5.1.1 user unknown")
    report = _run(settings)
    assert report.state == "finished" and report.failed == len(gone) == 20
    assert _statuses(settings) == Counter({"active": 40, "bounced": 20})
    assert _received(relay) == Counter(p for p in people if p not in gone)


def test_a_refused_sender_address_pauses_at_once_and_blames_nobody(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    _load(runner, instance, 12)
    settings = _settings(instance, relay)
    relay.handler.mail_replies.extend(["550 5.7.1 sender address rejected"] * 100)
    report = _run(settings)
    assert report.state == "paused" and "MAIL FROM" in report.reason
    assert _states(settings) == Counter({"queued": 12})
    assert all(d.attempts == 0 for d in ledger_by_email(settings).values())


def test_a_quarter_hour_4xx_outage_fails_nobody_and_backs_off_the_campaign(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    people = _load(runner, instance, 40)
    settings, clock = _settings(instance, relay), Clock()
    handler = _handler(relay)
    handler.refuse_every_rcpt = "451 4.3.0 temporary local problem, try again later"
    first = _run(settings, clock)
    assert first.state == "sending" and "backing off" in first.reason
    assert first.failed == 0 and len(handler.received) == 0
    # The campaign backs off: the rows were neither tried again at once nor given up.
    probes = sum(first.replies.values())
    assert probes < 40
    for _ in range(15):  # every minute of the outage, a worker's round
        clock.advance(minutes=1)
        report = _run(settings, clock, prepare=False)
        assert report.failed == 0
    handler.refuse_every_rcpt = None
    for _ in range(8):  # the outage is over; the back-off is at most its length
        clock.advance(minutes=5)
        report = _run(settings, clock, prepare=False)
    assert report.state == "finished" and _received(relay) == Counter(people)
    assert _states(settings) == Counter({"sent": 40})


def test_temporary_failures_are_retried_for_the_time_budget_not_a_number_of_tries(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    people = _load(runner, instance, 6)
    settings, clock = _settings(instance, relay, retry_max_age_hours=2.0), Clock()
    relay.handler.script(people[0], *["450 4.2.0 mailbox busy"] * 40)
    rounds = 0
    while _states(settings).get("retry", 1) and rounds < 60:
        _run(settings, clock, prepare=rounds == 0)
        clock.advance(minutes=10)
        rounds += 1
    row = ledger_by_email(settings)[people[0]]
    # More than the old five attempts, and given up only once two hours had passed.
    assert row.state == DeliveryState.FAILED and row.attempts > 5
    assert row.first_attempt_at is not None
    assert clock.now - row.first_attempt_at.replace(tzinfo=dt.UTC) >= dt.timedelta(hours=2)
    assert _statuses(settings)["active"] == 6


# --- Stop means stop -----------------------------------------------------------------------------


def _sender(instance: Instance, relay: LoopbackController) -> subprocess.Popen[str]:
    """`newsletter send` in its own process, as staff run it."""
    command = [
        str(Path(sys.executable).parent / "newsletter"), "--config", str(instance.config), "send",
        "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(relay.port), "--json",
    ]  # fmt: skip
    env = {**os.environ, "NEWSLETTER_SMTP__CONCURRENCY": "2"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def _wait_for_mail(
    relay: LoopbackController, sender: subprocess.Popen[str], count: int, timeout: float = 120.0
) -> None:
    """Until the relay has `count` messages; fails at once, with its stderr, if the sender ended."""
    deadline = time.monotonic() + timeout
    while len(relay.handler.received) < count:
        if sender.poll() is not None:
            _, errors = sender.communicate()
            pytest.fail(f"the sender ended early ({sender.returncode}): {errors[-2000:]}")
        assert time.monotonic() < deadline, f"{len(relay.handler.received)} of {count} arrived"
        time.sleep(0.02)


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_pause_and_cancel_stop_a_running_sender_within_one_window(
    runner: CliRunner, instance: Instance, relay: LoopbackController, action: str
) -> None:
    people = _load(runner, instance, 60)
    relay.handler.data_delay = 0.2  # a slow relay (60 take 6 s): the send is caught mid-way
    sender = _sender(instance, relay)
    try:
        _wait_for_mail(relay, sender, 10)
        said = invoke(runner, instance, "campaign", action, "1")
        assert said.exit_code == 0, said.output
        at_stop = len(relay.handler.received)
        out, errors = sender.communicate(timeout=120)
    finally:
        sender.kill()
    assert sender.returncode in (0, 1), errors
    received = _received(relay)
    # The window on the wire (2 connections) finishes; nothing after it.
    assert at_stop < 50 and sum(received.values()) - at_stop <= 2
    assert all(n == 1 for n in received.values())
    rows = ledger_by_email(instance.settings)
    sent = {email for email, d in rows.items() if d.state == DeliveryState.SENT}
    assert sent == set(received)  # the ledger says what went out, no more, no less
    if action == "cancel":
        skipped = {email for email, d in rows.items() if d.state == DeliveryState.SKIPPED}
        assert skipped == set(people) - sent
        assert f"{len(skipped)} unsent rows skipped" in said.stderr or "on the wire" in said.stderr
    else:
        assert {d.state for e, d in rows.items() if e not in sent} == {DeliveryState.QUEUED}
        relay.handler.data_delay = 0
        cli(runner, instance, "campaign", "resume", "1")
        cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host",
            "127.0.0.1", "--smtp-port", str(relay.port))  # fmt: skip
        assert _received(relay) == Counter(people)


def test_requeue_failed_sends_rows_that_failed_for_a_fixed_reason(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    people = _load(runner, instance, 12)
    settings = _settings(instance, relay)
    for person in people[:2]:
        relay.handler.script(person, "552 5.3.4 message too big for system")
    report = _run(settings)
    assert report.failed == 2 and report.state == "finished"
    said = invoke(runner, instance, "campaign", "requeue-failed", "1")
    assert said.exit_code == 0 and "2 failed rows queued again" in said.stderr, said.output
    assert _run(settings).sent == 2
    assert _received(relay) == Counter(people)


# --- A bounce never overrides a person's own choice ----------------------------------------------


def test_someone_who_unsubscribes_while_on_the_wire_is_never_made_bounced(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    people = _load(runner, instance, 12)
    settings = _settings(instance, relay)
    leaver = people[4]
    relay.handler.script(leaver, "550 5.1.1 user unknown")
    db = runtime.open_database(settings)
    done = threading.Event()

    def unsubscribe(address: str) -> None:
        if address == leaver and not done.is_set():
            done.set()
            with DbSession(db) as session:  # the one-click link, while the row is on the wire
                session.execute(
                    update(Subscriber)
                    .where(Subscriber.email == leaver)  # type: ignore[arg-type]
                    .values(status=SubscriberStatus.UNSUBSCRIBED)
                )
                session.commit()

    _handler(relay).on_rcpt = unsubscribe
    try:
        report = _run(settings)
    finally:
        db.dispose()
    assert done.is_set() and report.failed == 1
    assert _statuses(settings) == Counter({"active": 11, "unsubscribed": 1})
    row = ledger_by_email(settings)[leaver]
    assert row.state == DeliveryState.FAILED and "5.1.1" in row.reply


def test_campaign_report_json_counts_match_the_server_after_a_cancel(
    runner: CliRunner, instance: Instance, relay: LoopbackController
) -> None:
    """`campaign status --json` after a cancel: sent + skipped is everyone, and sent is exact."""
    _load(runner, instance, 30)
    relay.handler.data_delay = 0.2
    sender = _sender(instance, relay)
    try:
        _wait_for_mail(relay, sender, 5)
        cli(runner, instance, "campaign", "cancel", "1")
        sender.communicate(timeout=120)
    finally:
        sender.kill()
    status = json.loads(
        runner.invoke(
            app, ["--config", str(instance.config), "campaign", "status", "1", "--json"]
        ).stdout
    )
    assert status["sent"] == len(relay.handler.received)
    assert status["sent"] + status["skipped"] == 30


@pytest.mark.postgres
def test_rows_another_live_sender_holds_are_left_alone(
    runner: CliRunner, tmp_path: Path, pg_url: str, relay: LoopbackController
) -> None:
    """PostgreSQL (several senders): rows another sender holds under a live lease are its own."""
    instance = make_instance(tmp_path, pg_url)
    cli(runner, instance, "init")
    _load(runner, instance, 8)
    settings = _settings(instance, relay)
    db = runtime.open_database(settings)
    try:
        with DbSession(db) as session:
            record = get_issue(session, "2020-01").record
            campaign, _ = prepare_send(session, record)
            session.commit()
        # Another sender held the first rows (its lease still runs): this one leaves them alone.
        with DbSession(db) as session:
            session.execute(
                update(Delivery)
                .where(col(Delivery.id) <= 3)
                .values(worker="elsewhere:1", lease_until=utcnow() + dt.timedelta(hours=1))
            )
            session.commit()
    finally:
        db.dispose()
    report = _run(settings, prepare=False)
    assert report.sent == 5 and sum(_received(relay).values()) == 5
    assert _states(settings) == Counter({"sent": 5, "queued": 3})
