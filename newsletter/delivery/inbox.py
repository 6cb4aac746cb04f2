"""Mail that comes back, sorted (pure): bounces, complaints, mailto unsubscribes, auto-replies.

Every message returning to the sender's or the bounce domain's mailbox is one of: an RFC 3464
delivery report (`delivery.bounces`), an RFC 5965 abuse report (a reader pressed "spam"), an
`unsubscribe <token>` mail from the List-Unsubscribe mailto, an automatic reply (out of office,
read receipt) to ignore, or something a person must read. Nothing here touches the database:
what the reports name is checked against the ledger by the caller.
"""

from __future__ import annotations

import email
import email.header
import hashlib
import re
from dataclasses import dataclass, field, replace
from email.message import Message
from email.parser import BytesHeaderParser
from enum import StrEnum

from newsletter.delivery.bounces import (
    Bounce,
    _campaign_id,
    _check_containers,
    _clean_id,
    _fields,
    _original_message_id,
    _parts,
    _report_type,
    _status_blocks,
    parse_bounces,
)
from newsletter.delivery.verp import RowRef, VerpKey


class Kind(StrEnum):
    DSN = "dsn"  # a delivery report (its failures, if any, are in `bounces`)
    COMPLAINT = "complaint"  # an ARF abuse report about a message of ours
    UNSUBSCRIBE = "unsubscribe"  # `unsubscribe <token>` to the List-Unsubscribe mailto
    AUTO_REPLY = "auto-reply"  # out of office, vacation, read receipt: ignored
    OTHER = "other"  # for a person to read
    UNREADABLE = "unreadable"  # cannot be parsed at all


@dataclass(frozen=True)
class Complaint:
    """A reader marked a message of ours as spam (RFC 5965 Feedback-Type abuse)."""

    feedback_type: str
    message_id: str  # of the returned original
    campaign_id: int | None  # from our Message-ID, when it is one of ours
    recipient: str  # Original-Rcpt-To, when the provider did not redact it
    delivery: RowRef | None = None  # from Original-Mail-From, a return path we signed


@dataclass(frozen=True)
class Returned:
    """One message that came back, as sorted."""

    kind: Kind
    key: str  # its Message-ID, else a hash of its bytes: reading it twice is recognised
    sender: str = ""
    subject: str = ""
    bounces: tuple[Bounce, ...] = field(default=())
    complaint: Complaint | None = None
    token: str = ""  # with UNSUBSCRIBE: the signed unsubscribe token
    why: str = ""  # with AUTO_REPLY, OTHER, UNREADABLE: what made it so


# The mailto's subject is `unsubscribe <token>` (mail.links.recipient_links); a client may
# prefix a reply marker, and some put the subject into the body as well.
_UNSUBSCRIBE = re.compile(
    r"(?:(?:re|aw|答复|回复)\s*[:：]\s*)*unsubscribe\s+([A-Za-z0-9_.=-]{20,400})", re.I
)
# Subjects auto-responders write when they set no header saying so (Exchange, Lotus, QQ, 163).
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:自动回复|自動回覆|自动答复|自動回复|外出|休假|"
    r"automatic reply|auto(?:matic)?[ -]?(?:reply|response)|autoreply|auto:|"
    r"out of (?:the )?office|abwesenheitsnotiz|absence|réponse automatique|risposta automatica|"
    r"respuesta automática|vacation|on leave)",
    re.IGNORECASE,
)
_FEEDBACK = ("message/feedback-report",)


def key_of(data: bytes) -> str:
    """A message's Message-ID, else a hash of its bytes."""
    headers = BytesHeaderParser().parsebytes(data)
    return _clean_id(str(headers.get("message-id", "") or "")) or _hash(data)


def _hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def classify(data: bytes, *, domain: str, verp: VerpKey | None = None) -> Returned:
    """What one message is. `domain`: the instance's, for our Message-IDs; `verp`: reads the
    return paths the digests were sent with."""
    try:
        return _classify(data, domain=domain, verp=verp)
    except Exception as exc:  # one crafted message never stops the others
        first = (str(exc).splitlines() or [""])[0][:200]
        return Returned(Kind.UNREADABLE, _hash(data), why=f"{type(exc).__name__}: {first}")


def _classify(data: bytes, *, domain: str, verp: VerpKey | None) -> Returned:
    bounces = parse_bounces(data, domain=domain, verp=verp)
    _check_containers(data)
    msg = email.message_from_bytes(data)
    headers = _fields(msg)
    key = _clean_id(headers.get("message-id", "")) or _hash(data)
    sender, subject = headers.get("from", ""), _decoded(headers.get("subject", ""))
    base = Returned(Kind.OTHER, key, _decoded(sender), subject)
    if bounces is not None:
        return replace(base, kind=Kind.DSN, bounces=bounces)
    kind = msg.get_content_type()
    report = _report_type(msg) if kind == "multipart/report" else ""
    if report == "feedback-report":
        complaint = _complaint(msg, domain, verp)
        if complaint is not None:
            return replace(base, kind=Kind.COMPLAINT, complaint=complaint)
        return replace(base, why="a feedback report without its report part")
    if report == "disposition-notification":
        return replace(base, kind=Kind.AUTO_REPLY, why="read receipt (RFC 8098)")
    auto = _automatic(headers, subject)
    if auto:
        return replace(base, kind=Kind.AUTO_REPLY, why=auto)
    token = _unsubscribe_token(msg, subject)
    if token:
        return replace(base, kind=Kind.UNSUBSCRIBE, token=token)
    return replace(base, why="not a report, an unsubscribe or an automatic reply")


def _complaint(msg: Message, domain: str, verp: VerpKey | None) -> Complaint | None:
    parts = _parts(msg)
    report = next((p for p in parts if p.get_content_type() in _FEEDBACK), None)
    if report is None:
        return None
    fields: dict[str, str] = {}
    for block in _status_blocks(report):
        for name, value in _fields(block).items():
            fields.setdefault(name, value)
    original = _original_message_id(parts)
    row = verp.find(fields.get("original-mail-from", "")) if verp is not None else None
    campaign = row.campaign_id if row is not None else _campaign_id(original, domain)
    recipient = fields.get("original-rcpt-to", "").strip().strip("<>")
    return Complaint(
        feedback_type=(fields.get("feedback-type", "").split() or ["abuse"])[0].lower(),
        message_id=original, campaign_id=campaign, recipient=recipient, delivery=row,
    )  # fmt: skip


def _automatic(headers: dict[str, str], subject: str) -> str:
    submitted = headers.get("auto-submitted", "").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if name in headers:
            return name.title()
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("auto_reply", "auto-reply"):
        return f"Precedence: {precedence}"
    if _AUTO_SUBJECT.match(subject):
        return f"subject {subject[:60]!r}"
    return ""


def _unsubscribe_token(msg: Message, subject: str) -> str:
    found = _UNSUBSCRIBE.search(subject.strip())
    if found and found.start() == 0:
        return found.group(1)
    body = _first_text(msg)
    for line in body.splitlines()[:5]:
        found = _UNSUBSCRIBE.match(line.strip())
        if found:
            return found.group(1)
    return ""


def _first_text(msg: Message) -> str:
    for part in _parts(msg):
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return raw[:4000].decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))[:300]
    except (LookupError, ValueError, UnicodeDecodeError):
        return value[:300]
