"""Bounces: DSN parsing (pure), the eml/mbox/maildir reader, and ingest on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import mailbox
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from newsletter.cli import app
from newsletter.db import make_engine
from newsletter.delivery.bounces import (
    BounceKind,
    BounceSourceError,
    parse_bounces,
    read_messages,
)
from newsletter.models import (
    AuditEvent,
    Campaign,
    Delivery,
    IssueRecord,
    Subscriber,
    SubscriberStatus,
)
from newsletter.subscriptions import store
from newsletter.subscriptions.bounce_policy import Outcome, apply_bounces
from tests.conftest import Instance

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
DOMAIN = "newsletter.example.org"
ZHANG = "zhang.san@mission-berlin.example.org"  # Postfix, 5.1.1, original headers
LI = "li.si@embassy-paris.example.net"  # Exchange Online, 5.1.10
CHEN = "chen.jing@tokyo-mission.example.org"  # Gmail behind our Postfix, 4.2.2 delayed
ZHAO = "zhao.liu@embassy-rome.example.org"  # 5.2.1, the whole original returned
SUBSCRIBERS = (ZHANG, LI, CHEN, ZHAO)
NOW = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _dsn(*recipient_blocks: str, headers: str = "Message-ID: <r1@mx.example.net>\n") -> bytes:
    """A minimal multipart/report around the given per-recipient blocks."""
    blocks = "\n".join(f"{b.strip()}\n" for b in recipient_blocks)
    return (
        f"From: MAILER-DAEMON@mx.example.net\n{headers}"
        "Date: Wed, 8 May 2024 10:00:00 +0000\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee below.\n\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n\n{blocks}\n"
        "--b\nContent-Type: text/rfc822-headers\n\n"
        f"Message-ID: <12.0123456789abcdef0123@{DOMAIN}>\nSubject: x\n\n--b--\n"
    ).encode()


# --- parsing: pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "recipient", "kind", "status", "campaign", "reason"),
    [
        ("postfix-5.1.1.eml", ZHANG, "hard", "5.1.1", 7, "User unknown in virtual mailbox table"),
        ("exchange-5.1.10.eml", LI, "hard", "5.1.10", 7, "RESOLVER.ADR.RecipientNotFound"),
        ("gmail-4.2.2-delayed.eml", CHEN, "soft", "4.2.2", 7, "out of storage space"),
        ("postfix-5.2.1-full-message.eml", ZHAO, "hard", "5.2.1", 8, "is inactive"),
        ("unknown-5.1.1.eml", "nobody.here@mission-berlin.example.org", "hard", "5.1.1", 7, ""),
    ],
)
def test_each_fixture_gives_its_recipient_kind_status_and_campaign(
    name: str, recipient: str, kind: str, status: str, campaign: int, reason: str
) -> None:
    [bounce] = parse_bounces(_fixture(name), domain=DOMAIN) or ()
    assert (bounce.recipient, bounce.kind, bounce.status) == (recipient, kind, status)
    assert bounce.campaign_id == campaign
    assert bounce.message_id.startswith(f"<{campaign}.") and bounce.message_id.endswith(
        f"@{DOMAIN}>"
    )
    assert reason in bounce.diagnostic and "\n" not in bounce.diagnostic
    assert bounce.report_id.startswith("<") and bounce.date is not None


@pytest.mark.parametrize("name", ["autoreply.eml", "read-receipt.eml"])
def test_mail_that_is_not_a_dsn_gives_none(name: str) -> None:
    assert parse_bounces(_fixture(name), domain=DOMAIN) is None


def test_campaign_id_is_read_only_from_our_own_message_ids() -> None:
    [bounce] = parse_bounces(_fixture("postfix-5.1.1.eml"), domain="other.example.org") or ()
    assert bounce.campaign_id is None
    assert bounce.message_id == f"<7.3f9a1c0e5b7d2468ace1@{DOMAIN}>"  # still what identifies it


@pytest.mark.parametrize(
    ("fields", "kind", "status"),
    [
        ("Action: failed\nStatus: 5.1.1", BounceKind.HARD, "5.1.1"),
        ("Action: failed\nStatus: 5.4.4 (unroutable)", BounceKind.HARD, "5.4.4"),
        # About our message or our host, not the mailbox: counted, not fatal at once.
        (
            "Action: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; 554 5.7.1 blocked",
            "soft",
            "5.7.1",
        ),
        ("Action: failed\nStatus: 5.2.2", BounceKind.SOFT, "5.2.2"),
        ("Action: failed\nStatus: 4.4.7", BounceKind.SOFT, "4.4.7"),
        ("Action: delayed\nStatus: 4.4.1", BounceKind.SOFT, "4.4.1"),
        ("Action: failed\nDiagnostic-Code: smtp; 550 5.1.1 no such user", "hard", "5.1.1"),
        ("Action: failed\nDiagnostic-Code: smtp; 550 no such user", BounceKind.HARD, "5.0.0"),
        ("Action: failed", BounceKind.HARD, "5.0.0"),
        ("Status: 5.1.1", BounceKind.HARD, "5.1.1"),  # no Action: the class says it
        ("Status: 4.2.2", BounceKind.SOFT, "4.2.2"),
    ],
)
def test_action_and_status_decide_hard_or_soft(fields: str, kind: str, status: str) -> None:
    [bounce] = parse_bounces(_dsn(f"Final-Recipient: rfc822; a@example.net\n{fields}")) or ()
    assert (bounce.kind, bounce.status) == (kind, status)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_a_dsn_of_success_has_no_bounce(action: str) -> None:
    block = f"Final-Recipient: rfc822; a@example.net\nAction: {action}\nStatus: 2.0.0"
    assert parse_bounces(_dsn(block)) == ()


def test_recipient_is_the_address_we_sent_to_and_final_is_kept() -> None:
    block = (
        "Original-Recipient: rfc822;wang.wu@mission-berlin.example.org\n"
        "Final-Recipient: rfc822; <wang.wu.private@mail.example.net>\n"
        "Action: failed\nStatus: 5.2.2"
    )
    [bounce] = parse_bounces(_dsn(block)) or ()
    assert bounce.recipient == "wang.wu@mission-berlin.example.org"
    assert bounce.final_recipient == "wang.wu.private@mail.example.net"


def test_every_failed_recipient_of_a_report_is_a_bounce_and_others_are_not() -> None:
    blocks = [
        "Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: x400; /C=DE/O=Mission/S=Wang\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822; b@example.net\nAction: delivered\nStatus: 2.0.0",
        "Final-Recipient: rfc822; c@example.net\nAction: delayed\nStatus: 4.4.1",
    ]
    found = parse_bounces(_dsn(*blocks)) or ()
    assert [(b.recipient, b.kind) for b in found] == [
        ("a@example.net", "hard"),
        ("c@example.net", "soft"),
    ]
    assert {b.report_id for b in found} == {"<r1@mx.example.net>"}


def test_the_remote_servers_words_cannot_reach_a_terminal_as_control_codes() -> None:
    block = (
        "Final-Recipient: rfc822; a@example.net\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 \x1b[2J\x1b]0;owned\x07user unknown"
    )
    [bounce] = parse_bounces(_dsn(block)) or ()
    assert bounce.diagnostic == "smtp; 550 [2J]0;owneduser unknown"


def test_a_report_without_message_id_is_named_by_its_bytes() -> None:
    data = _dsn("Final-Recipient: rfc822; a@example.net\nAction: failed", headers="")
    [first] = parse_bounces(data) or ()
    [again] = parse_bounces(data) or ()
    assert first.report_id.startswith("sha256:") and first.report_id == again.report_id


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_to_none_or_bounces_never_an_exception(data: bytes) -> None:
    result = parse_bounces(data)
    assert result is None or isinstance(result, tuple)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(p.name for p in FIXTURES.glob("*.eml"))), st.integers(0, 6000))
def test_a_truncated_report_parses_without_an_exception(name: str, cut: int) -> None:
    result = parse_bounces(_fixture(name)[:cut], domain=DOMAIN)
    assert result is None or all(b.recipient for b in result)


# --- reading eml, mbox, maildir ----------------------------------------------------------------


def _mbox(path: Path, names: list[str]) -> Path:
    box = mailbox.mbox(path)
    try:
        for name in names:
            box.add(_fixture(name))
        box.flush()
    finally:
        box.close()
    return path


def _maildir(path: Path, names: list[str]) -> Path:
    box = mailbox.Maildir(path)
    try:
        for name in names:
            box.add(_fixture(name))
    finally:
        box.close()
    return path


ALL = sorted(p.name for p in FIXTURES.glob("*.eml"))


def _parsed(paths: list[Path]) -> list[object]:
    return [parse_bounces(data, domain=DOMAIN) for _, data in read_messages(paths)]


def test_folder_mbox_maildir_and_one_file_read_the_same_messages(tmp_path: Path) -> None:
    from_folder = _parsed([FIXTURES])
    assert len(from_folder) == len(ALL) == 7
    assert sorted(map(repr, _parsed([_mbox(tmp_path / "bounces.mbox", ALL)]))) == sorted(
        map(repr, from_folder)
    )
    assert sorted(map(repr, _parsed([_maildir(tmp_path / "Maildir", ALL)]))) == sorted(
        map(repr, from_folder)
    )
    assert _parsed([FIXTURES / "postfix-5.1.1.eml"]) == [
        from_folder[ALL.index("postfix-5.1.1.eml")]
    ]


def test_a_path_that_cannot_be_read_fails_before_any_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    messages = read_messages([FIXTURES, missing])
    with pytest.raises(BounceSourceError, match="cannot read .*nowhere: No such file"):
        next(messages)


# --- ingest through the CLI, SQLite and PostgreSQL ----------------------------------------------


def _run(runner: CliRunner, instance: Instance, *args: str) -> Result:
    return runner.invoke(app, ["--config", str(instance.config), *args])


def _cli(runner: CliRunner, instance: Instance, *args: str) -> str:
    result = _run(runner, instance, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def _ingest(runner: CliRunner, instance: Instance, *args: str) -> dict[str, Any]:
    return dict(json.loads(_cli(runner, instance, "bounces", "ingest", *args, "--json")))


def _add(runner: CliRunner, instance: Instance, *emails: str) -> None:
    for address in emails:
        _cli(runner, instance, "subscribers", "add", address, "--embassy", "de-berlin")


@contextmanager
def _session(instance: Instance) -> Iterator[Session]:
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _status(instance: Instance, address: str) -> str:
    with _session(instance) as session:
        return str(store.find(session, address).status)


def _events(instance: Instance, address: str) -> list[AuditEvent]:
    with _session(instance) as session:
        subscriber_id = store.find(session, address).id
        query = select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id)
        return list(session.exec(query.order_by(col(AuditEvent.id))).all())


def _counts(report: dict[str, Any]) -> dict[str, int]:
    keys = ("messages", "hard", "soft", "disabled", "counted", "already", "unknown", "skipped")
    return {k: report[k] for k in keys}


def test_ingest_disables_hard_bounces_counts_soft_ones_and_skips_other_mail(
    runner: CliRunner, instance: Instance
) -> None:
    _add(runner, instance, *SUBSCRIBERS)
    report = _ingest(runner, instance, str(FIXTURES))
    assert _counts(report) == {
        "messages": 7, "hard": 4, "soft": 1, "disabled": 3, "counted": 1, "already": 0,
        "unknown": 1, "skipped": 2,
    }  # fmt: skip
    assert {s["reason"] for s in report["skipped_messages"]} == {
        "not a delivery status notification"
    }
    assert [_status(instance, a) for a in SUBSCRIBERS] == [
        "bounced",
        "bounced",
        "active",
        "bounced",
    ]
    rows = {r["recipient"]: r for r in report["bounces"]}
    assert rows["nobody.here@mission-berlin.example.org"]["outcome"] == "unknown"
    assert rows[ZHANG]["campaign_id"] == 7 and rows[ZHAO]["campaign_id"] == 8

    [change] = [e for e in _events(instance, ZHANG) if e.action == "status"][-1:]
    assert (change.old_status, change.new_status, change.actor, change.via) == (
        "active", "bounced", "dsn", "bounce",
    )  # fmt: skip
    assert "5.1.1" in change.detail and "User unknown in virtual mailbox table" in change.detail
    assert "campaign=7" in change.detail
    [soft] = [e for e in _events(instance, CHEN) if e.action == "soft-bounce"]
    assert "4.2.2" in soft.detail and "out of storage space" in soft.detail
    assert soft.new_status == "active"


def test_ingesting_the_same_reports_again_changes_nothing(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, *SUBSCRIBERS)
    _ingest(runner, instance, str(_maildir(tmp_path / "Maildir", ALL)))
    before = {a: len(_events(instance, a)) for a in SUBSCRIBERS}
    for path in (FIXTURES, _mbox(tmp_path / "bounces.mbox", ALL), FIXTURES / "postfix-5.1.1.eml"):
        again = _ingest(runner, instance, str(path))
        assert again["disabled"] == again["counted"] == 0
        assert again["already"] == again["hard"] + again["soft"] - again["unknown"]
    assert {a: len(_events(instance, a)) for a in SUBSCRIBERS} == before
    outcomes = {r["outcome"] for r in again["bounces"]}
    assert outcomes == {"duplicate"}


def _soft_report(number: int, date: dt.datetime, campaign: int) -> bytes:
    """The delayed-mail report for chen.jing, as report `number` about campaign `campaign`."""
    text = _fixture("gmail-4.2.2-delayed.eml").decode()
    text = text.replace(
        "<20240507100531.4VZ7fN3bQkz9sXb@mail.newsletter.example.org>",
        f"<soft-{number}@mail.newsletter.example.org>",
    )
    text = text.replace(
        "Date: Tue,  7 May 2024 12:05:31 +0200 (CEST)", f"Date: {email.utils.format_datetime(date)}"
    )
    text = text.replace("<7.05d3e8a1f6b29c4e7d10@", f"<{campaign}.05d3e8a1f6b29c4e7d10@")
    return text.encode()


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_soft_bounces_disable_only_at_the_threshold_within_the_window(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, CHEN)
    day = dt.datetime(2024, 5, 7, 10, tzinfo=dt.UTC)
    first = _write(tmp_path, "1.eml", _soft_report(1, day, campaign=7))
    # A later report on the same message (still not delivered) is the same soft bounce.
    same = _write(tmp_path, "2.eml", _soft_report(2, day + dt.timedelta(days=2), campaign=7))
    second = _write(tmp_path, "3.eml", _soft_report(3, day + dt.timedelta(days=14), campaign=8))
    third = _write(tmp_path, "4.eml", _soft_report(4, day + dt.timedelta(days=28), campaign=9))

    assert _ingest(runner, instance, first, same, second)["counted"] == 3
    assert _status(instance, CHEN) == "active"
    assert _ingest(runner, instance, first, same, second)["already"] == 3
    assert _status(instance, CHEN) == "active"

    report = _ingest(runner, instance, third)
    assert (report["disabled"], report["counted"]) == (1, 0)
    assert _status(instance, CHEN) == "bounced"
    [change] = [e for e in _events(instance, CHEN) if e.action == "status"]
    assert "3 soft bounces within 30 days" in change.detail and "4.2.2" in change.detail
    assert len([e for e in _events(instance, CHEN) if e.action == "soft-bounce"]) == 4

    # Staff re-activate the address: the count starts again from that change.
    with _session(instance) as session:
        store.set_status(session, store.find(session, CHEN), SubscriberStatus.ACTIVE,
                         actor="staff", via="cli")  # fmt: skip
        session.commit()
    fifth = _write(tmp_path, "5.eml", _soft_report(5, day + dt.timedelta(days=29), campaign=10))
    assert _ingest(runner, instance, fifth)["counted"] == 1
    assert _status(instance, CHEN) == "active"


def test_soft_bounces_further_apart_than_the_window_do_not_disable(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, CHEN)
    day = dt.datetime(2024, 1, 10, tzinfo=dt.UTC)
    # Read newest first: the window is about the reports' dates, not the order they come in.
    paths = [
        _write(tmp_path, f"{n}.eml", _soft_report(n, day + dt.timedelta(days=20 * n), campaign=n))
        for n in (3, 2, 1)
    ]
    assert _ingest(runner, instance, *paths)["counted"] == 3
    assert _status(instance, CHEN) == "active"
    fourth = _write(tmp_path, "4.eml", _soft_report(4, day + dt.timedelta(days=70), campaign=4))
    report = _ingest(runner, instance, fourth, "--soft-window-days", "50")
    assert report["disabled"] == 1 and _status(instance, CHEN) == "bounced"


def test_soft_threshold_option(runner: CliRunner, instance: Instance) -> None:
    _add(runner, instance, CHEN)
    report = _ingest(
        runner, instance, str(FIXTURES / "gmail-4.2.2-delayed.eml"), "--soft-threshold", "1"
    )
    assert report["disabled"] == 1 and _status(instance, CHEN) == "bounced"


def test_a_bounce_never_overrides_an_unsubscribe(runner: CliRunner, instance: Instance) -> None:
    _add(runner, instance, ZHANG)
    with _session(instance) as session:
        subscriber = store.find(session, ZHANG)
        store.set_status(
            session, subscriber, SubscriberStatus.UNSUBSCRIBED, actor="test", via="cli"
        )
        session.commit()
    report = _ingest(runner, instance, str(FIXTURES / "postfix-5.1.1.eml"))
    assert report["bounces"][0]["outcome"] == "inactive"
    assert _status(instance, ZHANG) == "unsubscribed"


def test_a_forwarded_address_is_found_through_the_ledger(
    runner: CliRunner, instance: Instance
) -> None:
    _add(runner, instance, "wang.wu@mission-berlin.example.org")
    message_id = f"<12.0123456789abcdef0123@{DOMAIN}>"
    with _session(instance) as session:
        subscriber = store.find(session, "wang.wu@mission-berlin.example.org")
        issue = IssueRecord(slug="x-2024-05", publication="x", year=2024, number=5, source_yaml="")
        session.add(issue)
        session.flush()
        campaign = Campaign(id=12, issue_id=issue.id or 0)
        session.add(campaign)
        session.flush()
        session.add(
            Delivery(campaign_id=12, subscriber_id=subscriber.id or 0, message_id=message_id)
        )
        session.commit()
        block = "Final-Recipient: rfc822; wang.private@mail.example.net\nAction: failed"
        bounces = parse_bounces(_dsn(block), domain=DOMAIN)
        [applied] = apply_bounces(session, bounces or (), now=NOW)
        assert (applied.outcome, applied.email) == (
            Outcome.DISABLED,
            "wang.wu@mission-berlin.example.org",
        )
        assert session.get(Subscriber, subscriber.id).status == "bounced"  # type: ignore[union-attr]


def test_summary_line_and_unreadable_path(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, *SUBSCRIBERS)
    result = _run(runner, instance, "bounces", "ingest", str(FIXTURES))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == (
        "7 messages, 4 hard, 1 soft, 3 disabled, 1 counted, 0 already, 1 unknown, 2 skipped"
    )
    assert f"disabled {ZHANG} hard 5.1.1 campaign 7" in result.stderr

    missing = tmp_path / "no-such-mbox"
    result = _run(runner, instance, "bounces", "ingest", str(FIXTURES), str(missing))
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot read {missing}: No such file or directory\n"
