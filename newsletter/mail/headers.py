"""Every header the product writes, as bytes: one writer for digests and subscription mail.

Written by hand rather than by `email.message`: its folder turned a long List-Unsubscribe into
RFC 2047 encoded words (which a structured field may not hold: providers then saw no
unsubscribe URI), and once re-emitted a long quoted display name bare. Each function here
writes one field the way the RFCs and the bulk-sender rules want it:

- structured fields (List-Unsubscribe, List-Id, Message-ID) are never encoded, and folded only
  between their elements (RFC 2369, RFC 5322 section 3.2.2);
- unstructured text (Subject, display names) is folded at 78 columns at spaces when ASCII, and
  written as whole-character RFC 2047 encoded words otherwise;
- Date names its zone as `+0000`, never the obsolete `GMT` (RFC 5322 section 4.3).
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.utils
import re
from dataclasses import dataclass

from newsletter import addresses
from newsletter.errors import DeliveryError

LINE = 78  # RFC 5322's "SHOULD" line length, the fold point of every header written here
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
# RFC 5322 specials: inside a display name they need quoting, and quoting is what Python's
# header folder has lost before (a long quoted name refolded bare becomes extra addresses).
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_PRINTABLE_WORDS = re.compile(r"^[A-Za-z0-9 !#$%&'*+\-/^_`{|}~]*$")
MAX_DISPLAY_NAME = 64
# UTF-8 bytes per encoded word: 52 base64 characters, a 64-character word, so that even
# "Subject: " and the first word fit in a 78-character line.
_WORD_BYTES = 39


@dataclass(frozen=True)
class Envelope:
    """Everything about one message that is not its content."""

    from_address: str
    from_name: str
    to_address: str
    to_name: str
    message_id: str
    list_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    reply_to: str = ""


def clean(value: str) -> str:
    """One line, no control characters: data can never start a new header."""
    return " ".join(_UNSAFE.sub(" ", value).split())


def display_name(value: str) -> str:
    """A display name that needs no quoting: specials become spaces, length is capped.

    It is only what a mail client shows; the address itself is never derived from it.
    """
    return " ".join(_SPECIALS.sub(" ", clean(value)).split())[:MAX_DISPLAY_NAME].strip()


def sender_address(value: str, setting: str) -> str:
    """A configured address (From, Reply-To, the envelope sender) in its ASCII wire form.

    Shared by every message of a send, so one that needs SMTPUTF8 is refused as configuration.
    """
    if value.isascii():
        return value  # as configured: the configuration owns its checks, and sends work today
    wired = addresses.wire(value)
    if not wired.isascii():
        raise DeliveryError(
            f"{setting} {value!r} has a non-ASCII local part, which every message would need "
            "SMTPUTF8 for; configure an ASCII address"
        )
    return wired


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
    if _PRINTABLE_WORDS.match(shown) and len(shown) + len(addr) < LINE - 12:
        return f"{shown} <{addr}>"
    return f"{_folded(_phrase(shown))}\r\n <{addr}>"


def _phrase(shown: str) -> list[str]:
    """A display name as words: ASCII words as they are, each run of other words as encoded
    words, so "中国科技创新速递 China S&T Innovation Express" keeps its English readable
    (a cut inside an encoded run would show, undecoded, as "Inno vation")."""
    pieces: list[str] = []
    run: list[str] = []
    for word in shown.split(" "):
        if _PRINTABLE_WORDS.match(word):
            if run:
                pieces += encoded_words(" ".join(run)).split("\r\n ")
                run = []
            pieces.append(word)
        else:
            run.append(word)
    if run:
        pieces += encoded_words(" ".join(run)).split("\r\n ")
    return pieces


def _folded(pieces: list[str], first: int = len("From: ")) -> str:
    """Words joined by spaces, a fold (CRLF SP) wherever the next would pass 78 columns."""
    lines: list[str] = []
    line, used = "", first
    for piece in pieces:
        if line and used + 1 + len(piece) > LINE:
            lines.append(line)
            line, used = "", 1
        used += len(piece) + (1 if line else 0)
        line = f"{line} {piece}" if line else piece
    lines.append(line)
    return "\r\n ".join(lines)


def fold(name: str, value: str) -> str:
    """`Name: value` with ASCII text folded at spaces so no line passes 78 columns.

    A single word longer than a line stays whole (RFC 5322 allows 998): folding inside it
    would change it.
    """
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > LINE and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines)


def field(name: str, value: str) -> bytes:
    """One header field as is: the caller wrote it ready for the wire (folded, ASCII)."""
    return f"{name}: {value}\r\n".encode("ascii")


def subject(text: str) -> bytes:
    value = clean(text)
    if value.isascii():
        return f"{fold('Subject', value)}\r\n".encode("ascii")
    return field("Subject", encoded_words(value))


def date(second: float) -> str:
    """RFC 5322 date-time in UTC, zone written `+0000`."""
    return email.utils.format_datetime(dt.datetime.fromtimestamp(int(second), dt.UTC))


def list_unsubscribe(url: str, mailto: str) -> bytes:
    """Both URIs (RFC 2369, RFC 8058), folded between them only: never inside one, never encoded."""
    return f"List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\n".encode("ascii")


def bulk(feedback_id: str = "") -> bytes:
    """What marks the mail as a list's: auto-replies and out-of-office answers stay away
    (RFC 3834's Auto-Submitted; Exchange's X-Auto-Response-Suppress; Precedence for the rest),
    and, when configured, the Feedback-ID a provider's complaint loop reports by."""
    out = (
        field("Precedence", "bulk")
        + field("Auto-Submitted", "auto-generated")
        + field("X-Auto-Response-Suppress", "OOF, AutoReply")
    )
    if feedback_id:
        out += field("Feedback-ID", clean(feedback_id))
    return out
