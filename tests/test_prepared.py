"""The spliced fast path gives the same message the email package would build, for any recipient."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.mail.message import Envelope
from newsletter.mail.prepared import prepare
from newsletter.mail.splice import split_part
from newsletter.render.digest import Recipient, RenderedDigest, personalise, recipient_values

DIGEST = RenderedDigest(
    subject="中国科技创新速递 2020年第1期｜集成电路、人工智能",
    html="<p>%%GREETING%%</p><p>正文 "
    + "很长的中文内容。" * 400
    + '</p><a href="%%UNSUBSCRIBE_URL%%">退订</a>'
    '<a href="%%PREFERENCES_URL%%">偏好</a><p>%%RECIPIENT_NAME%%</p>',
    text="%%GREETING%%\n\n正文\n"
    + "很长的中文内容。\n" * 300
    + "退订: %%UNSUBSCRIBE_URL%%\n偏好: %%PREFERENCES_URL%%\n",
    preheader="",
    language="zh",
)


def _envelope(name: str) -> Envelope:
    return Envelope(
        from_address="newsletter@newsletter.example.org", from_name="中国科技创新速递",
        to_address="li.wei@de-berlin.example.org", to_name=name,
        message_id="<1.abc@newsletter.example.org>", list_id="kjcxsd.newsletter.example.org",
        unsubscribe_url="https://n.example.org/unsubscribe/t.k",
        unsubscribe_mailto="mailto:newsletter@newsletter.example.org?subject=unsubscribe%20t.k",
    )  # fmt: skip


def _spliced(name: str) -> tuple[EmailMessage, bytes, RenderedDigest]:
    envelope = _envelope(name)
    who = Recipient(name, envelope.unsubscribe_url, "https://n.example.org/preferences/p.k")
    text_values, html_values = recipient_values(who, "zh")
    prepared = prepare(DIGEST, from_name="中国科技创新速递", from_address=envelope.from_address,
                       list_id=envelope.list_id)  # fmt: skip
    data = prepared.message(envelope, text_values, html_values)
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed, data, personalise(DIGEST, who)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_any_name_gives_one_recipient_and_the_personalised_bodies(name: str) -> None:
    parsed, data, expected = _spliced(name)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["li.wei@de-berlin.example.org"]
    assert str(parsed["Subject"]).strip() == DIGEST.subject
    assert parsed.get_body(("plain",)).get_content() == expected.text  # type: ignore[union-attr]
    assert parsed.get_body(("html",)).get_content() == expected.html  # type: ignore[union-attr]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["Message-ID"] == "<1.abc@newsletter.example.org>"
    assert all(len(line) <= 78 for line in data.split(b"\r\n")[:40])
    assert all(len(line) <= 76 for line in data.split(b"\r\n\r\n", 2)[2].split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_hostile_display_names_stay_one_address() -> None:
    for name in [
        "Evil\r\nBcc: x@evil.example",
        "a, b <c@evil.example>",
        "=?utf-8?b?PHg+?=",
        "x" * 300,
    ]:
        parsed, data, _ = _spliced(name)
        assert [a.addr_spec for a in parsed["To"].addresses] == ["li.wei@de-berlin.example.org"]
        assert parsed["Bcc"] is None and b"\r\nBcc:" not in data


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=12), st.sampled_from(["%%A%%", "%%B%%"])), max_size=6),
    st.text(max_size=200),
    st.text(max_size=9),
    st.binary(max_size=5),
)
def test_splicing_decodes_to_the_substituted_text(
    pieces: list[tuple[str, str]], last: str, a: str, b: bytes
) -> None:
    pattern = re.compile(r"%%A%%|%%B%%")
    text = "".join(p + token for p, token in pieces) + last
    if pattern.sub("", text) != "".join(p for p, _ in pieces) + last:
        return  # the generated text happened to spell a placeholder across pieces
    values = {"%%A%%": a.encode(), "%%B%%": b}
    encoded = split_part(text, pattern).encode(values)
    expected = pattern.sub(lambda m: "\0" + m.group(0), text).encode()
    expected = re.sub(rb"\x00%%A%%", lambda _: values["%%A%%"], expected)
    expected = re.sub(rb"\x00%%B%%", lambda _: values["%%B%%"], expected)
    assert base64.b64decode(encoded) == expected
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
