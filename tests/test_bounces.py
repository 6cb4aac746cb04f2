"""Bounces: DSN parsing (pure), the eml/mbox/maildir reader, and ingest on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import email.utils
import getpass
import json
import mailbox
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from typer.testing import CliRunner, Result

from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.delivery.bounces import (
    BounceKind,
    BounceSourceError,
    UnreadableReport,
    parse_bounces,
    read_messages,
)
from newsletter.mail.message import message_id
from newsletter.models import (
    AuditEvent,
    Campaign,
    CampaignState,
    Delivery,
    DeliveryState,
    IssueRecord,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.subscriptions import store
from newsletter.subscriptions.bounce_policy import Outcome, apply_reports, record_smtp_bounce
from newsletter.subscriptions.lifecycle import ALLOWED
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, invoke

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


_RETURNED_HEADERS = (
    f"Content-Type: text/rfc822-headers\n\nMessage-ID: <12.0123456789abcdef0123@{DOMAIN}>\n"
)


def _dsn(
    *recipient_blocks: str,
    headers: str = "Message-ID: <r1@mx.example.net>\n",
    returned: str = _RETURNED_HEADERS,
    per_message: str = "",
    sender: str = "MAILER-DAEMON@mx.example.net",
) -> bytes:
    """A minimal multipart/report around the given per-recipient blocks.

    `returned`: the third part (the returned headers or message), "" for none; `per_message`:
    more fields of the per-message block (such as Original-Message-ID).
    """
    blocks = "\n".join(f"{b.strip()}\n" for b in recipient_blocks)
    third = f"--b\n{returned}\n" if returned else ""
    return (
        f"From: {sender}\n{headers}"
        "Date: Wed, 8 May 2024 10:00:00 +0000\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee below.\n\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n{per_message}\n{blocks}\n"
        f"{third}--b--\n"
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


def _mbox(path: Path, messages: list[str] | list[bytes]) -> Path:
    """An mbox of the named fixtures, or of the given messages."""
    box = mailbox.mbox(path)
    try:
        for message in messages:
            box.add(_fixture(message) if isinstance(message, str) else message)
        box.flush()
    finally:
        box.close()
    return path


def _maildir(path: Path, messages: list[str] | list[bytes]) -> Path:
    box = mailbox.Maildir(path)
    try:
        for message in messages:
            box.add(_fixture(message) if isinstance(message, str) else message)
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


# --- depth and per-message isolation: pure ----------------------------------------------------


def _crafted(depth: int, kind: str = "message/rfc822", recipient: str = CHEN) -> bytes:
    """A report from an attacker whose third part nests `depth` levels of `kind`."""
    inner = "Content-Type: text/plain\n\nthe bottom\n"
    for level in range(depth):
        if kind == "message/rfc822":
            inner = f"Content-Type: message/rfc822\n\n{inner}"
        else:  # a digest's parts are message/rfc822 by default: no header needed for them
            digest = f'Content-Type: multipart/digest; boundary="d{level}"\n\n'
            inner = f"{digest}--d{level}\n\n{inner}\n--d{level}--\n"
    block = f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1"
    return _dsn(block, sender="postmaster@attacker.example", returned=inner)


def test_the_standard_parser_alone_overflows_on_a_deep_message() -> None:
    # Why parse_bounces measures first: the library recurses once per level.
    with pytest.raises(RecursionError):
        email.message_from_bytes(_crafted(2000))


@pytest.mark.parametrize(
    ("depth", "kind", "reason"),
    [
        (2000, "message/rfc822", "more than 100 multipart or message parts"),
        (2000, "multipart/digest", "more than 100 multipart or message parts"),
        (30, "message/rfc822", "nested deeper than 20 levels"),
        (15, "multipart/digest", "nested deeper than 20 levels"),
    ],
)
def test_a_deeply_nested_report_is_unreadable_not_a_crash(
    depth: int, kind: str, reason: str
) -> None:
    with pytest.raises(UnreadableReport, match=reason):
        parse_bounces(_crafted(depth, kind), domain=DOMAIN)


def test_a_report_nested_a_few_levels_still_parses() -> None:
    [bounce] = parse_bounces(_crafted(8), domain=DOMAIN) or ()
    assert bounce.recipient == CHEN


def test_the_original_is_named_by_returned_headers_whole_message_or_original_message_id() -> None:
    ours = f"<3.0123456789abcdef0123@{DOMAIN}>"
    block = f"Final-Recipient: rfc822; {ZHANG}\nAction: failed\nStatus: 5.1.1"
    whole = f"Content-Type: message/rfc822\n\nMessage-ID: {ours}\nSubject: x\n\nbody\n"
    field = _dsn(block, returned="", per_message=f"Original-Message-ID: {ours}\n")
    for data in (_dsn(block, returned=whole), field):
        [bounce] = parse_bounces(data, domain=DOMAIN) or ()
        assert (bounce.message_id, bounce.campaign_id) == (ours, 3)
    [none] = parse_bounces(_dsn(block, returned=""), domain=DOMAIN) or ()
    assert (none.message_id, none.campaign_id) == ("", None)


# --- ingest through the CLI, SQLite and PostgreSQL ----------------------------------------------


def _ingest(runner: CliRunner, instance: Instance, *args: str) -> dict[str, Any]:
    return dict(json.loads(cli(runner, instance, "bounces", "ingest", *args, "--json")))


def _add(runner: CliRunner, instance: Instance, *emails: str) -> None:
    for address in emails:
        cli(runner, instance, "subscribers", "add", address, "--embassy", "de-berlin")


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


def _set_status(instance: Instance, address: str, status: SubscriberStatus) -> None:
    with _session(instance) as session:
        store.set_status(session, store.find(session, address), status, actor="test", via="cli")
        session.commit()


def _counts(report: dict[str, Any]) -> dict[str, int]:
    keys = (
        "messages", "hard", "soft", "disabled", "counted", "already", "unknown", "not_ours",
        "skipped", "unreadable",
    )  # fmt: skip
    return {k: report[k] for k in keys}


def _sent(instance: Instance, sends: dict[str, int]) -> dict[str, str]:
    """Ledger rows as a finished campaign leaves them, {address: campaign}: their Message-IDs."""
    settings = instance.settings
    ids: dict[str, str] = {}
    with _session(instance) as session:
        for address, campaign in sends.items():
            if session.get(Campaign, campaign) is None:
                issue = IssueRecord(
                    slug=f"x-{campaign}", publication="x", year=2024, number=campaign,
                    source_yaml="",
                )  # fmt: skip
                session.add(issue)
                session.flush()
                session.add(
                    Campaign(id=campaign, issue_id=issue.id or 0, state=CampaignState.FINISHED)
                )
                session.flush()
            subscriber_id = store.find(session, address).id or 0
            ids[address] = message_id(settings.secret, campaign, subscriber_id, settings.domain)
            session.add(
                Delivery(
                    campaign_id=campaign, subscriber_id=subscriber_id, state=DeliveryState.SENT,
                    message_id=ids[address], sent_at=NOW,
                )
            )  # fmt: skip
        session.commit()
    return ids


_FIXTURE_ID = re.compile(rb"<\d+\.[0-9a-f]{20}@newsletter\.example\.org>")
# The fixture that returns a message to each subscriber (unknown-5.1.1.eml names nobody of ours).
RETURNED = {
    "postfix-5.1.1.eml": ZHANG, "exchange-5.1.10.eml": LI, "gmail-4.2.2-delayed.eml": CHEN,
    "postfix-5.2.1-full-message.eml": ZHAO,
}  # fmt: skip


def _returning(name: str, message_id: str) -> bytes:
    """The fixture as a relay writes it about the message we really sent: `message_id`."""
    return _FIXTURE_ID.sub(message_id.encode(), _fixture(name))


def _reports(tmp_path: Path, ids: dict[str, str]) -> Path:
    """The fixtures, each returning the message we sent to its recipient (when we sent one)."""
    folder = tmp_path / "reports"
    folder.mkdir(exist_ok=True)
    for name in ALL:
        address = RETURNED.get(name, "")
        data = _returning(name, ids[address]) if address in ids else _fixture(name)
        (folder / name).write_bytes(data)
    return folder


def _sample(runner: CliRunner, instance: Instance, tmp_path: Path) -> Path:
    """The four subscribers, sent campaigns 7 and 8, and the fixtures about those messages."""
    _add(runner, instance, *SUBSCRIBERS)
    return _reports(tmp_path, _sent(instance, {ZHANG: 7, LI: 7, CHEN: 7, ZHAO: 8}))


def test_ingest_disables_hard_bounces_counts_soft_ones_and_skips_other_mail(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    report = _ingest(runner, instance, str(_sample(runner, instance, tmp_path)))
    assert _counts(report) == {
        "messages": 7, "hard": 4, "soft": 1, "disabled": 3, "counted": 1, "already": 0,
        "unknown": 0, "not_ours": 1, "skipped": 2, "unreadable": 0,
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
    nobody = rows["nobody.here@mission-berlin.example.org"]
    assert (nobody["outcome"], nobody["reason"]) == ("not-ours", "no message of ours")
    assert rows[ZHANG]["campaign_id"] == 7 and rows[ZHAO]["campaign_id"] == 8

    [change] = [e for e in _events(instance, ZHANG) if e.action == "status"][-1:]
    assert (change.old_status, change.new_status, change.actor, change.via) == (
        "active", "bounced", "dsn", "bounce",
    )  # fmt: skip
    assert "5.1.1" in change.detail and "User unknown in virtual mailbox table" in change.detail
    assert "campaign=7" in change.detail and rows[ZHANG]["message_id"] in change.detail
    [soft] = [e for e in _events(instance, CHEN) if e.action == "soft-bounce"]
    assert "4.2.2" in soft.detail and "out of storage space" in soft.detail
    assert soft.new_status == "active"


FORGED = (
    f"Final-Recipient: rfc822; {ZHANG}\nAction: failed\nStatus: 5.1.1\n"
    "Diagnostic-Code: smtp; 550 5.1.1 User unknown"
)


@pytest.mark.parametrize(
    "returned",
    [
        "",
        f"Content-Type: text/rfc822-headers\n\nMessage-ID: <7.0000000000000000beef@{DOMAIN}>\n",
        "Content-Type: text/rfc822-headers\n\nMessage-ID: <CAF1x=Yq@mail.example.com>\n",
    ],
    ids=["no-reference", "guessed-id-of-ours", "someone-elses-message"],
)
def test_a_forged_dsn_naming_a_diplomat_changes_nobody_and_is_reported(
    runner: CliRunner, instance: Instance, tmp_path: Path, returned: str
) -> None:
    _add(runner, instance, ZHANG)
    _sent(instance, {ZHANG: 7})  # we do mail them: a forger may know they are on the list
    before = len(_events(instance, ZHANG))
    forged = _dsn(
        FORGED, headers="Message-ID: <f1@attacker.example>\n", returned=returned,
        sender="postmaster@attacker.example",
    )  # fmt: skip
    path = _write(tmp_path, "forged.eml", forged)

    report = _ingest(runner, instance, path)
    assert _status(instance, ZHANG) == "active" and len(_events(instance, ZHANG)) == before
    assert (report["hard"], report["disabled"], report["not_ours"]) == (1, 0, 1)
    [row] = report["bounces"]
    assert (row["recipient"], row["outcome"], row["reason"]) == (
        ZHANG, "not-ours", "no message of ours",
    )  # fmt: skip

    result = invoke(runner, instance, "bounces", "ingest", path)
    assert result.exit_code == 0, result.output
    assert f"not-ours {ZHANG} hard 5.1.1" in result.stderr
    assert "no message of ours" in result.stderr and ", 1 not ours," in result.stderr


def test_a_genuine_dsn_returning_our_message_bounces_its_recipient_and_nobody_else(
    runner: CliRunner, instance: Instance, tmp_path: Path, smtp_server: LoopbackController
) -> None:
    _add(runner, instance, *SUBSCRIBERS)
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(smtp_server.port))  # fmt: skip
    # What the relay received is what it returns.
    received = {
        r.rcpt: r.data.replace(b"\r\n", b"\n").decode() for r in smtp_server.handler.received
    }
    assert set(received) == set(SUBSCRIBERS)
    headers = {a: data.split("\n\n", 1)[0] + "\n" for a, data in received.items()}
    ids = {a: str(email.message_from_string(h)["Message-ID"]) for a, h in headers.items()}

    def block(address: str) -> str:
        return f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: 5.1.1"

    reports = {
        ZHANG: _dsn(
            block(ZHANG), returned=f"Content-Type: text/rfc822-headers\n\n{headers[ZHANG]}"
        ),
        LI: _dsn(block(LI), returned=f"Content-Type: message/rfc822\n\n{received[LI]}"),
        CHEN: _dsn(block(CHEN), returned="", per_message=f"Original-Message-ID: {ids[CHEN]}\n"),
        # Our message to Zhang, but naming Zhao: a report about Zhang's mail says nothing of Zhao.
        ZHAO: _dsn(block(ZHAO), returned=f"Content-Type: text/rfc822-headers\n\n{headers[ZHANG]}"),
    }
    paths = [
        _write(tmp_path, f"{n}.eml", data.replace(b"<r1@", f"<r{n}@".encode()))
        for n, data in enumerate(reports.values())
    ]
    report = _ingest(runner, instance, *paths)
    assert [_status(instance, a) for a in SUBSCRIBERS] == ["bounced"] * 3 + ["active"]
    assert (report["disabled"], report["not_ours"]) == (3, 1)
    rows = {r["recipient"]: r for r in report["bounces"]}
    assert rows[ZHAO]["reason"] == f"no message of ours to {ZHAO}"
    assert all(rows[a]["message_id"] == ids[a] for a in (ZHANG, LI, CHEN))
    [change] = [e for e in _events(instance, LI) if e.action == "status"][-1:]
    assert f"message={ids[LI]}" in change.detail and (change.actor, change.via) == ("dsn", "bounce")


def test_one_crafted_message_in_an_mbox_never_stops_the_genuine_reports(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    folder = _sample(runner, instance, tmp_path)
    mbox = _mbox(
        tmp_path / "bounces.mbox",
        [(folder / "postfix-5.1.1.eml").read_bytes(), _crafted(2000),
         (folder / "exchange-5.1.10.eml").read_bytes()],
    )  # fmt: skip
    result = invoke(runner, instance, "bounces", "ingest", str(mbox))
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    assert f"unreadable {mbox}#2: more than 100 multipart or message parts" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "3 messages, 2 hard, 0 soft, 2 disabled, 0 counted, 0 already, 0 unknown, 0 not ours, "
        "0 skipped, 1 unreadable"
    )
    assert [_status(instance, a) for a in (ZHANG, LI, CHEN)] == ["bounced", "bounced", "active"]

    again = _ingest(runner, instance, str(mbox))
    assert again["unreadable_messages"] == [
        {"source": f"{mbox}#2", "reason": "more than 100 multipart or message parts "
         "(a report has a few)"},
    ]  # fmt: skip
    assert (again["messages"], again["already"], again["unreadable"]) == (3, 2, 1)


def test_ingesting_the_same_reports_again_changes_nothing(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    folder = _sample(runner, instance, tmp_path)
    messages = [(folder / name).read_bytes() for name in ALL]
    _ingest(runner, instance, str(_maildir(tmp_path / "Maildir", messages)))
    before = {a: len(_events(instance, a)) for a in SUBSCRIBERS}
    for path in (folder, _mbox(tmp_path / "bounces.mbox", messages), folder / "postfix-5.1.1.eml"):
        again = _ingest(runner, instance, str(path))
        assert again["disabled"] == again["counted"] == 0
        assert again["already"] == again["hard"] + again["soft"] - again["not_ours"]
    assert {a: len(_events(instance, a)) for a in SUBSCRIBERS} == before
    outcomes = {r["outcome"] for r in again["bounces"]}
    assert outcomes == {"duplicate"}


def _soft_report(number: int, date: dt.datetime, message_id: str) -> bytes:
    """The delayed-mail report for chen.jing, as report `number` about our `message_id`."""
    text = _returning("gmail-4.2.2-delayed.eml", message_id).decode()
    text = text.replace(
        "<20240507100531.4VZ7fN3bQkz9sXb@mail.newsletter.example.org>",
        f"<soft-{number}@mail.newsletter.example.org>",
    )
    text = text.replace(
        "Date: Tue,  7 May 2024 12:05:31 +0200 (CEST)", f"Date: {email.utils.format_datetime(date)}"
    )
    return text.encode()


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _chen_sent(instance: Instance, campaign: int) -> str:
    return _sent(instance, {CHEN: campaign})[CHEN]


def test_soft_bounces_disable_only_at_the_threshold_within_the_window(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, CHEN)
    sent = {c: _chen_sent(instance, c) for c in (7, 8, 9, 10)}
    day = dt.datetime(2024, 5, 7, 10, tzinfo=dt.UTC)
    first = _write(tmp_path, "1.eml", _soft_report(1, day, sent[7]))
    # A later report on the same message (still not delivered) is the same soft bounce.
    same = _write(tmp_path, "2.eml", _soft_report(2, day + dt.timedelta(days=2), sent[7]))
    second = _write(tmp_path, "3.eml", _soft_report(3, day + dt.timedelta(days=14), sent[8]))
    third = _write(tmp_path, "4.eml", _soft_report(4, day + dt.timedelta(days=28), sent[9]))

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
    cli(runner, instance, "bounces", "undo", CHEN, "--reason", "mailbox emptied")
    assert _status(instance, CHEN) == "active"
    fifth = _write(tmp_path, "5.eml", _soft_report(5, day + dt.timedelta(days=29), sent[10]))
    assert _ingest(runner, instance, fifth)["counted"] == 1
    assert _status(instance, CHEN) == "active"


def test_soft_bounces_of_mail_not_ours_are_not_counted(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, CHEN)
    day = dt.datetime(2024, 5, 7, 10, tzinfo=dt.UTC)
    guessed = [f"<{n}.05d3e8a1f6b29c4e7d10@{DOMAIN}>" for n in (1, 2, 3)]
    paths = [
        _write(tmp_path, f"{n}.eml", _soft_report(n, day + dt.timedelta(days=n), mid))
        for n, mid in enumerate(guessed)
    ]
    report = _ingest(runner, instance, *paths, "--soft-threshold", "1")
    assert (report["soft"], report["not_ours"], report["counted"], report["disabled"]) == (
        3,
        3,
        0,
        0,
    )
    assert _status(instance, CHEN) == "active"
    assert not [e for e in _events(instance, CHEN) if e.action == "soft-bounce"]


def test_soft_bounces_further_apart_than_the_window_do_not_disable(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    _add(runner, instance, CHEN)
    day = dt.datetime(2024, 1, 10, tzinfo=dt.UTC)
    sent = {n: _chen_sent(instance, n) for n in (1, 2, 3, 4)}
    # Read newest first: the window is about the reports' dates, not the order they come in.
    paths = [
        _write(tmp_path, f"{n}.eml", _soft_report(n, day + dt.timedelta(days=20 * n), sent[n]))
        for n in (3, 2, 1)
    ]
    assert _ingest(runner, instance, *paths)["counted"] == 3
    assert _status(instance, CHEN) == "active"
    fourth = _write(tmp_path, "4.eml", _soft_report(4, day + dt.timedelta(days=70), sent[4]))
    report = _ingest(runner, instance, fourth, "--soft-window-days", "50")
    assert report["disabled"] == 1 and _status(instance, CHEN) == "bounced"


def test_soft_threshold_option(runner: CliRunner, instance: Instance, tmp_path: Path) -> None:
    _add(runner, instance, CHEN)
    path = _write(tmp_path, "d.eml", _returning("gmail-4.2.2-delayed.eml", _chen_sent(instance, 7)))
    report = _ingest(runner, instance, path, "--soft-threshold", "1")
    assert report["disabled"] == 1 and _status(instance, CHEN) == "bounced"


def test_an_unsubscribed_complained_or_erased_person_is_never_made_bounced(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    assert SubscriberStatus.BOUNCED not in ALLOWED[SubscriberStatus.UNSUBSCRIBED]
    assert SubscriberStatus.BOUNCED not in ALLOWED[SubscriberStatus.COMPLAINED]
    folder = _sample(runner, instance, tmp_path)
    _set_status(instance, ZHANG, SubscriberStatus.UNSUBSCRIBED)
    _set_status(instance, LI, SubscriberStatus.COMPLAINED)
    with _session(instance) as session:
        zhao = store.find(session, ZHAO).id or 0
        ids = {a: store.find(session, a).id or 0 for a in (ZHANG, LI, CHEN)}
    cli(runner, instance, "subscribers", "remove", ZHAO, "--yes")
    names = ["postfix-5.1.1.eml", "exchange-5.1.10.eml", "postfix-5.2.1-full-message.eml"]

    # By a report of our own mail ...
    report = _ingest(runner, instance, *(str(folder / n) for n in names))
    assert [r["outcome"] for r in report["bounces"]] == ["inactive"] * 3
    assert [_status(instance, a) for a in (ZHANG, LI)] == ["unsubscribed", "complained"]
    # ... or by a 5.1.1 at send time: only the active one changes, once.
    with _session(instance) as session:
        changed = [
            record_smtp_bounce(session, i, "550 5.1.1 user unknown", now=NOW)
            for i in (ids[ZHANG], ids[LI], zhao, ids[CHEN], ids[CHEN])
        ]
        session.commit()
        erased = session.get(Subscriber, zhao)
        assert erased is not None and erased.status == "unsubscribed"
    assert changed == [False, False, False, True, False]
    assert [_status(instance, a) for a in (ZHANG, LI, CHEN)] == [
        "unsubscribed", "complained", "bounced",
    ]  # fmt: skip
    [bounced] = [e for e in _events(instance, CHEN) if e.action == "status"]
    assert (bounced.old_status, bounced.actor, bounced.via, bounced.detail) == (
        "active", "smtp", "bounce", "550 5.1.1 user unknown",
    )  # fmt: skip
    assert not [e for e in _events(instance, ZHANG) if e.new_status == "bounced"]


def test_a_forwarded_address_acts_only_when_the_report_names_who_we_sent_to(
    runner: CliRunner, instance: Instance
) -> None:
    wang = "wang.wu@mission-berlin.example.org"
    _add(runner, instance, wang)
    ours = _sent(instance, {wang: 12})[wang]
    returned = f"Content-Type: text/rfc822-headers\n\nMessage-ID: {ours}\n"
    forwarded = "Final-Recipient: rfc822; wang.private@mail.example.net\nAction: failed"
    with _session(instance) as session:
        # Only the private address: our message, but nothing says it was Wang's box that failed.
        [lost] = apply_reports(
            session, parse_bounces(_dsn(forwarded, returned=returned), domain=DOMAIN) or (),
            now=NOW,
        )  # fmt: skip
        assert (lost.outcome, lost.reason) == (
            Outcome.NOT_OURS, "no message of ours to wang.private@mail.example.net",
        )  # fmt: skip
        named = f"Original-Recipient: rfc822;{wang}\n{forwarded}"
        data = _dsn(named, headers="Message-ID: <r2@mx.example.net>\n", returned=returned)
        [applied] = apply_reports(session, parse_bounces(data, domain=DOMAIN) or (), now=NOW)
        session.commit()
        assert (applied.outcome, applied.email) == (Outcome.DISABLED, wang)
        assert applied.bounce.final_recipient == "wang.private@mail.example.net"
    assert _status(instance, wang) == "bounced"


def test_summary_line_and_unreadable_path(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    folder = _sample(runner, instance, tmp_path)
    result = invoke(runner, instance, "bounces", "ingest", str(folder))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == (
        "7 messages, 4 hard, 1 soft, 3 disabled, 1 counted, 0 already, 0 unknown, 1 not ours, "
        "2 skipped, 0 unreadable"
    )
    assert f"disabled {ZHANG} hard 5.1.1 campaign 7" in result.stderr
    assert (
        "not-ours nobody.here@mission-berlin.example.org hard 5.1.1 campaign 7: no message of ours"
        in result.stderr
    )

    missing = tmp_path / "no-such-mbox"
    result = invoke(runner, instance, "bounces", "ingest", str(folder), str(missing))
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot read {missing}: No such file or directory\n"


# --- un-bounce: staff undo a relay's fault ------------------------------------------------------


def _undo(runner: CliRunner, instance: Instance, *args: str) -> Result:
    return invoke(runner, instance, "bounces", "undo", *args)


def _smtp_bounce(instance: Instance, address: str, detail: str, when: dt.datetime) -> None:
    with _session(instance) as session:
        subscriber_id = store.find(session, address).id or 0
        assert record_smtp_bounce(session, subscriber_id, detail, now=when)
        session.commit()


RELAY = "550 5.1.1 <{}>: Recipient address rejected: User unknown in local recipient table"


def test_staff_undo_a_relays_blanket_bounce_and_the_audit_says_who_why_when(
    runner: CliRunner, instance: Instance
) -> None:
    _add(runner, instance, *SUBSCRIBERS)
    now = utcnow()
    relay_fault = now - dt.timedelta(hours=2)
    _smtp_bounce(instance, ZHAO, "550 5.1.1 mailbox gone", now - dt.timedelta(days=3))
    for address in (ZHANG, LI):
        _smtp_bounce(
            instance, address, RELAY.format(address), relay_fault + dt.timedelta(minutes=1)
        )
    # In the same hour, a genuine bounce the relay's fault does not explain.
    _smtp_bounce(
        instance, CHEN, "550 5.1.1 no such mailbox here", relay_fault + dt.timedelta(minutes=5)
    )
    since = relay_fault.isoformat()
    args = ("--all-since", since, "--matching", "local recipient table", "--reason",
            "relay misconfigured, ticket 4711", "--by", "wang.admin")  # fmt: skip

    dry = json.loads(cli(runner, instance, "bounces", "undo", *args, "--dry-run", "--json"))
    assert (dry["dry_run"], dry["unbounced"], dry["refused"]) == (True, 2, 0)
    assert _status(instance, ZHANG) == "bounced"

    result = _undo(runner, instance, *args)
    assert result.exit_code == 0, result.output
    assert f"un-bounced {ZHANG}: returned to active" in result.stderr
    assert result.stderr.splitlines()[-1] == "2 un-bounced, 0 refused"
    assert [_status(instance, a) for a in SUBSCRIBERS] == ["active", "active", "bounced", "bounced"]

    shown = json.loads(cli(runner, instance, "subscribers", "show", ZHANG, "--json"))
    assert shown["status"] == "active"
    bounce, undo = shown["history"][-2:]
    assert (bounce["new_status"], bounce["actor"], bounce["via"]) == ("bounced", "smtp", "bounce")
    assert (undo["action"], undo["old_status"], undo["new_status"], undo["actor"], undo["via"]) == (
        "status", "bounced", "active", f"cli:{getpass.getuser()}", "cli",
    )  # fmt: skip
    assert undo["detail"] == "bounce undone by wang.admin: relay misconfigured, ticket 4711"
    assert now - dt.timedelta(minutes=5) <= dt.datetime.fromisoformat(undo["at"]) <= utcnow()

    # Without --matching, everyone bounced since then; by name, any bounced subscriber.
    cli(runner, instance, "bounces", "undo", "--all-since", since, "--reason", "relay fault")
    assert _status(instance, CHEN) == "active" and _status(instance, ZHAO) == "bounced"
    cli(runner, instance, "bounces", "undo", ZHAO, "--reason", "new mailbox, confirmed by phone")
    assert _status(instance, ZHAO) == "active"


def test_only_bounced_people_are_unbounced_never_erased_ones_and_pending_stay_pending(
    runner: CliRunner, instance: Instance
) -> None:
    pending = "new.counsellor@mission-berlin.example.org"
    _add(runner, instance, ZHANG, LI, CHEN)
    cli(runner, instance, "subscribers", "add", pending, "--embassy", "de-berlin",
        "--status", "pending")  # fmt: skip
    when = utcnow() - dt.timedelta(minutes=10)
    for address in (ZHANG, LI, pending):
        _smtp_bounce(instance, address, RELAY.format(address), when)
    _set_status(instance, CHEN, SubscriberStatus.UNSUBSCRIBED)
    cli(runner, instance, "subscribers", "remove", LI, "--yes")  # erased while bounced

    result = _undo(runner, instance, ZHANG, pending, LI, CHEN, "nobody@example.org",
                   "--reason", "relay fault", "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    outcome = {s["email"]: s["status"] or s["refused"] for s in report["subscribers"]}
    assert outcome == {
        ZHANG: "active",
        pending: "pending",  # never confirmed: an un-bounce does not confirm them
        LI: f"{LI} was erased or is on the suppression list; it stays so",
        CHEN: f"{CHEN} is unsubscribed, not bounced: only bounced subscribers can be un-bounced",
        "nobody@example.org": "no subscriber 'nobody@example.org'; see `newsletter subscribers list`",
    }
    assert [_status(instance, a) for a in (ZHANG, pending, CHEN)] == [
        "active",
        "pending",
        "unsubscribed",
    ]

    # The erased row stays bounced and anonymous, even for a sweep over the time it bounced.
    swept = json.loads(cli(runner, instance, "bounces", "undo", "--all-since",
                           when.isoformat(), "--reason", "relay fault", "--json"))  # fmt: skip
    assert swept["subscribers"] == []
    with _session(instance) as session:
        assert store.by_address(session, LI) is None
        erased = session.exec(select(Subscriber).where(Subscriber.status == "bounced")).all()
        assert [s.email.endswith("@invalid") for s in erased] == [True]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((ZHANG,), 1, "give a --reason"),
        ((ZHANG, "--reason", "  "), 1, "give a --reason"),
        (("--reason", "x"), 2, "name addresses or give --all-since"),
        (("--all-since", "2026-05-04 09:00", "--reason", "x"), 1, "add the UTC offset"),
    ],
)
def test_undo_needs_a_reason_and_whom(
    runner: CliRunner, instance: Instance, args: tuple[str, ...], code: int, message: str
) -> None:
    _add(runner, instance, ZHANG)
    _smtp_bounce(instance, ZHANG, RELAY.format(ZHANG), utcnow())
    result = _undo(runner, instance, *args)
    assert result.exit_code == code and message in result.stderr
    assert _status(instance, ZHANG) == "bounced"
