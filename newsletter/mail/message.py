"""One message sent alone (subscription mail, a test send), its checks, and DKIM.

Headers are written by `mail.headers`, bodies encoded by `mail.prepared`, for these as for the
digests: one writer for every byte we emit.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.parser import BytesHeaderParser, HeaderParser

import dkim

from newsletter import addresses
from newsletter.errors import DeliveryError
from newsletter.mail.headers import Envelope, clean, display_name, sender_address
from newsletter.mail.prepared import prepare_parts

__all__ = [
    "DkimKey", "Envelope", "HeaderInjectionError", "clean", "display_name", "dkim_sign",
    "message_id", "sender_address", "single_message", "verify_headers",
]  # fmt: skip

# Signed once for each occurrence, and once more (oversigned) where named in _OVERSIGNED: a
# relay or a forwarder that adds a second From, Subject or List-Unsubscribe breaks the
# signature instead of riding on it (RFC 6376 section 8.15).
DKIM_HEADERS = (
    b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"List-Id",
    b"List-Unsubscribe", b"List-Unsubscribe-Post", b"Feedback-ID", b"MIME-Version",
    b"Content-Type",
)  # fmt: skip
_OVERSIGNED = (
    b"From", b"To", b"Subject", b"Reply-To", b"List-Id", b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)  # fmt: skip
# Relaxed for both: a relay that refolds a header or trims trailing space keeps the signature.
_CANONICALIZE = (b"relaxed", b"relaxed")


class HeaderInjectionError(DeliveryError):
    def __init__(self, header: str) -> None:
        super().__init__(f"header {header} would not survive a round trip; refusing to send it")


def message_id(secret: bytes, campaign_id: int, subscriber_id: int, domain: str) -> str:
    """Stable per (campaign, subscriber), so a retry carries the same id; names no database id."""
    tag = hmac.new(secret, f"mid:{campaign_id}:{subscriber_id}".encode(), hashlib.sha256)
    return f"<{campaign_id}.{tag.hexdigest()[:20]}@{domain}>"


def single_message(
    envelope: Envelope, *, subject: str, text: str, html: str, feedback_id: str = ""
) -> bytes:
    """The bytes of one message with no per-recipient splicing, re-parsed to prove the headers
    say what we meant."""
    # CRLF in the text part as on the wire: a part that decodes to bare LF is not MIME text.
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    prepared = prepare_parts(
        subject=subject, text=text, html=html, from_name=envelope.from_name,
        from_address=envelope.from_address, list_id=envelope.list_id,
        reply_to=envelope.reply_to, feedback_id=feedback_id,
    )  # fmt: skip
    data = prepared.message(envelope, {}, {})
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
    """The DKIM-Signature header (relaxed/relaxed, rsa-sha256), then `data`."""
    present = {
        line.split(b":", 1)[0].strip().lower()
        for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if b":" in line
    }
    headers = [h for h in DKIM_HEADERS if h.lower() in present] + list(_OVERSIGNED)
    try:
        signature = dkim.sign(
            data,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key,
            canonicalize=_CANONICALIZE,
            include_headers=headers,
        )
    except dkim.DKIMException as exc:
        raise DeliveryError(f"DKIM signing failed (check [dkim] key_file): {exc}") from None
    return bytes(signature) + data
