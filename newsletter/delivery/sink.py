"""A recording SMTP server (aiosmtpd) on loopback: for tests, benchmarks and trying a send locally."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt: str
    data: bytes

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class RecordingHandler:
    """Keeps every accepted message; answers scripted replies for chosen recipients."""

    received: list[Received] = field(default_factory=list)
    # recipient address -> replies to give on RCPT, one per attempt, before accepting.
    rcpt_replies: dict[str, deque[str]] = field(default_factory=dict)
    helo_names: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, rcpt: str, *replies: str) -> None:
        self.rcpt_replies.setdefault(rcpt.lower(), deque()).extend(replies)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.helo_names.append(hostname)
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queue = self.rcpt_replies.get(address.lower())
        if queue:
            return queue.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(str(envelope.mail_from), rcpt, bytes(content)))
        return "250 Message accepted"


class LoopbackController(Controller):  # type: ignore[misc]
    """aiosmtpd's Controller on port 0 (a free port): its own `_trigger_server` would dial port 0.

    Learn the bound port first (aiosmtpd issues #276, #388); aiosmtpd is pinned for this reason.
    """

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def start_sink(
    handler: RecordingHandler | None = None, *, host: str = "127.0.0.1"
) -> LoopbackController:
    controller = LoopbackController(handler or RecordingHandler(), hostname=host, port=0)
    controller.start()
    return controller
