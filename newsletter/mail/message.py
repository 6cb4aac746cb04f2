"""Build one digest message: MIME parts, safe headers, List-Unsubscribe (RFC 8058), DKIM."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import re
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser, HeaderParser
from email.policy import Policy

import dkim

from newsletter import addresses
from newsletter.errors import DeliveryError

# SMTP policy: CRLF line ends, RFC 2047 encoded words, 78-column folding.
SMTP_POLICY = policy.SMTP.clone(max_line_length=78)
# For a message to an address whose local part is not ASCII, and only for it: raw UTF-8 headers
# (RFC 6532), which the transport may send only to a server offering SMTPUTF8.
SMTPUTF8_POLICY = SMTP_POLICY.clone(utf8=True)
DKIM_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Unsubscribe",
    b"List-Unsubscribe-Post", b"List-Id", b"MIME-Version", b"Content-Type",
)  # fmt: skip
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
# RFC 5322 specials: inside a display name they need quoting, and quoting is what Python's
# header folder has lost before (a long quoted name refolded bare becomes extra addresses).
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
MAX_DISPLAY_NAME = 64


class HeaderInjectionError(DeliveryError):
    def __init__(self, header: str) -> None:
        super().__init__(f"header {header} would not survive a round trip; refusing to send it")


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


def _address_header(name: str, wire: str) -> Address:
    if wire.isascii():
        return Address(display_name(name), addr_spec=wire)
    # The email package refuses to parse a non-ASCII local part, but writes one it is handed.
    local, _, domain = wire.rpartition("@")
    return Address(display_name(name), username=local, domain=domain)


def _policy(wire_to: str) -> Policy:
    return SMTP_POLICY if wire_to.isascii() else SMTPUTF8_POLICY


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


def message_id(secret: bytes, campaign_id: int, subscriber_id: int, domain: str) -> str:
    """Stable per (campaign, subscriber), so a retry carries the same id; names no database id."""
    tag = hmac.new(secret, f"mid:{campaign_id}:{subscriber_id}".encode(), hashlib.sha256)
    return f"<{campaign_id}.{tag.hexdigest()[:20]}@{domain}>"


def build_message(
    envelope: Envelope, *, subject: str, text: str, html: str, date: str | None = None
) -> EmailMessage:
    to = addresses.wire(envelope.to_address)
    msg = EmailMessage(policy=_policy(to))
    msg["From"] = Address(
        display_name(envelope.from_name),
        addr_spec=sender_address(envelope.from_address, "[sender] address"),
    )
    msg["To"] = _address_header(envelope.to_name, to)
    if envelope.reply_to:
        msg["Reply-To"] = sender_address(envelope.reply_to, "[sender] reply_to")
    msg["Subject"] = clean(subject)
    msg["Date"] = date or email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = envelope.message_id
    msg["List-Id"] = f"<{envelope.list_id}>"
    msg["List-Unsubscribe"] = f"<{envelope.unsubscribe_url}>, <{envelope.unsubscribe_mailto}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="base64")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    return msg


def serialise(msg: EmailMessage, envelope: Envelope) -> bytes:
    """Bytes for the wire, re-parsed to prove the headers say what we meant."""
    data = msg.as_bytes(policy=_policy(addresses.wire(envelope.to_address)))
    verify_headers(data, envelope)
    return data


def verify_headers(data: bytes, envelope: Envelope) -> None:
    # Python's header folding has had bugs that could turn a display name into a second
    # address; parse what we wrote and insist on exactly one recipient, the right one.
    head = data.split(b"\r\n\r\n", 1)[0]
    if head.isascii():
        parsed = BytesHeaderParser(policy=policy.default).parsebytes(data)
    else:  # UTF-8 headers (RFC 6532): the bytes parser would see undecodable bytes
        parsed = HeaderParser(policy=policy.default).parsestr(head.decode() + "\r\n\r\n")
    to = parsed["To"]
    found: tuple[Address, ...] = getattr(to, "addresses", ())
    expected = addresses.wire(envelope.to_address).lower()
    if len(found) != 1 or found[0].addr_spec.lower() != expected:
        raise HeaderInjectionError("To")
    sender: tuple[Address, ...] = getattr(parsed["From"], "addresses", ())
    expected = sender_address(envelope.from_address, "[sender] address").lower()
    if len(sender) != 1 or sender[0].addr_spec.lower() != expected:
        raise HeaderInjectionError("From")
    if parsed["Message-ID"] != envelope.message_id:
        raise HeaderInjectionError("Message-ID")


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes


def dkim_sign(data: bytes, key: DkimKey) -> bytes:
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if b":" in line
    }
    headers = [h for h in DKIM_HEADERS if h.lower() in present]
    try:
        signature = dkim.sign(
            data,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key,
            include_headers=headers,
        )
    except dkim.DKIMException as exc:
        raise DeliveryError(f"DKIM signing failed (check [dkim] key_file): {exc}") from None
    return bytes(signature) + data
