"""The inbox read by the product: a real send with VERP return paths, then the mail that comes
back (real DSN, ARF and mailto shapes) read from files and from a real IMAP server (dovecot)."""

from __future__ import annotations

import hashlib
import imaplib
import json
import mailbox
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.delivery.inbox import Kind, classify
from newsletter.delivery.verp import RowRef, VerpKey, return_path
from newsletter.models import AuditEvent, Delivery, Subscriber, Suppression
from newsletter.subscriptions import store
from newsletter.testing.sink import LoopbackController, Received
from tests.conftest import Instance, cli, fails, invoke

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
DOMAIN = "newsletter.example.org"
BOUNCES = "bounces.example.org"
SECRET = b"k" * 32
# The five readers of the send: one hard-bounces, one is delayed, one presses "spam", one
# unsubscribes by mail, one writes back.
HARD = "zhang.san@mission-berlin.example.org"
SOFT = "chen.jing@tokyo-mission.example.org"
SPAM = "li.si@embassy-paris.example.net"
LEAVER = "zhao.liu@embassy-rome.example.org"
WRITER = "wang.wu@mission-berlin.example.org"
READERS = (HARD, SOFT, SPAM, LEAVER, WRITER)
_FIXTURE_ID = re.compile(rb"<\d+\.[0-9a-f]{20}@newsletter\.example\.org>")


# --- sorting (pure) ---------------------------------------------------------------------------


def test_a_return_path_names_its_row_and_a_forged_or_foreign_one_names_nothing() -> None:
    key = VerpKey(SECRET, BOUNCES)
    address = return_path(SECRET, RowRef(12, 3456), BOUNCES)
    assert re.fullmatch(r"bounce\+12-3456-[a-z2-7]{16}@bounces\.example\.org", address)
    assert len(address.partition("@")[0]) <= 64  # RFC 5321's limit on a local part
    assert key.read(address) == RowRef(12, 3456)
    assert key.read(address.upper()) == RowRef(12, 3456)  # a relay that folds case
    assert key.read(f"<{address}>") == RowRef(12, 3456)
    forged = address.replace("12-3456", "12-3457")
    assert key.read(forged) is None
    assert key.read(address.replace(BOUNCES, "elsewhere.example.org")) is None
    assert VerpKey(b"x" * 32, BOUNCES).read(address) is None  # another instance's secret
    assert key.find(f"Undelivered mail to nobody, sent as {forged} and {address}") == RowRef(
        12, 3456
    )


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postfix-5.1.1.eml", Kind.DSN),
        ("exchange-5.1.10.eml", Kind.DSN),
        ("gmail-4.2.2-delayed.eml", Kind.DSN),
        ("autoreply.eml", Kind.AUTO_REPLY),
        ("read-receipt.eml", Kind.AUTO_REPLY),
    ],
)
def test_each_fixture_is_sorted_as_what_it_is(name: str, kind: Kind) -> None:
    assert classify((FIXTURES / name).read_bytes(), domain=DOMAIN).kind is kind


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: 自动回复: 中国科技创新速递\n",
        "Subject: Automatic reply: China S&T digest\n",
        "Subject: Out of Office: China S&T digest\n",
        "Subject: Re: digest\nPrecedence: auto_reply\n",
        "Subject: Re: digest\nX-Autoreply: yes\n",
        "Subject: Re: digest\nAuto-Submitted: auto-generated\n",
    ],
)
def test_auto_replies_are_recognised_by_header_or_subject(headers: str) -> None:
    data = f"From: a@example.org\nMessage-ID: <x@example.org>\n{headers}\nback soon\n"
    assert classify(data.encode(), domain=DOMAIN).kind is Kind.AUTO_REPLY


