"""Internationalised addresses: one stored form at every entry point, an ASCII wire form, real sends."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.addresses import AddressError, needs_smtputf8, normalise, wire
from newsletter.content.issue_intake import sample_issue_path
from newsletter.db import make_engine
from newsletter.errors import NewsletterError
from newsletter.mail.message import Envelope, single_message
from newsletter.mail.prepared import prepare
from newsletter.models import DeliveryState, Subscriber
from newsletter.render.digest import Recipient, RenderedDigest, recipient_values
from newsletter.testing.sink import LoopbackController, RecordingHandler, start_sink
from newsletter.web import create_app
from tests.conftest import Instance, cli, invoke, ledger_by_email

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # see tests/test_web.py
    from fastapi.testclient import TestClient

IDN = "kjc@使馆.中国"
IDN_ASCII = "kjc@xn--2rqs81p.xn--fiqs8s"
UTF8_LOCAL = "用户@例子.广告"  # a local part no ASCII form can carry: SMTPUTF8 only


# --- The two forms (pure) -----------------------------------------------------------------------


def test_the_stored_form_is_unicode_lower_cased_and_one_per_person() -> None:
    assert normalise(IDN) == IDN
    assert normalise(" KJC@使馆.中国 ") == IDN
    assert normalise("KJC@XN--2rqs81p.xn--fiqs8s") == IDN  # the A-label spelling: the same person
    assert normalise("Li.Wei@Example.ORG") == "li.wei@example.org"
    assert normalise(UTF8_LOCAL) == UTF8_LOCAL
    # NFC: a decomposed accent is the same address as the composed one.
    assert normalise("jose\u0301@example.org") == "jos\u00e9@example.org"


def test_the_wire_form_is_ascii_unless_the_local_part_is_not() -> None:
    assert wire(IDN) == IDN_ASCII and not needs_smtputf8(wire(IDN))
    assert wire("li.wei@example.org") == "li.wei@example.org"
    assert wire(IDN_ASCII) == IDN_ASCII
    assert wire(UTF8_LOCAL) == UTF8_LOCAL and needs_smtputf8(wire(UTF8_LOCAL))


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ("", "empty"),
        ("not-an-address", "@-sign"),
        ("a@b", "period"),
        ("a..b@example.org", "two periods"),
        ("kjc@-使馆.中国", "hyphen"),
        ("a\r\nBcc: x@evil.example@example.org", "invalid characters"),
        ("Wang <w@example.org>", "angle brackets"),
    ],
)
def test_a_bad_address_is_one_line_naming_it_and_the_fault(raw: str, fault: str) -> None:
    with pytest.raises(AddressError) as raised:
        normalise(raw)
    message = str(raised.value)
    assert message.startswith(f"{raw!r} is not a valid email address: ")
    assert fault in message and "\n" not in message
    assert isinstance(raised.value, NewsletterError) and isinstance(raised.value, ValueError)
    back = pickle.loads(pickle.dumps(raised.value))
    assert type(back) is AddressError and str(back) == message


def test_a_stored_value_that_is_no_address_has_no_wire_form() -> None:
    for value in (
        "kjc@-使馆.中国",
        "a b@example.org",
        "<a@example.org>",
        "a@example.org\r\nBcc: x",
    ):
        with pytest.raises(AddressError):
            wire(value)


addresses = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[A-Za-z0-9._%+-]{1,12}|[a-z]{0,3}[用户李伟ü]{1,4}", fullmatch=True),
    st.sampled_from(["例子", "使馆", "Example", "münchen", "xn--fiqs8s", "de-berlin"]),
    st.sampled_from(["中国", "org", "DE", "xn--fiqs8s"]),
)


@settings(max_examples=200, deadline=None)
@given(addresses)
def test_the_forms_are_stable_and_lead_back_to_each_other(raw: str) -> None:
    try:
        stored = normalise(raw)
    except AddressError:
        return  # a generated local part like "a..b": refused, and that is all
    assert normalise(stored) == stored
    on_wire = wire(stored)
    assert normalise(on_wire) == stored
    assert on_wire.isascii() == stored.split("@")[0].isascii()


# --- Headers --------------------------------------------------------------------------------------

DIGEST = RenderedDigest(
    subject="中国科技创新速递 2020年第1期", html="<p>%%GREETING%%</p>" + "<p>正文</p>" * 50,
    text="%%GREETING%%\n正文\n", preheader="", language="zh",
)  # fmt: skip


def _envelope(to: str, name: str = "王芳") -> Envelope:
    return Envelope(
        from_address="newsletter@newsletter.example.org", from_name="中国科技创新速递",
        to_address=to, to_name=name, message_id="<1.abc@newsletter.example.org>",
        list_id="kjcxsd.newsletter.example.org", unsubscribe_url="https://n.example.org/u/t",
        unsubscribe_mailto="mailto:newsletter@newsletter.example.org?subject=u",
    )  # fmt: skip


def _digest_message(to: str) -> tuple[bytes, EmailMessage]:
    prepared = prepare(DIGEST, from_name="中国科技创新速递",
                       from_address="newsletter@newsletter.example.org", list_id="k.example.org")  # fmt: skip
    values = recipient_values(Recipient("王芳", "https://u", "https://p"), "zh")
    data = prepared.message(_envelope(to), *values)
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return data, parsed


def _head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def test_a_digest_to_an_idn_domain_has_an_ascii_to_header() -> None:
    data, parsed = _digest_message(IDN)
    assert _head(data).isascii()
    assert [a.addr_spec for a in parsed["To"].addresses] == [IDN_ASCII]


def test_a_digest_to_a_utf8_local_part_has_a_utf8_to_header_only() -> None:
    data, _ = _digest_message(UTF8_LOCAL)
    lines = _head(data).split(b"\r\n")
    assert [line for line in lines if not line.isascii()] == [f" <{UTF8_LOCAL}>".encode()]
    to = lines.index(b" <" + UTF8_LOCAL.encode() + b">") - 1
    assert lines[to].startswith(b"To: =?utf-8?b?")  # the display name stays an encoded word
    assert _head(_digest_message("li.wei@example.org")[0]).isascii()


def test_confirmation_mail_headers_to_idn_addresses() -> None:
    for to, wire_to in ((IDN, IDN_ASCII), (UTF8_LOCAL, UTF8_LOCAL)):
        envelope = _envelope(to, name="")
        data = single_message(envelope, subject="请确认订阅", text="t", html="<p>h</p>")
        head = _head(data).decode()
        assert re.search(rf"^To: <?{re.escape(wire_to)}>?\r?$", head, re.MULTILINE), head
        assert _head(data).isascii() == (to == IDN)


# --- Entry points -------------------------------------------------------------------------------


def _emails(instance: Instance) -> set[str]:
    engine = make_engine(instance.settings.resolved_database_url)
    with Session(engine) as session:
        found = set(session.exec(select(Subscriber.email)).all())
    engine.dispose()
    return found


def test_add_and_handover_store_one_form_and_refuse_bad_addresses(
    runner: CliRunner, instance: Instance
) -> None:
    cli(
        runner,
        instance,
        "subscribers",
        "add",
        "KJC@XN--2rqs81p.xn--fiqs8s",
        "--embassy",
        "de-berlin",
    )
    assert _emails(instance) == {IDN}
    again = invoke(runner, instance, "subscribers", "add", IDN, "--embassy", "de-berlin")
    assert again.exit_code == 1 and "already subscribed" in again.stderr
    shown = json.loads(cli(runner, instance, "subscribers", "show", IDN_ASCII, "--json"))
    assert shown["email"] == IDN

    bad = invoke(runner, instance, "subscribers", "add", "kjc@-使馆.中国", "--embassy", "de-berlin")
    assert bad.exit_code == 1
    [line] = bad.stderr.strip().splitlines()
    assert "'kjc@-使馆.中国' is not a valid email address" in line and "hyphen" in line

    cli(runner, instance, "subscribers", "handover", IDN, UTF8_LOCAL, "--no-mail")
    refused = invoke(runner, instance, "subscribers", "handover", UTF8_LOCAL, "x@例子", "--no-mail")
    assert refused.exit_code == 1 and "'x@例子'" in refused.stderr
    assert _emails(instance) == {IDN, UTF8_LOCAL}


def test_import_takes_idn_addresses_and_refuses_a_doubled_column(
    runner: CliRunner, instance: Instance, tmp_path: Path
) -> None:
    doubled = tmp_path / "fr-paris.csv"
    doubled.write_text("email,name,email\na@example.org,A,b@example.org\n", encoding="utf-8")
    result = invoke(runner, instance, "subscribers", "import", str(doubled))
    assert result.exit_code == 1
    assert f"{doubled}:1: email: column 'email' appears twice in the header" in result.stderr
    assert _emails(instance) == set()

    listed = tmp_path / "de-berlin.csv"
    listed.write_text(
        f"email,name\n{IDN},甲\nWANG@XN--FSQU00A.XN--4RR70V,乙\n{UTF8_LOCAL},丙\n", encoding="utf-8"
    )
    cli(runner, instance, "subscribers", "import", str(listed))
    assert _emails(instance) == {IDN, "wang@例子.广告", UTF8_LOCAL}
    # The same people spelt the other way are the same rows.
    listed.write_text(f"email,name\n{IDN_ASCII},甲\nwang@例子.广告,乙\n", encoding="utf-8")
    out = json.loads(cli(runner, instance, "subscribers", "import", str(listed), "--json"))
    assert out["added"] == 0 and len(_emails(instance)) == 3


@pytest.fixture
def client(instance: Instance) -> Iterator[TestClient]:
    with TestClient(create_app(instance.settings)) as test_client:
        yield test_client


def _subscribe(client: TestClient, address: str) -> int:
    page = client.get("/subscribe")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    form = {"email": address, "name": "", "embassy": "de-berlin", "language": "zh",
            "csrf": csrf.group(1)}  # fmt: skip
    return client.post("/subscribe", data=form, follow_redirects=False).status_code


def _outbox(instance: Instance) -> list[bytes]:
    folder = instance.settings.path(instance.settings.outbox)
    return [
        p.read_bytes() for p in sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    ]


def test_the_subscribe_form_takes_idn_addresses_and_mails_their_wire_form(
    instance: Instance, client: TestClient
) -> None:
    assert _subscribe(client, "KJC@使馆.中国") == 200
    assert _subscribe(client, UTF8_LOCAL) == 200
    assert _subscribe(client, "kjc@-使馆.中国") == 400
    assert _emails(instance) == {IDN, UTF8_LOCAL}
    first, second = _outbox(instance)
    assert re.search(rb"^To: <?" + IDN_ASCII.encode() + rb">?\r$", _head(first), re.MULTILINE)
    assert _head(first).isascii()
    assert re.search(rb"^To: <?" + UTF8_LOCAL.encode() + rb">?\r$", _head(second), re.MULTILINE)


# --- A real send --------------------------------------------------------------------------------


def _people(runner: CliRunner, instance: Instance, count: int) -> list[str]:
    cli(runner, instance, "issue", "import", str(sample_issue_path()))
    people = [f"reader{i:03d}@example.org" for i in range(count)]
    lists = instance.dir / "lists"
    lists.mkdir()
    (lists / "de-berlin.csv").write_text(
        "email,name,sectors\n"
        + "".join(f"{p},读者{i},{'ai' if i % 2 else ''}\n" for i, p in enumerate(people)),
        encoding="utf-8",
    )
    cli(runner, instance, "subscribers", "import", str(lists))
    return people


def _send(runner: CliRunner, instance: Instance, server: LoopbackController) -> dict[str, object]:
    out = cli(runner, instance, "send", "2020-01", "--transport", "smtp", "--smtp-host", "127.0.0.1",
              "--smtp-port", str(server.port), "--json")  # fmt: skip
    return dict(json.loads(out))


def test_one_idn_address_among_300_is_delivered_with_the_rest(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    people = _people(runner, instance, 300)
    cli(runner, instance, "subscribers", "add", IDN, "--embassy", "de-berlin", "--name", "参赞")
    report = _send(runner, instance, smtp_server)
    received = smtp_server.handler.received
    assert Counter(r.rcpt for r in received) == Counter([*people, IDN_ASCII])
    assert report["sent"] == 301 and report["failed"] == 0
    [mine] = [r for r in received if r.rcpt == IDN_ASCII]
    assert _head(mine.data).isascii()
    assert [a.addr_spec for a in mine.parsed()["To"].addresses] == [IDN_ASCII]
    rows = ledger_by_email(instance.settings)
    assert {r.state for r in rows.values()} == {DeliveryState.SENT} and len(rows) == 301
    campaigns = json.loads(cli(runner, instance, "campaign", "list", "--json"))
    assert campaigns[0]["state"] == "finished"


def test_a_utf8_local_part_to_a_server_without_smtputf8_fails_alone(
    runner: CliRunner, instance: Instance
) -> None:
    people = _people(runner, instance, 20)
    cli(runner, instance, "subscribers", "add", UTF8_LOCAL, "--embassy", "de-berlin")
    cli(runner, instance, "subscribers", "add", IDN, "--embassy", "de-berlin")
    plain = start_sink(RecordingHandler(), smtputf8=False)
    try:
        report = _send(runner, instance, plain)
        received = plain.handler.received
    finally:
        plain.stop()
    assert Counter(r.rcpt for r in received) == Counter([*people, IDN_ASCII])
    assert report["failed"] == 1 and report["sent"] == 21
    rows = ledger_by_email(instance.settings)
    assert rows[UTF8_LOCAL].state == DeliveryState.FAILED and "SMTPUTF8" in rows[UTF8_LOCAL].reply
    assert {rows[p].state for p in [*people, IDN]} == {DeliveryState.SENT}


def test_a_utf8_local_part_goes_with_smtputf8_when_offered(
    runner: CliRunner, instance: Instance, smtp_server: LoopbackController
) -> None:
    people = _people(runner, instance, 5)
    cli(
        runner, instance, "subscribers", "add", UTF8_LOCAL, "--embassy", "de-berlin", "--name", "丙"
    )
    report = _send(runner, instance, smtp_server)
    assert report["sent"] == 6 and report["failed"] == 0
    received = smtp_server.handler.received
    assert Counter(r.rcpt for r in received) == Counter([*people, UTF8_LOCAL])
    [mine] = [r for r in received if r.rcpt == UTF8_LOCAL]
    assert "SMTPUTF8" in mine.options
    assert f" <{UTF8_LOCAL}>".encode() in _head(mine.data).split(b"\r\n")
    assert all(_head(r.data).isascii() for r in received if r is not mine)
