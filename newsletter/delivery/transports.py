"""How mail leaves: the `Transport` protocol, its `smtp`, `file` and `null` kinds, and `deliver`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from newsletter.delivery.replies import Reply
from newsletter.mail.outgoing import Outgoing

# Pseudo reply codes for faults that never reached an SMTP reply.
CONNECTION_FAULT = 0  # refused, dropped, timed out: worth retrying
LOCAL_FAULT = 1  # TLS or configuration: our fault, stop the campaign
# This one message cannot go over this server (an address that needs SMTPUTF8, which the server
# does not offer): the row fails with the reason; the address is not judged bad.
UNSENDABLE = 3


class Connection(Protocol):
    async def send(self, message: Outgoing) -> Reply: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    name: str
    max_connections: int

    async def connect(self) -> Connection: ...


async def deliver(transport: Transport, messages: Sequence[Outgoing]) -> list[Reply]:
    """Send each message on one connection; a reply per message, in order."""
    connection = await transport.connect()
    try:
        return [await connection.send(message) for message in messages]
    finally:
        # Close even when a send raised, or the SMTP connection would linger half-open.
        await connection.close()


class NullTransport:
    """Accepts everything and keeps nothing (dry runs, benchmarks)."""

    name = "null"
    max_connections = 1

    async def connect(self) -> Connection:
        return self

    async def send(self, message: Outgoing) -> Reply:
        return Reply(250, "discarded")

    async def close(self) -> None:
        return None


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def outbox_label(address: str) -> str:
    """The recipient's address as a file-name part: `li.wei_at_mission.example.org`.

    Only ASCII letters, digits and `._+-` survive (anything else, a non-ASCII local part say,
    becomes `_`), cut to 80 characters: one diplomat's copy is found with `ls *li.wei*`, while
    the name's campaign-and-subscriber prefix keeps it unique.
    """
    local, _, domain = address.rpartition("@")
    safe = _UNSAFE.sub("_", f"{local}_at_{domain}" if local else domain).strip("._") or "unnamed"
    return safe[:80]


class FileTransport:
    """One `.eml` per message (and an `.html` preview) in an outbox folder, named
    `<campaign>-<mission>-<subscriber>-<address>.eml`."""

    name = "file"
    max_connections = 1

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def connect(self) -> Connection:
        self.outbox.mkdir(parents=True, exist_ok=True)
        return self

    async def send(self, message: Outgoing) -> Reply:
        target = self.outbox / f"{message.name}-{outbox_label(message.rcpt)}.eml"
        # Write then rename: a crash never leaves half a message that looks whole.
        partial = target.with_suffix(".eml.part")
        partial.write_bytes(message.data)
        partial.replace(target)
        if message.html_preview is not None:
            target.with_suffix(".html").write_text(message.html_preview, encoding="utf-8")
        return Reply(250, f"written {target.name}")

    async def close(self) -> None:
        return None
