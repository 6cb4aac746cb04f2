"""One message ready for the wire: envelope sender, recipient and the exact bytes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    mail_from: str
    rcpt: str
    data: bytes
    name: str  # a file-system-safe stem, unique within the campaign
    html_preview: str | None = None
