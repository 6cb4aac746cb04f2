"""How mail leaves: the `Transport` protocol and its `smtp`, `file` and `null` implementations."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from newsletter.config import SmtpSettings
from newsletter.delivery.replies import Reply

# Pseudo reply codes for faults that never reached an SMTP reply.
CONNECTION_FAULT = 0  # refused, dropped, timed out: worth retrying
LOCAL_FAULT = 1  # TLS or configuration: our fault, stop the campaign


@dataclass(frozen=True)
class Outgoing:
    mail_from: str
    rcpt: str
    data: bytes
    name: str  # a file-system-safe stem, unique within the campaign
    html_preview: str | None = None


class Connection(Protocol):
    async def send(self, message: Outgoing) -> Reply: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    name: str
    max_connections: int

    async def connect(self) -> Connection: ...


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


class FileTransport:
    """One `.eml` per message (and an `.html` preview) in an outbox folder."""

    name = "file"
    max_connections = 1

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def connect(self) -> Connection:
        self.outbox.mkdir(parents=True, exist_ok=True)
        return self

    async def send(self, message: Outgoing) -> Reply:
        target = self.outbox / f"{message.name}.eml"
        # Write then rename: a crash never leaves half a message that looks whole.
        partial = target.with_suffix(".eml.part")
        partial.write_bytes(message.data)
        partial.replace(target)
        if message.html_preview is not None:
            target.with_suffix(".html").write_text(message.html_preview, encoding="utf-8")
        return Reply(250, f"written {target.name}")

    async def close(self) -> None:
        return None


class SmtpTransport:
    """Connections to one SMTP server; each connection carries many messages."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, local_hostname: str) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self.max_connections = settings.concurrency

    async def connect(self) -> Connection:
        return SmtpConnection(self.settings, self.local_hostname)


class SmtpConnection:
    def __init__(self, settings: SmtpSettings, local_hostname: str) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self.client: aiosmtplib.SMTP | None = None

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            # EHLO names the configured domain, never this machine's host name.
            local_hostname=self.local_hostname,
            timeout=s.timeout,
            use_tls=s.security == "ssl",
            start_tls=True if s.security == "starttls" else False,
            validate_certs=s.validate_certs,
            username=s.username or None,
            password=s.password or None,
        )
        await client.connect()
        return client

    async def send(self, message: Outgoing) -> Reply:
        try:
            if self.client is None or not self.client.is_connected:
                self.client = await self._open()
            _, response = await self.client.sendmail(
                message.mail_from, [message.rcpt], message.data
            )
            return Reply(250, response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return Reply(refused.code, refused.message)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self._drop()
            return Reply(exc.code, f"authentication failed: {exc.message}")
        except (
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
        ) as exc:
            await self._drop()
            return Reply(CONNECTION_FAULT, f"connection fault: {exc}")
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing this connection
                await self._drop()
            return Reply(exc.code, exc.message)
        except (ssl.SSLError, aiosmtplib.SMTPNotSupported) as exc:
            await self._drop()
            return Reply(LOCAL_FAULT, f"TLS or server capability fault: {exc}")
        except (TimeoutError, OSError) as exc:
            await self._drop()
            return Reply(CONNECTION_FAULT, f"connection fault: {exc}")

    async def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
