"""A recording SMTP server (aiosmtpd) on loopback for the tests: logs each session, scripts faults."""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, AnyStr

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt: str
    data: bytes
    session: int = 0  # the `SessionLog.number` of the connection that carried it
    options: tuple[str, ...] = ()  # the MAIL FROM parameters, upper-cased (SIZE=..., SMTPUTF8)

    def parsed(self) -> EmailMessage:
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class SessionLog:
    """One client connection as the server saw it: every command and reply line, in order."""

    number: int  # 1 for the first client connection (the controller's own probe is not kept)
    # "C: MAIL FROM:<a@example.org> SIZE=120", "S: 250 OK"; a message body is "C: <N bytes>."
    lines: list[str] = field(default_factory=list)
    accepted: int = 0  # messages stored from this session
    closed: bool = False  # the connection has ended (either side)

    def commands(self) -> list[str]:
        return [line[3:] for line in self.lines if line.startswith("C: ")]

    def mails_after_refusal(self) -> list[str]:
        """MAIL commands read after a refusal with no RSET between: each trips on (503 nested
        MAIL) or joins the transaction the refusal left open."""
        found: list[str] = []
        refused = False
        for line in self.lines:
            if line.startswith("S: ") and line[3:4] in ("4", "5"):
                refused = True
            elif line.startswith("C: RSET"):
                refused = False
            elif line.startswith("C: MAIL") and refused:
                found.append(line[3:])
        return found


@dataclass
class RecordingHandler:
    """Keeps every accepted message; answers scripted replies for chosen recipients.

    The fault knobs below make it behave like the relays a sender meets; `sessions` is the
    server's own log of every connection, to assert what reached the wire.
    """

    received: list[Received] = field(default_factory=list)
    # recipient address -> replies to give on RCPT, one per attempt, before accepting.
    rcpt_replies: dict[str, deque[str]] = field(default_factory=dict)
    helo_names: list[str] = field(default_factory=list)
    # Seconds to wait before answering DATA: a slow server, so a send can be caught mid-way.
    data_delay: float = 0.0
    # Hold every message until this many senders have greeted the server (distinct EHLO names),
    # at most 30 s: the first sender up cannot take a whole campaign before the others start.
    hold_until_greeted: int = 0
    # Replies to give on MAIL FROM, one per transaction, before accepting (e.g. 421 bursts).
    mail_replies: deque[str] = field(default_factory=deque)
    # Recipients whose message is stored but whose final reply never comes: the server hangs up
    # after the final dot (once per listed address), the case where a sender cannot know.
    hang_up_after_data: set[str] = field(default_factory=set)
    # Offer PIPELINING (RFC 2920) in the EHLO reply, as Postfix does.
    pipelining: bool = False
    # Given instead of the 220 greeting to every new connection, which is then closed.
    greeting: str | None = None
    # After this many stored messages on one connection, MAIL gets 421 and the server hangs up.
    session_message_limit: int = 0
    # Replies to the DATA command itself (instead of 354), one per DATA command; "" lets it
    # through. As in Postfix, a refused DATA leaves the transaction open until RSET.
    data_command_replies: deque[str] = field(default_factory=deque)
    # Replies after the final dot, one per message; "" stores it, anything else refuses it.
    data_replies: deque[str] = field(default_factory=deque)
    # A reply for every RCPT that has no scripted one; None accepts.
    rcpt_reply: Callable[[str], str | None] | None = None
    # Replies to RSET, one per RSET, given without resetting anything.
    rset_replies: deque[str] = field(default_factory=deque)
    # Offer STARTTLS and give this reply to it (e.g. "454 4.7.0 TLS not available").
    starttls_reply: str | None = None
    # A sloppy server (smtp-sink keeps no transaction state): a scripted refusal of MAIL or RCPT
    # still records the address, so a pipelined DATA is answered 354.
    keep_refused: bool = False
    sessions: list[SessionLog] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def empty_messages(self) -> list[Received]:
        return [r for r in self.received if not r.data]

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
        extra = ["250-PIPELINING"] if self.pipelining else []
        if self.starttls_reply:
            extra.append("250-STARTTLS")
        return [*responses[:-1], *extra, responses[-1]] if extra else responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_replies:
            if self.keep_refused:
                envelope.mail_from = address
            return self.mail_replies.popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queue = self.rcpt_replies.get(address.lower())
        reply = queue.popleft() if queue else self.rcpt_reply(address) if self.rcpt_reply else None
        if reply is None or self.keep_refused:
            envelope.rcpt_tos.append(address)
        return reply or "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.hold_until_greeted:
            deadline = asyncio.get_running_loop().time() + 30
            while len(set(self.helo_names)) < self.hold_until_greeted:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        content: Any = envelope.original_content or envelope.content or b""
        log = server.log if isinstance(server, _FaultySMTP) else None
        if log is not None:
            log.lines.append(f"C: <{len(content)} bytes>.")
        if self.data_replies:
            refusal = self.data_replies.popleft()
            if refusal:
                return refusal
        number = log.number if log is not None else 0
        options = tuple(envelope.mail_options)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    Received(str(envelope.mail_from), rcpt, bytes(content), number, options)
                )
            if log is not None:
                log.accepted += 1
            hang_up = [r for r in envelope.rcpt_tos if r.lower() in self.hang_up_after_data]
            self.hang_up_after_data.difference_update(r.lower() for r in hang_up)
        if hang_up and isinstance(server.transport, asyncio.Transport):
            server.transport.abort()
            return "421 4.4.2 (not sent: connection already closed)"
        return "250 Message accepted"


