"""Delivery status notifications (RFC 3464) in, bounces out; a reader for .eml, mbox, maildir."""

from __future__ import annotations

import datetime as dt
import email
import email.utils
import hashlib
import mailbox
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from enum import StrEnum
from pathlib import Path
from typing import Literal

from newsletter.delivery.verp import ADDRESS_HEADERS, RowRef, VerpKey
from newsletter.errors import NewsletterError


class BounceKind(StrEnum):
    HARD = "hard"  # the mailbox does not work: the subscriber is marked bounced at once
    SOFT = "soft"  # it may work again: counted, and too many within a window disable


@dataclass(frozen=True)
class Bounce:
    """One failed or delayed recipient of one report."""

    recipient: str  # Original-Recipient (the address we sent to) when given, else Final-Recipient
    kind: BounceKind
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    diagnostic: str  # the remote server's words, kept for staff
    campaign_id: int | None  # from our Message-ID in the returned original, when there is one
    final_recipient: str = ""  # differs from `recipient` when the address was forwarded
    message_id: str = ""  # Message-ID of the returned original (ours or not)
    report_id: str = ""  # names the report itself, so reading it twice is recognised
    date: dt.datetime | None = None  # when the report was written (aware), if it says
    delivery: RowRef | None = None  # the ledger row a signed return path (VERP) names


class UnreadableReport(NewsletterError, ValueError):
    """One message cannot be read as a report (too deeply nested, too many parts)."""


