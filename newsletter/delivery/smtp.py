"""The SMTP transport: the standard `smtplib`, one worker thread per pooled connection.

Measured here (bench/send.py, see bench/RESULTS.md), smtplib spends about half of aiosmtplib's CPU
per message: aiosmtplib re-normalises every line ending of every message in Python regexes. The
engine stays asyncio; each connection's blocking calls run on its own thread, and socket I/O
releases the GIL, so connections overlap. When the server offers PIPELINING (Postfix does), a
message takes two round trips instead of four.

Every reply carries the stage it came at (`Stage`), so a refusal of the session or of the sender
is never taken for the recipient's fault. After any refused MAIL, RCPT or DATA the session is
reset with RSET, or dropped when RSET fails: the next message never joins a half-open transaction.
A 421 (the server closes the session, e.g. at its per-session message limit) or a 503 (the
session lost its way) sends the message once more on a fresh connection; only a fresh
connection's refusal reaches the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor

from newsletter.config import SmtpSettings
from newsletter.delivery.replies import Reply, Stage
from newsletter.delivery.transports import (
    CONNECTION_FAULT,
    LOCAL_FAULT,
    UNSENDABLE,
    Connection,
)
from newsletter.mail.outgoing import Outgoing


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else message


# Addresses that go into a pipelined command as they are; anything else takes smtplib's quoting.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"\0]+@[^\s<>()\[\]\\,;:\"@\0]+")
_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
# Codes after which this session is no place for the message, but a fresh one may be.
_FRESH_SESSION = (421, 503)
# The pipelined commands' stages and the codes that let the transaction go on.
_PIPELINED = ((Stage.MAIL, (250,)), (Stage.RCPT, (250, 251)), (Stage.DATA, (354,)))


def _payload(msg: bytes) -> bytes:
    """What follows DATA: the message dot-stuffed, ending in CRLF, then the final dot."""
    # Our messages are CRLF-normalised base64 bodies and folded headers; when no line begins
    # with "." there is nothing to stuff, and the regex over ~50 KB is the biggest CPU cost.
    if msg.startswith(b".") or b"\n." in msg:
        msg = _DOT_AT_LINE_START.sub(b"..", msg)
    return msg + (b"" if msg.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def _needs_smtputf8(sender: str, rcpt: str) -> Reply:
    address = rcpt if not rcpt.isascii() else sender
    text = f"the SMTP server does not offer SMTPUTF8, which the address <{address}> needs"
    return Reply(UNSENDABLE, text, Stage.MAIL)


class _Client(smtplib.SMTP):
    """smtplib.SMTP that sends one message per call and says what each refusal means.

    With PIPELINING (RFC 2920) MAIL, RCPT and DATA go out together and their three replies come
    back together: two round trips per message instead of four.
    """

    # Where the current transaction stands: a dropped link is reported at this stage, and once
    # the final dot has gone out a lost reply means nobody knows whether it was delivered.
    stage: Stage = Stage.CONNECT
    dot_sent: bool = False
    # This session must carry no further message (the server closes it, a transaction may be
    # open on it, or RSET failed): the connection drops it and opens a fresh one on next use.
    broken: bool = False
    # What the server offered, read once per session (`learn`), not once per message.
    pipelining = size = smtputf8 = eightbit = False

    def learn(self) -> None:
        self.pipelining, self.size = self.has_extn("pipelining"), self.has_extn("size")
        self.smtputf8, self.eightbit = self.has_extn("smtputf8"), self.has_extn("8bitmime")

    def send_one(self, sender: str, rcpt: str, msg: bytes) -> Reply:
        self.stage, self.dot_sent = Stage.MAIL, False
        options = [f"SIZE={len(msg)}"] if self.size else []
        # Check the bytes, not a promise upstream: one non-ASCII address needs SMTPUTF8.
        utf8 = not (sender.isascii() and rcpt.isascii())
        if utf8:
            if not self.smtputf8:  # refused before a byte is written: the session stays clean
                return _needs_smtputf8(sender, rcpt)
            options += ["SMTPUTF8", "BODY=8BITMIME"] if self.eightbit else ["SMTPUTF8"]
        if self.pipelining and _PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(rcpt):
            return self._pipelined(sender, rcpt, msg, options, utf8)
        for address in (rcpt, sender):
            if "\r" in address or "\n" in address or "\0" in address:
                text = f"the address {address!r} contains a line break or NUL"
                return Reply(UNSENDABLE, text, Stage.MAIL)
        return self._stepwise(sender, rcpt, msg, options)

    def _stepwise(self, sender: str, rcpt: str, msg: bytes, options: list[str]) -> Reply:
        code, text = self.mail(sender, options)
        if code != 250:
            return self._refused(Reply(code, _text(text), Stage.MAIL))
        self.stage = Stage.RCPT
        code, text = self.rcpt(rcpt)
        if code not in (250, 251):
            return self._refused(Reply(code, _text(text), Stage.RCPT))
        self.stage = Stage.DATA
        self.putcmd("data")
        code, text = self.getreply()
        if code != 354:
            return self._refused(Reply(code, _text(text), Stage.DATA))
        return self._message(msg)

    def _pipelined(
        self, sender: str, rcpt: str, msg: bytes, options: list[str], utf8: bool
    ) -> Reply:
        params = "".join(f" {option}" for option in options)
        commands = f"MAIL FROM:<{sender}>{params}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        self.send(commands.encode("utf-8" if utf8 else "ascii"))
        last = 0
        refused: Reply | None = None
        try:
            for stage, ok in _PIPELINED:
                self.stage = stage
                last, text = self.getreply()
                if refused is None and last not in ok:
                    refused = Reply(last, _text(text), stage)
                if last == 421:  # closing the session: the rest may never come
                    self.broken = True
                    break
        except smtplib.SMTPServerDisconnected:
            if refused is None:
                raise  # nothing was refused: the link dropped, and that is the fault
            self.broken = True  # it hung up after a refusal
        if refused is None:
            return self._message(msg)
        if last == 354 and self.stage is Stage.DATA:
            # The server opened a message for a transaction we know failed (it kept a recipient
            # from somewhere): a bare dot would deliver an empty message. Hanging up without the
            # final dot makes it discard the transaction.
            self.broken = True
        return self._refused(refused)

    def _message(self, msg: bytes) -> Reply:
        self.stage, self.dot_sent = Stage.DATA, True
        self.send(_payload(msg))
        code, text = self.getreply()
        if code != 250:
            return self._refused(Reply(code, _text(text), Stage.DATA))
        return Reply(code, "accepted", Stage.DATA)

    def _refused(self, reply: Reply) -> Reply:
        """After a refusal, leave no transaction open: RSET, or give the session up."""
        if reply.code in _FRESH_SESSION:
            self.broken = True
        if not self.broken:
            try:
                code, _ = self.rset()
            except (smtplib.SMTPException, OSError):
                code = -1
            self.broken = code != 250
        return reply


class _ClientSSL(_Client, smtplib.SMTP_SSL):
    pass


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _greet(client: _Client) -> None:
    """EHLO (HELO when refused, unless the server is closing); a refusal of both raises."""
    code, text = client.ehlo()
    if code != 250:
        if code == 421:
            raise smtplib.SMTPHeloError(code, text)
        code, text = client.helo()
        if not 200 <= code < 300:
            raise smtplib.SMTPHeloError(code, text)


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
            _greet(client)
            if s.security == "starttls":
                code, text = client.starttls(context=_tls_context(s))
                if code != 220:  # smtplib returns a refusal: never go on (and log in) in clear
                    raise smtplib.SMTPResponseException(code, text)
                _greet(client)
            if s.username:
                client.login(s.username, s.password)
            client.learn()
        except BaseException:
            client.close()
            raise
        return client

    def _send(self, message: Outgoing) -> Reply:
        reply, again = self._attempt(message)
        if again:  # at most once per message: a fresh connection's answer is the answer
            reply, _ = self._attempt(message)
        return reply

    def _attempt(self, message: Outgoing) -> tuple[Reply, bool]:
        """One try; and whether a fresh connection may take the message once more."""
        reused = self.client is not None
        client: _Client | None = None
        try:
            if self.client is None:
                self.client = self._open()
            client = self.client
            reply = client.send_one(message.mail_from, message.rcpt, message.data)
            if client.broken:
                self._drop()
            return reply, reply.code in _FRESH_SESSION
        except smtplib.SMTPAuthenticationError as exc:
            self._drop()
            text = f"authentication failed: {_text(exc.smtp_error)}"
            return Reply(exc.smtp_code, text, Stage.CONNECT), False
        except smtplib.SMTPNotSupportedError as exc:
            self._drop()
            return Reply(LOCAL_FAULT, f"server capability missing: {exc}", Stage.CONNECT), False
        except smtplib.SMTPResponseException as exc:
            # Only opening raises these (greeting, EHLO, STARTTLS): the session was refused.
            self._drop()
            code = exc.smtp_code
            return Reply(code, _text(exc.smtp_error), Stage.CONNECT), code in _FRESH_SESSION
        except ssl.SSLError as exc:
            self._drop()
            return Reply(LOCAL_FAULT, f"TLS fault: {exc}", _stage(client)), False
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            # A pooled session the server closed while idle (no 421 said so) fails on its next
            # command; before the final dot nothing can have been delivered, so a fresh
            # connection takes the message. A timeout is a slow server: waiting twice helps nobody.
            stale = (
                reused
                and client is not None
                and not client.dot_sent
                and not isinstance(exc, TimeoutError)
            )
            return Reply(CONNECTION_FAULT, f"connection fault: {exc}", _stage(client)), stale
        except smtplib.SMTPException as exc:  # e.g. no AUTH mechanism in common
            self._drop()
            return Reply(LOCAL_FAULT, f"SMTP fault: {exc}", _stage(client)), False

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


def _stage(client: _Client | None) -> Stage:
    return Stage.CONNECT if client is None else client.stage


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


def probe(settings: SmtpSettings, *, local_hostname: str) -> str:
    """Open one session as a send would (greeting, TLS, login) and close it: "" when every step
    went as configured, else what failed, for `newsletter check`."""
    where = f"{settings.host}:{settings.port}"
    with ThreadPoolExecutor(max_workers=1) as executor:
        connection = SmtpConnection(settings, local_hostname, executor)
        try:
            client = connection._open()
        except smtplib.SMTPAuthenticationError as exc:
            return f"{where} refused the login of smtp.username: {_text(exc.smtp_error)}"
        except smtplib.SMTPResponseException as exc:
            return f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}"
        except ssl.SSLError as exc:
            return f"TLS with {where} failed ({exc.reason or exc}); check smtp.security and the certificate"
        except (OSError, smtplib.SMTPException) as exc:
            return f"cannot reach the relay {where}: {exc}; check smtp.host and smtp.port"
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    return ""