class _FaultySMTP(SMTP):
    """aiosmtpd's server with the `RecordingHandler` knobs that need the protocol itself."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.faults = handler if isinstance(handler, RecordingHandler) else RecordingHandler()
        self.log: SessionLog | None = None
        self._smtp_methods = {
            name: self._logged(name, method) for name, method in self._smtp_methods.items()
        }

    def _logged(
        self, name: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        @functools.wraps(method)
        async def logged(arg: str | None) -> None:
            if self.log is not None:
                self.log.lines.append(f"C: {name} {arg}" if arg else f"C: {name}")
            await method(arg)

        return logged

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.log is None:  # not again after STARTTLS: the same connection
            with self.faults.lock:
                self.log = SessionLog(len(self.faults.sessions) + 1)
                self.faults.sessions.append(self.log)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.log is not None:
            self.log.closed = True
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        if self.log is not None:
            text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
            self.log.lines.append(f"S: {text}")
        await super().push(status)

    def _hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        if self.faults.greeting:
            await self.push(self.faults.greeting)
            self._hang_up()
            return
        await super()._handle_client()

    async def smtp_MAIL(self, arg: str | None) -> None:
        limit = self.faults.session_message_limit
        if limit and self.log is not None and self.log.accepted >= limit:
            await self.push(f"421 4.7.0 Too many messages in this session (limit {limit})")
            self._hang_up()
            return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if (
            self.envelope is not None
            and self.envelope.rcpt_tos
            and self.faults.data_command_replies
        ):
            refusal = self.faults.data_command_replies.popleft()
            if refusal:
                await self.push(refusal)
                return
        await super().smtp_DATA(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.faults.starttls_reply:
            await self.push(self.faults.starttls_reply)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if self.faults.rset_replies:
            await self.push(self.faults.rset_replies.popleft())
            return
        await super().smtp_RSET(arg)


class LoopbackController(Controller):
    """aiosmtpd's Controller on port 0 (a free port): its own `_trigger_server` would dial port 0.

    Learn the bound port first (aiosmtpd issues #276, #388); aiosmtpd is pinned for this reason.
    """

    def factory(self) -> SMTP:
        # The sink listens on loopback only; AUTH without TLS there is a deliberate test setup.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return _FaultySMTP(self.handler, **self.SMTP_kwargs)

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
    smtputf8: bool = True,
    idle_timeout: float = 300,
) -> LoopbackController:
    """Start a sink; with `login`, AUTH (over plain TCP: loopback only) is required.

    `smtputf8=False`: a server that does not offer SMTPUTF8 and refuses non-ASCII commands.
    `idle_timeout`: seconds without a command before the server hangs up, saying nothing.
    """
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
    handler = handler or RecordingHandler()
    controller = LoopbackController(
        handler, hostname=host, port=0, enable_SMTPUTF8=smtputf8, timeout=idle_timeout, **kwargs
    )
    controller.start()
    with handler.lock:
        # start() dials the server once to see it answer: that probe is no client's session.
        handler.sessions.clear()
    return controller
