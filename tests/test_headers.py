"""Every header rule over the raw bytes of real messages: digests sent to a real SMTP server with
DKIM, and a subscription mail with the instance's real, full-length tokens."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest
from typer.testing import CliRunner

from newsletter.mail.message import Envelope, single_message
from newsletter.mail.subscription import MailKind, MailRequest, subscription_message
from newsletter.render.environment import make_environment
from newsletter.runtime import load_dkim
from newsletter.testing.sink import LoopbackController
from tests.conftest import Instance, cli, load_sample, make_instance

SELECTOR = "s2026"
DATE = re.compile(
    rb"^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$"
)
LIST_UNSUBSCRIBE = re.compile(
    rb"^List-Unsubscribe: <https://[^\s<>]+>,\r\n <mailto:[^\s<>]+>\r\n", re.MULTILINE
)


def _head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def _fields(head: bytes) -> dict[bytes, list[bytes]]:
    """Header name (lower case) -> its raw values, folding kept."""
    found: dict[bytes, list[bytes]] = {}
    for raw in re.split(rb"\r\n(?=[^ \t])", head):
        name, _, value = raw.partition(b":")
        found.setdefault(name.lower(), []).append(value)
    return found


def _key(folder: Path) -> tuple[Path, bytes]:
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _assert_header_rules(data: bytes, record: bytes, domain: str) -> None:
    head = _head(data)
    fields = _fields(head)
    # Structured fields are never RFC 2047 encoded, and fold only between the two URIs.
    assert LIST_UNSUBSCRIBE.search(head), head[:2000]
    assert b"=?" not in b"".join(fields[b"list-unsubscribe"])
    assert len(fields[b"list-unsubscribe"]) == 1
    assert any(DATE.match(line) for line in head.split(b"\r\n")), head
    assert fields[b"precedence"] == [b" bulk"]
    assert fields[b"auto-submitted"] == [b" auto-generated"]
    assert fields[b"x-auto-response-suppress"] == [b" OOF, AutoReply"]
    for line in head.split(b"\r\n"):
        if line.startswith((b"DKIM-Signature:", b"List-Unsubscribe:", b" <mailto:", b"\tb=")):
            continue  # a URI or a signature is one token: folding inside it would change it
        assert len(line) <= 78, line
    # DKIM: relaxed/relaxed, Reply-To and the list headers signed, the key ones oversigned.
    signature = b"".join(fields[b"dkim-signature"])
    tags = {
        k.strip(): v
        for k, _, v in (t.partition(b"=") for t in re.sub(rb"\s+", b"", signature).split(b";"))
    }
    assert tags[b"c"] == b"relaxed/relaxed" and tags[b"d"] == domain.encode()
    signed = tags[b"h"].lower().split(b":")
    for name in (b"from", b"to", b"subject", b"reply-to", b"list-unsubscribe", b"list-id"):
        assert signed.count(name) == len(fields.get(name, [])) + 1, (name, signed)
    assert b"list-unsubscribe-post" in signed and b"date" in signed

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{SELECTOR}._domainkey.{domain}.".encode()
        return record

    assert dkim.verify(data, dnsfunc=dns)
    # A second From added on the way breaks the signature instead of riding on it.
    forged = data.replace(b"\r\nTo:", b"\r\nFrom: <boss@evil.example>\r\nTo:", 1)
    assert not dkim.verify(forged, dnsfunc=dns)


def _dkim_instance(tmp_path: Path, runner: CliRunner) -> tuple[Instance, bytes]:
    instance = make_instance(tmp_path, f"sqlite:///{tmp_path / 'newsletter.db'}")
    key, record = _key(tmp_path)
    text = instance.config.read_text(encoding="utf-8")
    domain = instance.settings.domain
    text = text.replace('reply_to = ""', f'reply_to = "office@{domain}"', 1)
    text = text.replace('base_url = "http://127.0.0.1:8000"', f'base_url = "https://{domain}"', 1)
    text = re.sub(
        r'(\[dkim\][^\[]*?)selector = ""', rf'\1selector = "{SELECTOR}"', text, flags=re.S
    )
    text = re.sub(r'(\[dkim\][^\[]*?)key_file = ""', rf'\1key_file = "{key}"', text, flags=re.S)
    text = re.sub(r'(\[dkim\][^\[]*?)domain = ""', rf'\1domain = "{domain}"', text, flags=re.S)
    instance.config.write_text(text, encoding="utf-8")
    cli(runner, instance, "init")
    return instance, record


def test_every_digest_of_a_real_send_keeps_every_header_rule(
    tmp_path: Path, runner: CliRunner, smtp_server: LoopbackController
) -> None:
    instance, record = _dkim_instance(tmp_path, runner)
    active = load_sample(runner, instance)
    out = cli(runner, instance, "send", "2020-01", "--transport", "smtp",
              "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_server.port), "--json")  # fmt: skip
    assert json.loads(out)["sent"] == len(active)
    received = smtp_server.handler.received
    assert {r.rcpt for r in received} == active
    for message in received:
        _assert_header_rules(message.data, record, instance.settings.domain)


def test_subscription_mail_keeps_every_header_rule_with_full_length_tokens(
    tmp_path: Path, runner: CliRunner
) -> None:
    instance, record = _dkim_instance(tmp_path, runner)
    settings = instance.settings
    key = load_dkim(settings)
    assert key is not None
    now = dt.datetime(2026, 12, 2, 8, tzinfo=dt.UTC)
    for kind in MailKind:
        # A token key as long as the ones `subscribers add` makes: real link lengths.
        request = MailRequest(kind, "li.wei@de-berlin.example.org", "李伟", "zh", "k" * 43)
        outgoing = subscription_message(settings, make_environment(), request, now=now, dkim=key)
        _assert_header_rules(outgoing.data, record, settings.domain)
        unsubscribe = message_from_bytes(outgoing.data, policy=policy.default)["List-Unsubscribe"]
        assert str(unsubscribe).startswith(f"<{settings.base_url}/unsubscribe/")


@pytest.mark.parametrize("length", [60, 200, 900])
def test_long_ascii_subjects_fold_at_spaces_and_read_back_whole(length: int) -> None:
    subject = " ".join(["China S&T Innovation Express"] * (length // 29 + 1))[:length].strip()
    envelope = Envelope(
        "newsletter@newsletter.example.org", "China S&T Innovation Express",
        "reader@de-berlin.example.org", "Li Wei", "<1.a@newsletter.example.org>",
        "kjcxsd.newsletter.example.org", "https://n.example.org/unsubscribe/t.k",
        "mailto:u@newsletter.example.org?subject=unsubscribe",
    )  # fmt: skip
    data = single_message(envelope, subject=subject, text="t", html="<p>h</p>")
    head = _head(data)
    assert all(len(line) <= 78 for line in head.split(b"\r\n")), head
    assert message_from_bytes(data, policy=policy.default)["Subject"] == subject
    assert b"=?" not in b"".join(_fields(head)[b"subject"])


def test_a_bilingual_display_name_keeps_its_english_words_whole() -> None:
    name = "中国科技创新速递 China S&T Innovation Express"
    envelope = Envelope(
        "newsletter@newsletter.example.org", name, "reader@de-berlin.example.org", "Li Wei",
        "<1.a@newsletter.example.org>", "kjcxsd.newsletter.example.org",
        "https://n.example.org/unsubscribe/t.k", "mailto:u@newsletter.example.org",
    )  # fmt: skip
    data = single_message(envelope, subject="订阅确认", text="第一行\n第二行\n", html="<p>h</p>")
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["From"].addresses[0].display_name == name
    assert b"Innovation" in _head(data)  # the English words travel as they are
    assert all(len(line) <= 78 for line in _head(data).split(b"\r\n"))
    text = parsed.get_body(("plain",))
    assert text is not None
    assert text.get_payload(decode=True) == "第一行\r\n第二行\r\n".encode()