def test_a_persons_letter_is_left_for_a_person_and_garbage_is_never_an_exception() -> None:
    letter = b"From: a@example.org\nSubject: Re: digest\nAuto-Submitted: no\n\nThank you!\n"
    assert classify(letter, domain=DOMAIN).kind is Kind.OTHER
    assert classify(b"\xff\x00" * 50, domain=DOMAIN).kind in (Kind.OTHER, Kind.UNREADABLE)


# --- a real send, and the mail that comes back -------------------------------------------------


def _set_inbox(instance: Instance, **values: object) -> None:
    """Rewrite the config's [inbox] section (the sample writes every key with its default)."""
    text = instance.config.read_text(encoding="utf-8")
    head, _, rest = text.partition("\n[inbox]\n")
    tail = rest[rest.find("\n[") :] if "\n[" in rest else ""
    lines = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
             for k, v in values.items()]  # fmt: skip
    instance.config.write_text(
        head + "\n[inbox]\n" + "\n".join(lines) + "\n" + tail, encoding="utf-8"
    )


def _send(runner: CliRunner, instance: Instance, server: LoopbackController) -> dict[str, Received]:
    for address in READERS:
        cli(runner, instance, "subscribers", "add", address, "--embassy", "de-berlin")
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
        "--smtp-port", str(server.port))  # fmt: skip
    return {r.rcpt: r for r in server.handler.received}


