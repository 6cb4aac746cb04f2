"""The mailbox mail comes back to, over IMAP: read what is new, then mark what was read.

A message is taken once: after its changes are committed it gets the keyword `NewsletterRead`,
and the next fetch asks only for messages without it. Mail acted on is also marked \\Seen (or
moved to `[inbox] done_folder`); mail left for a person stays unread where it was.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from newsletter.config import InboxSettings
from newsletter.errors import ConfigError, DeliveryError
from newsletter.mail.sending_setup import is_loopback

KEYWORD = "NewsletterRead"


class InboxError(DeliveryError):
    """The IMAP server cannot be reached, refused the login or the folder."""


@dataclass(frozen=True)
class Fetched:
    uid: str
    data: bytes


def check_settings(inbox: InboxSettings) -> None:
    """`ConfigError` naming the setting, before any connection."""
    if not inbox.host:
        raise ConfigError('no [inbox] host: set host = "imap.example.org" (and username, password)')
    if not inbox.username:
        raise ConfigError("no [inbox] username: set the login of the mailbox to read")
    if inbox.security == "none" and not is_loopback(inbox.host):
        raise ConfigError(
            f'[inbox] security = "none" would send the password to {inbox.host} in clear; '
            'set security = "ssl" (port 993) or "starttls" (port 143)'
        )


def _context(inbox: InboxSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not inbox.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Mailbox:
    """One logged-in connection with the folder selected."""

    def __init__(self, client: imaplib.IMAP4, inbox: InboxSettings) -> None:
        self.client = client
        self.inbox = inbox
        # Asked again after the login: servers announce MOVE and UIDPLUS only then.
        kind, data = client.capability()
        said = b" ".join(d for d in data if isinstance(d, bytes)) if kind == "OK" else b""
        self.capabilities = frozenset(said.upper().split())
        self.done_ready = False  # [inbox] done_folder made (or found) on this connection

    def _ok(self, what: str, answer: tuple[str, list[object]]) -> list[object]:
        kind, data = answer
        if kind != "OK":
            said = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise InboxError(f"IMAP {what} refused by {self.inbox.host}: {said or kind}")
        return data

    def unread(self) -> list[Fetched]:
        """Every message of the folder not yet taken, in the order of their UIDs."""
        found = self._ok("SEARCH", self.client.uid("SEARCH", "UNKEYWORD", KEYWORD))
        uids = b" ".join(d for d in found if isinstance(d, bytes)).split()
        messages: list[Fetched] = []
        for uid in uids:
            data = self._ok("FETCH", self.client.uid("FETCH", uid.decode(), "(BODY.PEEK[])"))
            body = next((d[1] for d in data if isinstance(d, tuple) and len(d) == 2), None)
            if isinstance(body, bytes):
                messages.append(Fetched(uid.decode(), body))
        return messages

    def taken(self, uid: str, *, acted: bool) -> None:
        """Mark a message read by us; `acted`: also \\Seen, or moved to the done folder."""
        flags = f"({KEYWORD} \\Seen)" if acted else f"({KEYWORD})"
        self._ok("STORE", self.client.uid("STORE", uid, "+FLAGS", flags))
        done = self.inbox.done_folder
        if not acted or not done:
            return
        if not self.done_ready:
            self.client.create(_quoted(done))  # NO when it exists already: fine
            self.done_ready = True
        if b"MOVE" in self.capabilities:
            self._ok("MOVE", self.client.uid("MOVE", uid, _quoted(done)))
            return
        self._ok("COPY", self.client.uid("COPY", uid, _quoted(done)))
        self._ok("STORE", self.client.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
        if b"UIDPLUS" in self.capabilities:  # expunges this message only, not a person's
            self._ok("EXPUNGE", self.client.uid("EXPUNGE", uid))


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def open_mailbox(inbox: InboxSettings) -> Iterator[Mailbox]:
    """Connected, logged in, `[inbox] folder` selected; `InboxError` saying what failed."""
    check_settings(inbox)
    where = f"{inbox.host}:{inbox.port}"
    try:
        if inbox.security == "ssl":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                inbox.host, inbox.port, ssl_context=_context(inbox), timeout=inbox.timeout
            )
        else:
            client = imaplib.IMAP4(inbox.host, inbox.port, timeout=inbox.timeout)
            if inbox.security == "starttls":
                client.starttls(ssl_context=_context(inbox))
    except (OSError, imaplib.IMAP4.error) as exc:
        raise InboxError(f"cannot reach the IMAP server {where}: {exc}") from None
    try:
        try:
            client.login(inbox.username, inbox.password)
        except imaplib.IMAP4.error as exc:
            raise InboxError(
                f"the IMAP server {where} refused the login {inbox.username!r}: {_said(exc)}; "
                "check [inbox] username and password"
            ) from None
        try:
            kind, data = client.select(_quoted(inbox.folder))
        except imaplib.IMAP4.error as exc:
            raise InboxError(f"cannot open [inbox] folder {inbox.folder!r}: {_said(exc)}") from None
        if kind != "OK":
            raise InboxError(f"no folder {inbox.folder!r} on {where}; check [inbox] folder")
        yield Mailbox(client, inbox)
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise InboxError(f"the IMAP server {where} broke off: {exc}") from None
    finally:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _said(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
