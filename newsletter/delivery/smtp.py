"""The SMTP transport: the standard `smtplib`, one worker thread per pooled connection.

Measured here (bench/send.py and DESIGN section 2), smtplib spends about half of aiosmtplib's CPU
per message: aiosmtplib re-normalises every line ending of every message in Python regexes. The
engine stays asyncio; each connection's blocking calls run on its own thread, and socket I/O
releases the GIL, so connections overlap. When the server offers PIPELINING (Postfix does), a
message takes two round trips instead of four.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from newsletter.config import SmtpSettings
from newsletter.delivery.replies import Reply
from newsletter.delivery.transports import CONNECTION_FAULT, LOCAL_FAULT, Connection, Outgoing

if TYPE_CHECKING:
    from typing_extensions import Buffer


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


# Addresses that go into a pipelined command as they are; anything else takes smtplib's path.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"]+@[^\s<>()\[\]\\,;:\"@]+")
_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


def _payload(msg: bytes) -> bytes:
    """What follows DATA: the message dot-stuffed, ending in CRLF, then the final dot."""
    # Our messages are CRLF-normalised base64 bodies and folded headers; when no line begins
    # with "." there is nothing to stuff, and the regex over ~50 KB is the biggest CPU cost.
    if msg.startswith(b".") or b"\n." in msg:
        msg = _DOT_AT_LINE_START.sub(b"..", msg)
    return msg + (b"" if msg.endswith(b"\r\n") else b"\r\n") + b".\r\n"


class _Client(smtplib.SMTP):
    """smtplib.SMTP that sends one message in two round trips when the server pipelines."""

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        if not isinstance(msg, bytes):
            return super().data(msg)
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        self.send(_payload(msg))
        return self.getreply()

    def _abandon(self, code: int) -> None:
        """After a refusal, as sendmail does: 421 closes the session, anything else sends RSET."""
        if code == 421:
            self.close()
            return
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            self.rset()

    def _replies(self, count: int) -> list[tuple[int, bytes]]:
        """Up to `count` replies; fewer when the server hangs up after refusing one."""
        replies: list[tuple[int, bytes]] = []
        try:
            while len(replies) < count:
                replies.append(self.getreply())
                if replies[-1][0] == 421:  # closing the session: the rest may never come
                    break
        except smtplib.SMTPServerDisconnected:
            if all(code in (250, 251, 354) for code, _ in replies):
                raise  # nothing was refused: the connection dropped, and that is the fault
        return replies

    def send_one(self, sender: str, rcpt: str, msg: bytes) -> None:
        """`sendmail(sender, [rcpt], msg)`: the same replies raise the same exceptions.

        With PIPELINING (RFC 2920) MAIL, RCPT and DATA go out together and their three replies
        come back together: two round trips per message instead of four.
        """
        self.ehlo_or_helo_if_needed()
        plain = _PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(rcpt)
        if not (plain and self.has_extn("pipelining")):
            self.sendmail(sender, [rcpt], msg)
            return
        size = f" SIZE={len(msg)}" if self.has_extn("size") else ""
        self.send(f"MAIL FROM:<{sender}>{size}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
        replies = self._replies(3)
        if replies[0][0] != 250 or replies[1][0] not in (250, 251):
            if len(replies) == 3 and replies[2][0] == 354:
                # The server took DATA although the transaction failed: end the empty message.
                with contextlib.suppress(smtplib.SMTPServerDisconnected):
                    self.send(b".\r\n")
                    self.getreply()
            mail = replies[0]
            if mail[0] != 250:
                self._abandon(mail[0])
                raise smtplib.SMTPSenderRefused(*mail, sender)
            to = replies[1]
            self._abandon(to[0])
            raise smtplib.SMTPRecipientsRefused({rcpt: to})
        if replies[2][0] != 354:
            raise smtplib.SMTPDataError(*replies[2])
        self.send(_payload(msg))
        code, reply = self.getreply()
        if code != 250:
            self._abandon(code)
            raise smtplib.SMTPDataError(code, reply)


class _ClientSSL(_Client, smtplib.SMTP_SSL):
    pass


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpConnection:
    """One SMTP session, opened on first use and reopened after a fault."""

    def __init__(
        self, settings: SmtpSettings, local_hostname: str, executor: ThreadPoolExecutor
    ) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self.executor = executor
        self.client: _Client | None = None

    def _open(self) -> _Client:
        s = self.settings
        client: _Client
        if s.security == "ssl":
            client = _ClientSSL(s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout,
                                context=_tls_context(s))  # fmt: skip
        else:
            # EHLO names the configured domain, never this machine's host name.
            client = _Client(s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout)
        try:
            client.ehlo()
            if s.security == "starttls":
                client.starttls(context=_tls_context(s))
                client.ehlo()
            if s.username:
                client.login(s.username, s.password)
        except BaseException:
            client.close()
            raise
        return client

    def _send(self, message: Outgoing) -> Reply:
        try:
            if self.client is None:
                self.client = self._open()
            self.client.send_one(message.mail_from, message.rcpt, message.data)
            return Reply(250, "accepted")
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._reset()
            return Reply(code, _text(text))
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            return Reply(exc.smtp_code, f"authentication failed: {_text(exc.smtp_error)}")
        except smtplib.SMTPNotSupportedError as exc:
            self._drop()
            return Reply(LOCAL_FAULT, f"server capability missing: {exc}")
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server is closing this session
                self._drop()
            else:
                self._reset()
            return Reply(exc.smtp_code, _text(exc.smtp_error))
        except ssl.SSLError as exc:
            self._drop()
            return Reply(LOCAL_FAULT, f"TLS fault: {exc}")
        except (
            TimeoutError,
            smtplib.SMTPServerDisconnected,
            smtplib.SMTPConnectError,
            OSError,
        ) as exc:
            self._drop()
            return Reply(CONNECTION_FAULT, f"connection fault: {exc}")

    def _reset(self) -> None:
        # After a refused transaction smtplib has sent RSET already; a failed RSET means a dead link.
        if self.client is not None:
            try:
                self.client.noop()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def _quit(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    async def send(self, message: Outgoing) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._send, message)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self._quit)


class SmtpTransport:
    """Up to `concurrency` connections to one SMTP server; each carries many messages."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, local_hostname: str) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self.max_connections = settings.concurrency
        self.executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="smtp"
        )

    async def connect(self) -> Connection:
        return SmtpConnection(self.settings, self.local_hostname, self.executor)
