"""VERP: an envelope sender per message that names its ledger row, signed so none can be forged.

`bounce+<campaign>-<subscriber>-<mac>@<bounce domain>`: the bounce comes back to this address
whatever the remote server writes into its report, so the row is read from the address, not
guessed from the report's text. The MAC (HMAC-SHA256 with the instance secret, 80 bits, base32
in lower case: some systems fold a local part's case) makes any other token void.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "bounce+"
_TOKEN = re.compile(r"bounce\+(\d{1,12})-(\d{1,12})-([a-z2-7]{16})", re.IGNORECASE)
# Where a delivered report keeps the address it was sent to (the envelope's, not the header's).
ADDRESS_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")


@dataclass(frozen=True)
class RowRef:
    """One ledger row: a campaign's message to one subscriber."""

    campaign_id: int
    subscriber_id: int


def _mac(secret: bytes, row: RowRef) -> str:
    payload = f"{row.campaign_id}.{row.subscriber_id}".encode()
    digest = hmac.new(secret, b"newsletter-verp\x00" + payload, hashlib.sha256).digest()[:10]
    return base64.b32encode(digest).decode().lower()


def return_path(secret: bytes, row: RowRef, domain: str) -> str:
    """The envelope sender of the row's message."""
    return f"{PREFIX}{row.campaign_id}-{row.subscriber_id}-{_mac(secret, row)}@{domain}"


@dataclass(frozen=True)
class VerpKey:
    """What reading a return path needs: the secret that signed it and the bounce domain."""

    secret: bytes
    domain: str

    def read(self, address: str) -> RowRef | None:
        """The row a return path names; None for any other address, or a forged or altered one."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower().rstrip(".") != self.domain.lower() or not local:
            return None
        match = _TOKEN.fullmatch(local)
        if match is None:
            return None
        row = RowRef(int(match.group(1)), int(match.group(2)))
        if not hmac.compare_digest(match.group(3).lower(), _mac(self.secret, row)):
            return None
        return row

    def find(self, text: str) -> RowRef | None:
        """The first valid return path anywhere in `text` (a header's value, say)."""
        for candidate in re.findall(r"bounce\+[^\s<>@,;\"']+@[A-Za-z0-9.-]+", text, re.I):
            row = self.read(candidate)
            if row is not None:
                return row
        return None