@contextmanager
def _session(instance: Instance) -> Iterator[Session]:
    engine = make_engine(instance.settings.resolved_database_url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _state(instance: Instance) -> dict[str, Any]:
    """What a second reading must not change: statuses, ledger replies, audit, suppressions."""
    with _session(instance) as session:
        people = {s.email: str(s.status) for s in session.exec(select(Subscriber)).all()}
        replies = {d.subscriber_id: (str(d.state), d.reply) for d in session.exec(select(Delivery))}
        events = len(session.exec(select(AuditEvent)).all())
        suppressed = len(session.exec(select(Suppression)).all())
    return {"people": people, "rows": replies, "events": events, "suppressed": suppressed}


def _row(instance: Instance, address: str) -> Delivery:
    with _session(instance) as session:
        subscriber = store.find(session, address)
        row = session.exec(select(Delivery).where(Delivery.subscriber_id == subscriber.id)).one()
        session.expunge(row)
        return row


def _events(instance: Instance, address: str) -> list[AuditEvent]:
    with _session(instance) as session:
        subscriber_id = store.find(session, address).id
        query = select(AuditEvent).where(AuditEvent.subscriber_id == subscriber_id)
        return list(session.exec(query.order_by(col(AuditEvent.id))).all())


def _status(instance: Instance, address: str) -> str:
    with _session(instance) as session:
        return str(store.find(session, address).status)


def _message_id(received: Received) -> str:
    return str(received.parsed()["Message-ID"])


def _dsn(name: str, received: Received, *, to: str, recipient: str, returned_id: str) -> bytes:
    """A fixture as the relay writes it about a message we sent: to its return path, about
    `recipient`, returning the Message-ID `returned_id` ("" drops it)."""
    # Each report its own Message-ID (the first of the header wins), as every relay writes.
    own = hashlib.sha256(f"{name} {to} {recipient}".encode()).hexdigest()[:16]
    data = f"Message-ID: <{own}@mail.newsletter.example.org>\n".encode()
    data += (FIXTURES / name).read_bytes().replace(b"bounces@newsletter.example.org", to.encode())
    for fixture_address in (HARD, SOFT):
        data = data.replace(fixture_address.encode(), recipient.encode())
    if returned_id:
        return _FIXTURE_ID.sub(returned_id.encode(), data)
    return re.sub(
        rb"(?im)^Message-ID: <\d+\.[0-9a-f]{20}@newsletter\.example\.org>\r?\n", b"", data
    )


def _arf(received: Received, *, original_mail_from: str) -> bytes:
    """An RFC 5965 abuse report as the big providers send it, returning our message's headers."""
    head = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace").replace("\r\n", "\n")
    return f"""From: staff@fbl.mail.example.net
To: {original_mail_from}
Subject: FW: China S&T digest
Message-ID: <fbl.20261127.0931@fbl.mail.example.net>
Date: Fri, 27 Nov 2026 09:31:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
    boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Fri, 27 Nov 2026 08:14:00 +0000.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <{original_mail_from}>
Original-Rcpt-To: <{SPAM}>
Arrival-Date: Fri, 27 Nov 2026 08:14:00 +0000
Reported-Domain: {DOMAIN}
Source-IP: 192.0.2.1

--part1_13d.2e68ed54_boundary
Content-Type: text/rfc822-headers

{head}

--part1_13d.2e68ed54_boundary--
""".encode()


def _mailto_unsubscribe(received: Received, *, token: str = "") -> bytes:
    """What a mail client sends for the List-Unsubscribe mailto of `received`."""
    header = str(received.parsed()["List-Unsubscribe"])
    mailto = re.search(r"<mailto:([^?>]+)\?subject=([^>]+)>", header)
    assert mailto is not None, header
    subject = unquote(mailto.group(2))
    if token:
        subject = f"unsubscribe {token}"
    return (
        f"From: {received.rcpt}\r\nTo: {mailto.group(1)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <unsub.{abs(hash(subject))}@{received.rcpt.partition('@')[2]}>\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThis message was sent by the mail app.\r\n"
    ).encode()


def _letter() -> bytes:
    return (
        f"From: {WRITER}\r\nTo: newsletter@newsletter.example.org\r\nSubject: Re: digest\r\n"
        "Message-ID: <thanks.1@mission-berlin.example.org>\r\n\r\n"
        "Thank you; could the embassy in Berlin also get the monthly edition?\r\n"
    ).encode()


def _returned(sent: dict[str, Received]) -> list[bytes]:
    """Every kind of mail that comes back after the send, as the senders write it."""
    hard, soft, spam = sent[HARD], sent[SOFT], sent[SPAM]
    return [
        # Forwarded: the report names an address we never sent to and drops our Message-ID;
        # only the return path it was sent to says whose row it is.
        _dsn("postfix-5.1.1.eml", hard, to=hard.mail_from,
             recipient="zhang.san@forwarded.example.org", returned_id=""),
        _dsn("gmail-4.2.2-delayed.eml", soft, to=soft.mail_from, recipient=SOFT,
             returned_id=_message_id(soft)),
        _arf(spam, original_mail_from=spam.mail_from),
        _mailto_unsubscribe(sent[LEAVER]),
        _mailto_unsubscribe(sent[WRITER], token="bm90LWEtdG9rZW4.Zm9yZ2VkLW1hYy1oZXJl"),
        (FIXTURES / "autoreply.eml").read_bytes(),
        _letter(),
    ]  # fmt: skip


def _check_first_reading(instance: Instance, report: dict[str, Any]) -> None:
    summary = {k: report[k] for k in (
        "messages", "bounce_reports", "hard", "soft", "disabled", "counted", "rows_bounced",
        "complained", "unsubscribed", "invalid_tokens", "auto_replies", "for_a_person",
    )}  # fmt: skip
    assert summary == {
        "messages": 7, "bounce_reports": 2, "hard": 1, "soft": 1, "disabled": 1, "counted": 1,
        "rows_bounced": 1, "complained": 1, "unsubscribed": 1, "invalid_tokens": 1,
        "auto_replies": 1, "for_a_person": 1,
    }  # fmt: skip
    [person] = report["for_a_person_messages"]
    assert WRITER in person["detail"] and "Re: digest" in person["detail"]
    assert [_status(instance, a) for a in READERS] == [
        "bounced", "active", "complained", "unsubscribed", "active",
    ]  # fmt: skip
    hard = _row(instance, HARD)
    assert hard.state == "sent" and hard.reply.startswith("bounced: 5.1.1")
    assert "User unknown in virtual mailbox table" in hard.reply
    assert not _row(instance, SOFT).reply.startswith("bounced")
    [bounce] = [e for e in _events(instance, HARD) if e.action == "status"][-1:]
    assert (bounce.new_status, bounce.actor, bounce.via) == ("bounced", "dsn", "bounce")
    [leave] = [e for e in _events(instance, LEAVER) if e.action == "status"][-1:]
    assert (leave.old_status, leave.new_status, leave.via) == ("active", "unsubscribed", "mailto")
    [spam] = [e for e in _events(instance, SPAM) if e.action == "status"][-1:]
    assert (spam.new_status, spam.via) == ("complained", "complaint")
    assert _state(instance)["suppressed"] == 1  # the complainer's address, kept out for good


def _report_rows(runner: CliRunner, instance: Instance) -> dict[str, dict[str, Any]]:
    campaign = json.loads(cli(runner, instance, "campaign", "list", "--json"))[0]["id"]
    report = json.loads(cli(runner, instance, "campaign", "report", str(campaign), "--json"))
    return {r["email"]: r for r in report["recipients"]}


def test_each_digest_goes_out_with_its_own_return_path_and_a_dsn_to_it_finds_its_row(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _set_inbox(instance, bounce_domain=BOUNCES)
    sent = _send(runner, instance, smtp_server)
    assert set(sent) == set(READERS)
    paths = {r.mail_from for r in sent.values()}
    assert len(paths) == len(READERS)  # one return path per message
    assert all(
        re.fullmatch(r"bounce\+\d+-\d+-[a-z2-7]{16}@bounces\.example\.org", p) for p in paths
    )
    for received in sent.values():  # the From readers see is unchanged
        assert (
            received.parsed()["From"].addresses[0].addr_spec == "newsletter@newsletter.example.org"
        )
    check = json.loads(cli(runner, instance, "check", "--json"))
    assert any(f["topic"] == "inbox.bounce_domain" and BOUNCES in f["message"]
               for f in check["findings"])  # fmt: skip

    hard = sent[HARD]
    forged = hard.mail_from.replace("bounce+", "bounce+9", 1)
    folder = tmp_path / "returned"
    folder.mkdir()
    (folder / "forged.eml").write_bytes(
        _dsn("postfix-5.1.1.eml", hard, to=forged, recipient=HARD, returned_id="")
    )
    first = json.loads(cli(runner, instance, "inbox", "ingest", str(folder), "--json"))
    assert (first["disabled"], first["not_ours"]) == (0, 1)
    assert _status(instance, HARD) == "active"

    (folder / "real.eml").write_bytes(
        _dsn("postfix-5.1.1.eml", hard, to=hard.mail_from,
             recipient="zhang.san@forwarded.example.org", returned_id="")
    )  # fmt: skip
    second = json.loads(cli(runner, instance, "inbox", "ingest", str(folder), "--json"))
    assert (second["disabled"], second["rows_bounced"]) == (1, 1)
    assert _status(instance, HARD) == "bounced"
    rows = _report_rows(runner, instance)
    assert rows[HARD]["state"] == "sent" and rows[HARD]["reply"].startswith("bounced: 5.1.1")
    # The text report lists it too, among the rows to act on.
    campaign = json.loads(cli(runner, instance, "campaign", "list", "--json"))[0]["id"]
    text = cli(runner, instance, "campaign", "report", str(campaign))
    assert [line.split()[:2] for line in text.splitlines() if HARD in line] == [["bounced", HARD]]
    assert not any(rows[a]["reply"].startswith("bounced") for a in READERS if a != HARD)


def test_inbox_ingest_acts_on_every_kind_of_returned_mail_once(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _set_inbox(instance, bounce_domain=BOUNCES)
    sent = _send(runner, instance, smtp_server)
    box = mailbox.mbox(tmp_path / "returned.mbox")
    for data in _returned(sent):
        box.add(data)
    box.close()
    report = json.loads(cli(runner, instance, "inbox", "ingest", str(tmp_path / "returned.mbox"),
                            "--json"))  # fmt: skip
    _check_first_reading(instance, report)
    before = _state(instance)
    again = json.loads(cli(runner, instance, "inbox", "ingest", str(tmp_path / "returned.mbox"),
                           "--json"))  # fmt: skip
    assert _state(instance) == before
    assert (again["disabled"], again["rows_bounced"], again["complained"], again["unsubscribed"]) == (
        0, 0, 0, 0,
    )  # fmt: skip


def test_without_a_bounce_domain_the_message_id_finds_the_row(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    sent = _send(runner, instance, smtp_server)
    hard = sent[HARD]
    assert hard.mail_from == "newsletter@newsletter.example.org"
    path = tmp_path / "dsn.eml"
    path.write_bytes(
        _dsn("postfix-5.1.1.eml", hard, to=hard.mail_from, recipient=HARD,
             returned_id=_message_id(hard))
    )  # fmt: skip
    report = json.loads(cli(runner, instance, "bounces", "ingest", str(path), "--json"))
    assert (report["disabled"], report["rows_bounced"]) == (1, 1)
    assert _row(instance, HARD).reply.startswith("bounced: 5.1.1")


# --- a real IMAP server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Imap:
    port: int
    user: str
    password: str
    inbox: Path  # the user's INBOX maildir
    owner: tuple[int, int]  # who the mail processes run as
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def deliver(self, messages: list[bytes]) -> None:
        box = mailbox.Maildir(self.inbox, create=True)
        for data in messages:
            box.add(data)
        box.close()
        for path in [self.inbox, *self.inbox.rglob("*")]:
            os.chown(path, *self.owner)

    @contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(self.user, self.password)
        try:
            yield client
        finally:
            client.logout()

    def flags(self, folder: str = "INBOX") -> list[str]:
        with self.client() as client:
            client.select(folder)
            kind, data = client.uid("FETCH", "1:*", "(FLAGS)")
            return [d.decode() for d in data if isinstance(d, bytes)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _dovecot_binary() -> str:
    found = shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else ""
    )
    if not found:
        message = "dovecot is not installed (Debian: apt-get install dovecot-imapd)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return found


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Imap]:
    """dovecot on a loopback port with a passwd-file user and a maildir under tmp_path."""
    binary = _dovecot_binary()
    root = tmp_path / "dovecot"
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(parents=True)
    if os.geteuid() == 0:
        # Its login and mail processes refuse root: they run as Debian's dovecot users, who
        # must be able to walk down to this folder (pytest makes its folders 0700).
        owner = (pwd.getpwnam("dovecot").pw_uid, pwd.getpwnam("dovecot").pw_gid)
        internal, login = "dovecot", "dovenull"
        for folder in [root, *root.parents]:
            if folder == Path(tmp_path.anchor) or folder == Path("/tmp"):
                break
            folder.chmod(folder.stat().st_mode | 0o111)
        for sub in ("mail",):
            os.chown(root / sub, *owner)
    else:
        owner = (os.getuid(), os.getgid())
        internal = login = pwd.getpwuid(os.getuid()).pw_name
    # A password of its own: a port another test run took meanwhile can never log us in there.
    user, password = "bounces", secrets.token_urlsafe(16)
    (root / "passwd").write_text(
        f"{user}:{{PLAIN}}{password}:{owner[0]}:{owner[1]}::{root / 'mail'}::\n", encoding="utf-8"
    )
    group = internal if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    for _ in range(5):  # the free port may be taken before dovecot binds it: take another
        port = _free_port()
        (root / "dovecot.conf").write_text(
            _dovecot_conf(
                port=port, root=root, internal=internal, group=group, login=login, owner=owner
            ),
            encoding="utf-8",
        )
        process = subprocess.Popen(
            [binary, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        imap = Imap(port, user, password, root / "mail" / user, owner, root / "dovecot.log")
        try:
            if _ready(imap, process):
                yield imap
                return
        finally:
            process.terminate()
            process.wait(timeout=20)
    pytest.fail(f"dovecot did not start: {imap.said()}")


def _ready(imap: Imap, process: subprocess.Popen[bytes]) -> bool:
    """True once our dovecot lets us log in; False when it exited (its port was taken)."""
    deadline = time.monotonic() + 20
    while process.poll() is None:
        try:
            with imap.client():
                return True
        except (OSError, imaplib.IMAP4.error):
            if time.monotonic() > deadline:
                pytest.fail(f"dovecot did not answer: {imap.said()}")
            time.sleep(0.1)
    return False


def _dovecot_conf(
    *, port: int, root: Path, internal: str, group: str, login: str, owner: tuple[int, int]
) -> str:
    return f"""protocols = imap
listen = 127.0.0.1
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
ssl = no
disable_plaintext_auth = no
auth_verbose = yes
auth_mechanisms = plain
mail_location = maildir:{root / "mail"}/%u
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {owner[0]}
first_valid_gid = {owner[1]}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root / "passwd"}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def test_inbox_fetch_reads_a_real_imap_folder_acts_once_and_leaves_a_persons_mail_unread(
    runner: CliRunner,
    instance: Instance,
    smtp_server: LoopbackController,
    dovecot: Imap,
) -> None:
    _set_inbox(
        instance, bounce_domain=BOUNCES, host="127.0.0.1", port=dovecot.port, security="none",
        username=dovecot.user, password=dovecot.password, folder="INBOX",
    )  # fmt: skip
    sent = _send(runner, instance, smtp_server)
    dovecot.deliver(_returned(sent))

    report = json.loads(cli(runner, instance, "inbox", "fetch", "--json"))
    _check_first_reading(instance, report)
    assert all(
        m["source"].startswith("imap://127.0.0.1/INBOX;uid=") for m in report["messages_read"]
    )
    flags = dovecot.flags()
    assert len(flags) == 7 and all("NewsletterRead" in f for f in flags)
    # Everything acted on is seen; the letter for a person stays unread.
    assert sum("\\Seen" in f for f in flags) == 6

    before = _state(instance)
    again = json.loads(cli(runner, instance, "inbox", "fetch", "--json"))
    assert again["messages"] == 0 and _state(instance) == before

    # New mail after the first fetch is read; the old stays read.
    dovecot.deliver([_mailto_unsubscribe(sent[SOFT])])
    third = json.loads(cli(runner, instance, "inbox", "fetch", "--json"))
    assert (third["messages"], third["unsubscribed"]) == (1, 1)
    assert _status(instance, SOFT) == "unsubscribed"


def test_inbox_fetch_moves_what_it_acted_on_to_the_done_folder(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, dovecot: Imap
) -> None:
    _set_inbox(
        instance, host="127.0.0.1", port=dovecot.port, security="none", username=dovecot.user,
        password=dovecot.password, done_folder="Processed",
    )  # fmt: skip
    sent = _send(runner, instance, smtp_server)
    dovecot.deliver([_mailto_unsubscribe(sent[LEAVER]), _letter()])
    report = json.loads(cli(runner, instance, "inbox", "fetch", "--json"))
    assert (report["unsubscribed"], report["for_a_person"]) == (1, 1)
    assert len(dovecot.flags("INBOX")) == 1  # the letter, for a person
    assert len(dovecot.flags("Processed")) == 1


def test_inbox_fetch_says_what_to_fix(runner: CliRunner, instance: Instance) -> None:
    assert "no [inbox] host" in fails(runner, instance, "inbox", "fetch")
    _set_inbox(instance, host="imap.example.org", username="u", security="none")
    assert 'security = "ssl"' in fails(runner, instance, "inbox", "fetch")
    _set_inbox(instance, host="127.0.0.1", port=_free_port(), username="u", security="none")
    assert "cannot reach the IMAP server" in fails(runner, instance, "inbox", "fetch")


def test_a_complaint_is_read_from_our_message_id_when_no_return_path_names_it() -> None:
    head = (
        f"From: newsletter@{DOMAIN}\r\nTo: {SPAM}\r\nMessage-ID: <7.6a0d2c9e81f4b375c2e8@{DOMAIN}>"
        "\r\nSubject: digest\r\n\r\nbody"
    ).encode()
    fake = Received("newsletter@newsletter.example.org", SPAM, head)
    returned = classify(_arf(fake, original_mail_from=fake.mail_from), domain=DOMAIN)
    assert returned.kind is Kind.COMPLAINT and returned.complaint is not None
    assert returned.complaint.campaign_id == 7
    assert returned.complaint.message_id == f"<7.6a0d2c9e81f4b375c2e8@{DOMAIN}>"
    assert returned.complaint.recipient == SPAM
    assert message_from_bytes(head, policy=policy.default)["To"] == SPAM


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_newsletter_run_fetches_the_inbox_on_its_timer(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, dovecot: Imap
) -> None:
    sent = _send(runner, instance, smtp_server)
    dovecot.deliver([_mailto_unsubscribe(sent[LEAVER])])
    env = {
        **os.environ,
        "NEWSLETTER_TRANSPORT": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
        "NEWSLETTER_SMTP__PORT": str(smtp_server.port),
        "NEWSLETTER_SCHEDULE__POLL_SECONDS": "0.2", "NEWSLETTER_DELIVERY__POLL_SECONDS": "1",
        "NEWSLETTER_INBOX__HOST": "127.0.0.1", "NEWSLETTER_INBOX__PORT": str(dovecot.port),
        "NEWSLETTER_INBOX__SECURITY": "none", "NEWSLETTER_INBOX__USERNAME": dovecot.user,
        "NEWSLETTER_INBOX__PASSWORD": dovecot.password,
        "NEWSLETTER_INBOX__FETCH_MINUTES": "0.01",  # every 0.6 s
    }  # fmt: skip
    log = instance.dir / "run.stderr"
    newsletter = Path(sys.executable).parent / "newsletter"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(newsletter), "--config", str(instance.config), "run"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while _status(instance, LEAVER) != "unsubscribed":
            assert time.monotonic() < deadline, log.read_text(errors="replace") + dovecot.said()
            assert process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
        # A second message arrives while it runs: the next round takes it.
        dovecot.deliver([_mailto_unsubscribe(sent[WRITER])])
        while _status(instance, WRITER) != "unsubscribed":
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    output = log.read_text(errors="replace")
    assert "inbox: 1 messages, 1 unsubscribes, 1 unsubscribed" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_dry_run_over_a_maildir_says_what_would_change_and_changes_nothing(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController, tmp_path: Path
) -> None:
    _set_inbox(instance, bounce_domain=BOUNCES)
    sent = _send(runner, instance, smtp_server)
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for data in _returned(sent):
        box.add(data)
    box.close()
    before = _state(instance)
    result = invoke(runner, instance, "inbox", "ingest", str(tmp_path / "Maildir"), "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.strip().startswith("disabled dsn") and HARD in line for line in lines)
    assert any(
        line.strip().startswith("unsubscribed unsubscribe") and LEAVER in line for line in lines
    )
    assert any(line.strip().startswith("invalid-token unsubscribe") for line in lines)
    assert "for a person to read:" in lines
    # The token unsubscribes whoever shows it: it never reaches the terminal or a log.
    token = str(sent[LEAVER].parsed()["List-Unsubscribe"]).split("unsubscribe%20")[1].split(">")[0]
    assert len(token) > 20 and token not in result.output
    assert lines[-1].startswith("7 messages, 0 duplicates, 2 bounce reports, 1 hard, 1 soft")
    assert lines[-1].endswith("1 auto replies, 1 for a person (dry run)")
    assert _state(instance) == before
