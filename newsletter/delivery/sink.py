"""A recording SMTP server (aiosmtpd) on loopback: for tests, benchmarks and trying a send locally."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


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
    # Seconds to wait before answering DATA: a slow server, so a send can be caught mid-way.
    data_delay: float = 0.0
    # Replies to give on MAIL FROM, one per transaction, before accepting (e.g. 421 bursts).
    mail_replies: deque[str] = field(default_factory=deque)
    # Recipients whose message is stored but whose final reply never comes: the server hangs up
    # after the final dot (once per listed address), the case where a sender cannot know.
    hang_up_after_data: set[str] = field(default_factory=set)
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

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            return self.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queue = self.rcpt_replies.get(address.lower())
        if queue:
            return queue.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        content: Any = envelope.original_content or envelope.content
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(str(envelope.mail_from), rcpt, bytes(content)))
            hang_up = [r for r in envelope.rcpt_tos if r.lower() in self.hang_up_after_data]
            self.hang_up_after_data.difference_update(r.lower() for r in hang_up)
        if hang_up and isinstance(server.transport, asyncio.Transport):
            server.transport.abort()
            return "421 4.4.2 (not sent: connection already closed)"
        return "250 Message accepted"


class LoopbackController(Controller):
    """aiosmtpd's Controller on port 0 (a free port): its own `_trigger_server` would dial port 0.

    Learn the bound port first (aiosmtpd issues #276, #388); aiosmtpd is pinned for this reason.
    """

    def factory(self) -> SMTP:
        # The sink listens on loopback only; AUTH without TLS there is a deliberate test setup.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            # aiosmtpd leaves Controller.factory unannotated.
            smtp: SMTP = super().factory()  # type: ignore[no-untyped-call]
            return smtp

    def _trigger_server(self) -> None:
        # `server` is declared as an AbstractServer; loop.create_server made an asyncio.Server.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated


def start_sink(
    handler: RecordingHandler | None = None,
    *,
    host: str = "127.0.0.1",
    login: tuple[str, str] | None = None,
) -> LoopbackController:
    """Start a sink; with `login`, AUTH (over plain TCP: loopback only) is required."""
    kwargs: dict[str, Any] = {}
    if login is not None:

        def check(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            if not isinstance(data, LoginPassword):
                return AuthResult(success=False, handled=False)
            given = (bytes(data.login).decode(), bytes(data.password).decode())
            return AuthResult(success=given == login, handled=False, auth_data=data)

        kwargs = {"auth_required": True, "auth_require_tls": False, "authenticator": check}
    controller = LoopbackController(handler or RecordingHandler(), hostname=host, port=0, **kwargs)
    controller.start()
    return controller
