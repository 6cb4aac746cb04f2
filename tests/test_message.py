"""Message building: headers survive a round trip, data can never add a header or an address."""

from __future__ import annotations

import base64
import subprocess
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.delivery.replies import Reply, Verdict, classify
from newsletter.mail.message import DkimKey, Envelope, dkim_sign, message_id, single_message


def _envelope(to_name: str = "李伟", subject_from: str = "中国科技创新速递") -> Envelope:
    return Envelope(
        from_address="newsletter@newsletter.example.org",
        from_name=subject_from,
        to_address="li.wei@de-berlin.example.org",
        to_name=to_name,
        message_id=message_id(b"k" * 32, 7, 42, "newsletter.example.org"),
        list_id="kjcxsd.newsletter.example.org",
        unsubscribe_url="https://newsletter.example.org/unsubscribe/abc.def",
        unsubscribe_mailto="mailto:newsletter@newsletter.example.org?subject=unsubscribe%20abc.def",
    )


def _parse(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_message_has_every_header_design_asks_for() -> None:
    envelope = _envelope()
    data = single_message(
        envelope, subject="中国科技创新速递 2020年第1期｜人工智能", text="正文", html="<p>正文</p>"
    )
    parsed = _parse(data)
    assert parsed["Subject"] == "中国科技创新速递 2020年第1期｜人工智能"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "<https://newsletter.example.org/unsubscribe/abc.def>" in parsed["List-Unsubscribe"]
    assert "<mailto:" in parsed["List-Unsubscribe"]
    assert parsed["List-Id"] == "<kjcxsd.newsletter.example.org>"
    assert parsed["Message-ID"].endswith("@newsletter.example.org>")
    assert parsed.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content().strip() == "正文"  # type: ignore[union-attr]


def test_message_id_is_stable_and_private() -> None:
    a = message_id(b"k" * 32, 7, 42, "newsletter.example.org")
    assert a == message_id(b"k" * 32, 7, 42, "newsletter.example.org")
    assert a != message_id(b"k" * 32, 7, 43, "newsletter.example.org")
    # Keyed by the instance secret: the id names no database row a reader could guess.
    assert a != message_id(b"j" * 32, 7, 42, "newsletter.example.org")
    assert a.startswith("<7.") and a.endswith("@newsletter.example.org>")


HOSTILE = [
    "Evil\r\nBcc: victim@example.com",
    'Mallory <mallory@evil.example>, "x" <y@evil.example>',
    'a,b,c;d:e<f>@g"h\\i',
    "\u202eRTL override 李\u200f",
    "x" * 300 + " <z@evil.example>",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_display_names_never_add_a_recipient_or_header(name: str) -> None:
    envelope = _envelope(to_name=name)
    data = single_message(
        envelope, subject=f"subject\r\nBcc: x@evil.example {name}", text="t", html="h"
    )
    parsed = _parse(data)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["li.wei@de-berlin.example.org"]
    assert parsed["Bcc"] is None
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in header_block


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120), st.text(max_size=120))
def test_any_name_or_subject_keeps_exactly_one_recipient(name: str, subject: str) -> None:
    envelope = _envelope(to_name=name)
    data = single_message(envelope, subject=subject, text="t", html="h")
    parsed = _parse(data)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["li.wei@de-berlin.example.org"]
    assert set(parsed.keys()) <= {
        "From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
        "List-Unsubscribe-Post", "Auto-Submitted", "Precedence", "X-Auto-Response-Suppress",
        "MIME-Version", "Content-Type",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (Reply(250, "ok"), Verdict.SENT),
        (Reply(451, "4.3.0 try later"), Verdict.RETRY),
        (Reply(0, "connection reset"), Verdict.RETRY),
        (Reply(550, "5.1.1 user unknown"), Verdict.BOUNCE),
        (Reply(550, "5.7.1 rejected by policy"), Verdict.FAIL),
        (Reply(552, "message too big"), Verdict.FAIL),
        (Reply(535, "5.7.8 authentication failed"), Verdict.PAUSE),
        (Reply(1, "TLS handshake failed"), Verdict.PAUSE),
    ],
)
def test_smtp_replies_are_classified(reply: Reply, verdict: Verdict) -> None:
    assert classify(reply) is verdict


def test_dkim_signature_covers_the_listed_headers_and_verifies(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    envelope = _envelope()
    data = single_message(envelope, subject="中国科技创新速递", text="正文", html="<p>正文</p>")
    signed = dkim_sign(data, DkimKey("newsletter.example.org", "s2026", key.read_bytes()))
    header = _parse(signed)["DKIM-Signature"]
    signed_headers = {h.strip().lower() for h in header.split("h=")[1].split(";")[0].split(":")}
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= signed_headers

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2026._domainkey.newsletter.example.org."
        return record

    assert dkim.verify(signed, dnsfunc=dns)
    tampered = signed.replace(b"Subject:", b"Subject: [fwd]", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)
