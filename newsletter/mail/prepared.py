"""A profile's digest as a message encoded once; each recipient's message is a few splices away."""

from __future__ import annotations

import binascii
import email.utils
import re
import secrets
import time
from dataclasses import dataclass, field

from newsletter import addresses
from newsletter.mail.message import Envelope, display_name, sender_address
from newsletter.mail.splice import SplicedPart, split_part
from newsletter.render.digest import PLACEHOLDER_RE, RenderedDigest

_PRINTABLE_WORDS = re.compile(r"^[A-Za-z0-9 !#$%&'*+\-/^_`{|}~]*$")


# UTF-8 bytes per encoded word: 52 base64 characters, a 64-character word, so that even
# "Subject: " and the first word fit in a 78-character line.
_WORD_BYTES = 39


def encoded_words(value: str) -> str:
    """RFC 2047 encoded words (UTF-8, base64), folded with CRLF SP, for non-ASCII header text.

    Each word holds whole characters (a cut never falls inside one), as RFC 2047 requires.
    """
    data = value.encode()
    words = []
    start = 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode()}?=")
        start = end
    return "\r\n ".join(words)


def address(name: str, addr: str) -> str:
    """`name <addr>` that can only ever parse as that one address."""
    shown = display_name(name)
    if not shown:
        return f"<{addr}>"
    if _PRINTABLE_WORDS.match(shown):
        return f"{shown} <{addr}>"
    return f"{encoded_words(shown)}\r\n <{addr}>"


def _header(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("ascii")


class _Clock:
    """RFC 5322 dates, formatted once per second rather than once per message."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, email.utils.formatdate(second, usegmt=True)
        return self.text


@dataclass(frozen=True)
class PreparedDigest:
    """Headers and parts shared by every recipient of one profile, already encoded."""

    head: bytes  # From and Subject
    tail: bytes  # List-Id ... Content-Type, the blank line, and the text part's MIME header
    text: SplicedPart
    between: bytes  # the boundary and the HTML part's MIME header
    html: SplicedPart
    end: bytes
    clock: _Clock = field(default_factory=_Clock)

    def parts(
        self, envelope: Envelope, text_values: dict[str, str], html_values: dict[str, str]
    ) -> list[bytes]:
        """One recipient's message in pieces; the long ones are this profile's, shared."""
        # AddressError for anything that is not one valid address: nothing else can reach the header.
        to = addresses.wire(envelope.to_address)
        # The wire form is ASCII unless the local part is not: then, for this message only, the
        # To header is UTF-8 (RFC 6532), which the transport may send only with SMTPUTF8.
        to_header = f"To: {address(envelope.to_name, to)}\r\n".encode(
            "ascii" if to.isascii() else "utf-8"
        )
        headers = (
            f"Date: {self.clock.now()}\r\n"
            f"Message-ID: {envelope.message_id}\r\n"
            f"List-Unsubscribe: <{envelope.unsubscribe_url}>,\r\n <{envelope.unsubscribe_mailto}>\r\n"
        ).encode("ascii")
        return [
            self.head,
            to_header,
            headers,
            self.tail,
            *self.text.pieces({k: v.encode() for k, v in text_values.items()}),
            self.between,
            *self.html.pieces({k: v.encode() for k, v in html_values.items()}),
            self.end,
        ]

    def message(
        self, envelope: Envelope, text_values: dict[str, str], html_values: dict[str, str]
    ) -> bytes:
        return b"".join(self.parts(envelope, text_values, html_values))


def prepare(
    digest: RenderedDigest, *, from_name: str, from_address: str, list_id: str, reply_to: str = ""
) -> PreparedDigest:
    boundary = f"=_nl_{secrets.token_hex(12)}"
    subject = " ".join(digest.subject.split())
    head = _header("From", address(from_name, sender_address(from_address, "[sender] address")))
    head += _header(
        "Subject", subject if subject.isascii() and len(subject) < 900 else encoded_words(subject)
    )
    if reply_to:
        head += _header("Reply-To", f"<{sender_address(reply_to, '[sender] reply_to')}>")
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    tail = b"".join(
        (
            _header("List-Id", f"<{list_id}>"),
            _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            _header("Auto-Submitted", "auto-generated"),
            _header("MIME-Version", "1.0"),
            _header("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
            b"\r\n",
            f"--{boundary}\r\n{part.format('plain')}".encode(),
        )
    )
    return PreparedDigest(
        head=head,
        tail=tail,
        text=split_part(digest.text, PLACEHOLDER_RE),
        between=f"--{boundary}\r\n{part.format('html')}".encode(),
        html=split_part(digest.html, PLACEHOLDER_RE),
        end=f"--{boundary}--\r\n".encode(),
    )
