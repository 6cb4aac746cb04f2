"""What an SMTP reply or fault means for a delivery row (pure, as Mailman classifies replies)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # temporary: try this recipient again later
    FAIL = "fail"  # permanent for this recipient
    BOUNCE = "bounce"  # permanent, and the address does not exist: mark the subscriber bounced
    PAUSE = "pause"  # the fault is ours (auth, TLS, config): stop the campaign, blame nobody
    # The server or the session, not the recipient (421, 503, a deferred MAIL FROM): the row
    # waits again untouched, no attempt counted.
    DEFER = "defer"


class Stage(StrEnum):
    """Where in the SMTP dialogue a reply came: a refusal before RCPT says nothing of the recipient."""

    CONNECT = "connect"  # greeting, EHLO, STARTTLS, AUTH
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # DATA itself, or the reply after the final dot
    NONE = ""  # no SMTP dialogue (file and null transports, our pseudo codes)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str = ""
    stage: Stage = Stage.NONE

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_USER_UNKNOWN = re.compile(r"(?i)user unknown|no such user|mailbox unavailable")


def classify(reply: Reply) -> Verdict:
    """Map a final SMTP reply (or our pseudo-codes for faults) to what the engine does."""
    code = reply.code
    if 200 <= code < 300:
        return Verdict.SENT
    enhanced = _ENHANCED.search(reply.text)
    if code == 1 or code in {530, 534, 535, 538}:  # local fault; authentication refused
        return Verdict.PAUSE
    if code in (421, 503):
        # 421: the server closes this session (busy, or its per-session message limit); 503: the
        # session lost its way (bad sequence). Neither says anything about the recipient.
        return Verdict.DEFER
    if reply.stage in (Stage.CONNECT, Stage.MAIL) and code >= 400:
        # Refused before any recipient was named: the sender, the session or the server.
        return Verdict.DEFER if code < 500 else Verdict.PAUSE
    if 400 <= code < 500 or code == 0:  # 0: connection dropped or timed out
        return Verdict.RETRY
    if enhanced and enhanced.group(1) == "5" and enhanced.group(2) == "1":
        # 5.1.x: bad destination mailbox (user unknown, bad syntax, no such domain)
        return Verdict.BOUNCE
    if code == 550 and not enhanced and _USER_UNKNOWN.search(reply.text):
        return Verdict.BOUNCE
    return Verdict.FAIL
