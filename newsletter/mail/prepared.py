"""A profile's digest as a message encoded once; each recipient's message is a few splices away."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from newsletter import addresses
from newsletter.mail import headers
from newsletter.mail.headers import Envelope, address, sender_address
from newsletter.mail.splice import SplicedPart, split_part
from newsletter.render.digest import PLACEHOLDER_RE, RenderedDigest


class _Clock:
    """RFC 5322 dates, formatted once per second rather than once per message."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, headers.date(second)
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
        own = (
            headers.field("Date", self.clock.now())
            + headers.field("Message-ID", envelope.message_id)
            + headers.list_unsubscribe(envelope.unsubscribe_url, envelope.unsubscribe_mailto)
        )
        return [
            self.head,
            to_header,
            own,
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
    digest: RenderedDigest,
    *,
    from_name: str,
    from_address: str,
    list_id: str,
    reply_to: str = "",
    feedback_id: str = "",
) -> PreparedDigest:
    """A profile's digest, its placeholders left for each recipient's values."""
    return prepare_parts(
        subject=digest.subject, text=digest.text, html=digest.html, from_name=from_name,
        from_address=from_address, list_id=list_id, reply_to=reply_to, feedback_id=feedback_id,
    )  # fmt: skip


def prepare_parts(
    *,
    subject: str,
    text: str,
    html: str,
    from_name: str,
    from_address: str,
    list_id: str,
    reply_to: str = "",
    feedback_id: str = "",
) -> PreparedDigest:
    """Any message we send (a digest, a subscription mail): headers in the order and form
    `mail.headers` writes them, a text and an HTML part in base64."""
    boundary = f"=_nl_{secrets.token_hex(12)}"
    head = headers.field(
        "From", address(from_name, sender_address(from_address, "[sender] address"))
    )
    head += headers.subject(subject)
    if reply_to:
        head += headers.field("Reply-To", f"<{sender_address(reply_to, '[sender] reply_to')}>")
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    tail = b"".join(
        (
            headers.field("List-Id", f"<{list_id}>"),
            headers.field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            headers.bulk(feedback_id),
            headers.field("MIME-Version", "1.0"),
            headers.field("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
            b"\r\n",
            f"--{boundary}\r\n{part.format('plain')}".encode(),
        )
    )
    return PreparedDigest(
        head=head,
        tail=tail,
        text=split_part(text, PLACEHOLDER_RE),
        between=f"--{boundary}\r\n{part.format('html')}".encode(),
        html=split_part(html, PLACEHOLDER_RE),
        end=f"--{boundary}--\r\n".encode(),
    )