class BounceSourceError(NewsletterError, OSError):
    """A path given to read bounces from cannot be read."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {path}: {reason}")


_ENHANCED = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")
_BASIC = re.compile(r"\b([245])\d\d\b")
_OUR_MESSAGE_ID = re.compile(r"<(\d+)\.[0-9a-f]{20}@([^<>@\s]+)>")
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
_HEADER_PARTS = ("text/rfc822-headers", "message/global-headers")
_NO_FAILURE = ("delivered", "relayed", "expanded")
# Permanent codes that speak about our message or our sending host, not the mailbox: mailbox
# full (often lifted within days), message too big, content or policy refusal (a spam filter
# blocking our IP would otherwise disable every subscriber behind it in one go). They count as
# soft, so a refusal that keeps coming still disables after the threshold.
_SOFT_DESPITE_PERMANENT = ("5.2.2", "5.3.4", "5.6.", "5.7.")
_MAX_DIAGNOSTIC = 1000
# A delivery report is a few parts deep (report, returned message, its alternatives). The
# standard parser recurses once per nested message/* or multipart/* part and overflows the
# stack near 1,000 levels, so a message is measured before it is parsed and after.
MAX_DEPTH = 20
MAX_CONTAINERS = 100
# Every level the parser descends into needs a Content-Type of multipart/* or message/*
# (a multipart/digest part defaults to message/rfc822, whose own content must declare one to
# go deeper): counting these declarations bounds the depth at 2 * count + 1 before parsing.
# The name must start a line (the parser splits lines at CR or LF) and the value may be folded.
_CONTAINER = re.compile(rb"(?:^|(?<=[\r\n]))content-type:\s*(?:multipart|message)/", re.IGNORECASE)


def parse_bounces(
    data: bytes, *, domain: str | None = None, verp: VerpKey | None = None
) -> tuple[Bounce, ...] | None:
    """The failed and delayed recipients of one message; None when it is not a DSN.

    A DSN that reports only successes (delivered, relayed, expanded) gives an empty tuple.
    `domain`: a campaign id is read only from Message-IDs at this domain (any, when None).
    `verp`: a report sent to a return path it signed names its ledger row (`Bounce.delivery`)
    when it reports one recipient (each of our envelopes has one).
    `UnreadableReport` when the message nests parts deeper than `MAX_DEPTH` or holds more
    than `MAX_CONTAINERS` multipart or message parts.
    """
    if not _is_report(BytesHeaderParser().parsebytes(data)):  # headers only: no recursion
        return None
    _check_containers(data)
    msg = email.message_from_bytes(data)
    if not _is_report(msg):
        return None
    parts = _parts(msg)
    status_part = next((p for p in parts if p.get_content_type() in _STATUS_PARTS), None)
    if status_part is None:
        return None
    blocks = [_fields(block) for block in _status_blocks(status_part)]
    headers = _fields(msg)
    original = _original_message_id(parts) or next(
        (i for i in (_clean_id(b.get("original-message-id", "")) for b in blocks) if i), ""
    )
    campaign = _campaign_id(original, domain)
    report_id = _clean_id(headers.get("message-id", "")) or _digest(data)
    date = _date(headers.get("date", "")) or next(
        (d for d in (_date(b.get("arrival-date", "")) for b in blocks) if d), None
    )
    found = (_bounce(fields, original, campaign, report_id, date) for fields in blocks)
    bounces = tuple(b for b in found if b is not None)
    row = return_path_row(msg, parts, verp) if verp is not None and len(bounces) == 1 else None
    if row is None:
        return bounces
    return (replace(bounces[0], delivery=row, campaign_id=row.campaign_id),)


def return_path_row(msg: Message, parts: Sequence[Message], verp: VerpKey) -> RowRef | None:
    """The row the report's own envelope address names, else the returned original's
    Return-Path; None when neither is a return path we signed."""
    fields = _fields(msg)
    for name in ADDRESS_HEADERS:
        row = verp.find(fields.get(name, ""))
        if row is not None:
            return row
    for part in parts:
        if part.get_content_type() in _HEADER_PARTS:
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                row = verp.find(_fields(BytesHeaderParser().parsebytes(raw)).get("return-path", ""))
                if row is not None:
                    return row
    return None


def _bounce(
    fields: dict[str, str],
    original: str,
    campaign: int | None,
    report_id: str,
    date: dt.datetime | None,
) -> Bounce | None:
    final = _address(fields.get("final-recipient", ""))
    recipient = _address(fields.get("original-recipient", "")) or final
    if not recipient:
        return None  # the per-message block, or a recipient we could never match
    diagnostic = fields.get("diagnostic-code", "")[:_MAX_DIAGNOSTIC]
    action = (fields.get("action", "").split() or [""])[0].lower()
    status = _status(fields.get("status", ""), diagnostic, action)
    kind = _kind(action or _action_from(status), status)
    if kind is None:
        return None
    return Bounce(
        recipient=recipient, kind=kind, status=status, diagnostic=diagnostic,
        campaign_id=campaign, final_recipient=final or recipient, message_id=original,
        report_id=report_id, date=date,
    )  # fmt: skip


def _kind(action: str, status: str) -> BounceKind | None:
    if action in _NO_FAILURE:
        return None
    permanent = status.startswith("5.") and not status.startswith(_SOFT_DESPITE_PERMANENT)
    if action == "failed" and permanent:
        return BounceKind.HARD
    if action in ("failed", "delayed"):
        return BounceKind.SOFT
    return None


def _status(field: str, diagnostic: str, action: str) -> str:
    """The Status field, else the code in the diagnostic, else the class of the action."""
    for text in (field, diagnostic):
        enhanced = _ENHANCED.search(text)
        if enhanced:
            return enhanced.group(0)
    basic = _BASIC.search(diagnostic)
    if basic:
        return f"{basic.group(1)}.0.0"
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "")


def _action_from(status: str) -> str:
    # Action is required by RFC 3464, but some MTAs leave it out: the status class says enough.
    return {"5": "failed", "4": "delayed"}.get(status[:1], "")


def _is_report(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report" and _report_type(msg) == "delivery-status"


def _report_type(msg: Message) -> str:
    value = msg.get_param("report-type")
    if isinstance(value, tuple):  # RFC 2231 encoded parameter
        value = email.utils.collapse_rfc2231_value(value)
    return str(value or "").strip().lower()


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/delivery-status: the parser split the blocks
        return [block for block in payload if isinstance(block, Message)]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    chunks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip())
    return [HeaderParser().parsestr(chunk) for chunk in chunks if chunk.strip()]


def _fields(block: Message) -> dict[str, str]:
    """Header fields by lower-case name (first wins), unfolded, as UTF-8, without control chars."""
    fields: dict[str, str] = {}
    for name, value in block.raw_items():
        text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        fields.setdefault(name.lower(), _printable(text))
    return fields


def _printable(text: str) -> str:
    # The remote server wrote this text and staff read it in a terminal: no escape sequences.
    words = (
        "".join(ch for ch in word if unicodedata.category(ch)[0] != "C") for word in text.split()
    )
    return " ".join(w for w in words if w)


def _address(value: str) -> str:
    """`rfc822; user@example.org` (or `utf-8;`, RFC 6533) -> the address; "" for other types."""
    kind, sep, address = value.partition(";")
    if not sep:
        kind, address = "rfc822", value
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() not in ("rfc822", "utf-8") or "@" not in address or " " in address:
        return ""
    return address


def _check_containers(data: bytes) -> None:
    for count, _ in enumerate(_CONTAINER.finditer(data), start=1):
        if count > MAX_CONTAINERS:
            raise UnreadableReport(
                f"more than {MAX_CONTAINERS} multipart or message parts (a report has a few)"
            )


def _parts(msg: Message) -> list[Message]:
    """Every part, in the order of `Message.walk`, without recursion and at most MAX_DEPTH deep."""
    found: list[Message] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnreadableReport(f"parts nested deeper than {MAX_DEPTH} levels")
        found.append(part)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
    return found


def _original_message_id(parts: Sequence[Message]) -> str:
    """The Message-ID of the returned original: its headers, or the whole returned message."""
    for part in parts:
        kind = part.get_content_type()
        if kind in _HEADER_PARTS:
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                headers = BytesHeaderParser().parsebytes(raw)
                return _clean_id(_fields(headers).get("message-id", ""))
        elif kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return _clean_id(_fields(inner[0]).get("message-id", ""))
    return ""


def _campaign_id(message_id: str, domain: str | None) -> int | None:
    match = _OUR_MESSAGE_ID.fullmatch(message_id)
    if match is None or (domain is not None and match.group(2).lower() != domain.lower()):
        return None
    return int(match.group(1))


def _clean_id(value: str) -> str:
    return "".join(value.split())[:200]


def _digest(data: bytes) -> str:
    # No Message-ID on the report: its bytes identify it instead.
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def _date(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def read_messages(paths: Sequence[Path]) -> Iterator[tuple[str, bytes]]:
    """(source, bytes) of every message under `paths`: a maildir (cur/ new/ tmp/), a folder of
    *.eml, an mbox (a file starting with "From "), or one message. Every path is checked
    before the first message is read."""
    kinds = [(path, source_kind(path)) for path in paths]
    for path, kind in kinds:
        try:
            if kind == "maildir":
                yield from _read_mailbox(path, mailbox.Maildir(path, factory=None, create=False))
            elif kind == "mbox":
                yield from _read_mailbox(path, mailbox.mbox(path, factory=None, create=False))
            elif kind == "folder":
                for file in sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml"):
                    if file.is_file():
                        yield str(file), file.read_bytes()
            else:
                yield str(path), path.read_bytes()
        except OSError as exc:
            raise BounceSourceError(Path(exc.filename or path), exc.strerror or str(exc)) from None
        except mailbox.Error as exc:
            raise BounceSourceError(path, str(exc)) from None


def source_kind(path: Path) -> Literal["maildir", "folder", "mbox", "eml"]:
    """ "maildir", "folder", "mbox" or "eml"; BounceSourceError when the path cannot be read."""
    try:
        if path.is_dir():
            if all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
                return "maildir"
            next(path.iterdir(), None)  # an unlistable folder fails here, before any work
            return "folder"
        with path.open("rb") as handle:
            return "mbox" if handle.read(5) == b"From " else "eml"
    except OSError as exc:
        raise BounceSourceError(path, exc.strerror or str(exc)) from None


def _read_mailbox(path: Path, box: mailbox.Mailbox[mailbox.Message]) -> Iterator[tuple[str, bytes]]:
    try:
        # Sorted: maildir keys come in directory order, which differs between runs.
        keys = list(box.iterkeys()) if isinstance(box, mailbox.mbox) else sorted(box.iterkeys())
        for number, key in enumerate(keys, start=1):
            label = f"{path}#{number}" if isinstance(box, mailbox.mbox) else f"{path}:{key}"
            yield label, box.get_bytes(key)
    finally:
        box.close()
