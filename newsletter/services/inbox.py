"""The inbox read by the product: every mail that comes back, sorted and acted on.

`ingest_inbox` reads files (eml, mbox, maildir), `fetch_inbox` the IMAP mailbox of `[inbox]`.
Bounces go through the bounce policy and mark their ledger rows; complaints end the
subscription and suppress the address; mailto unsubscribes verify their token and unsubscribe
as one click does; automatic replies are counted; the rest is listed for a person. All changes
of one reading are one transaction, committed before the mailbox is told what was read: a fetch
that fails half-way is read again, and every action is idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.actors import Actor
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery import imap
from newsletter.delivery.bounces import read_messages
from newsletter.delivery.inbox import Kind, Returned, classify
from newsletter.models import utcnow
from newsletter.services.bounces import apply_bounces, verp_key
from newsletter.services.units import unit_of_work
from newsletter.subscriptions import bounce_policy, returned_mail
from newsletter.subscriptions.bounce_policy import Applied

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handled:
    """One message and what it did."""

    source: str
    kind: str  # delivery.inbox.Kind
    outcome: str  # what changed: disabled, counted, complained, unsubscribed, already, ...
    email: str = ""  # the subscriber concerned, when one is
    detail: str = ""  # the sender and subject (for a person), or why nothing was done


@dataclass
class InboxReport:
    messages: list[Handled] = field(default_factory=list)
    bounces: list[tuple[str, Applied]] = field(default_factory=list)
    rows_bounced: int = 0
    dry_run: bool = False

    @property
    def for_a_person(self) -> list[Handled]:
        return [m for m in self.messages if m.kind in (Kind.OTHER, Kind.UNREADABLE)]

    @property
    def summary(self) -> dict[str, int]:
        kinds = Counter(m.kind for m in self.messages)
        outcomes = Counter((m.kind, m.outcome) for m in self.messages)
        tally = bounce_policy.tally([a for _, a in self.bounces])
        return {
            "messages": len(self.messages),
            "duplicates": sum(1 for m in self.messages if m.outcome == DUPLICATE),
            "bounce_reports": kinds[Kind.DSN], "hard": tally["hard"], "soft": tally["soft"],
            "disabled": tally["disabled"], "counted": tally["counted"],
            "rows_bounced": self.rows_bounced,
            "complaints": kinds[Kind.COMPLAINT],
            "complained": outcomes[(Kind.COMPLAINT, returned_mail.Done.COMPLAINED)],
            "unsubscribes": kinds[Kind.UNSUBSCRIBE],
            "unsubscribed": outcomes[(Kind.UNSUBSCRIBE, returned_mail.Done.UNSUBSCRIBED)],
            "invalid_tokens": outcomes[(Kind.UNSUBSCRIBE, returned_mail.Done.INVALID)],
            "not_ours": tally["not_ours"]
            + outcomes[(Kind.COMPLAINT, returned_mail.Done.NOT_OURS)],
            "auto_replies": kinds[Kind.AUTO_REPLY],
            "for_a_person": len(self.for_a_person),
        }  # fmt: skip


DUPLICATE = "duplicate"  # the same message twice in one reading: the second does nothing
IGNORED = "ignored"
LEFT = "left for a person"


def _act(
    settings: Settings,
    messages: Iterable[tuple[str, bytes]],
    *,
    dry_run: bool,
    now: dt.datetime,
    db: Engine | None,
) -> InboxReport:
    verp = verp_key(settings)
    read: list[tuple[str, Returned, bool]] = []  # (source, sorted, seen before in this reading)
    seen: set[str] = set()
    for source, data in messages:
        returned = classify(data, domain=settings.domain, verp=verp)
        read.append((source, returned, returned.key in seen))
        seen.add(returned.key)
    report = InboxReport(dry_run=dry_run)
    bounces = [
        (source, b) for source, r, again in read if r.kind is Kind.DSN and not again
        for b in r.bounces
    ]  # fmt: skip
    with unit_of_work(settings, db, commit=not dry_run) as session:
        applied, report.rows_bounced = apply_bounces(session, [b for _, b in bounces], now=now)
        report.bounces = [(s, a) for (s, _), a in zip(bounces, applied, strict=True)]
        by_source: dict[str, list[Applied]] = {}
        for source, a in report.bounces:
            by_source.setdefault(source, []).append(a)
        for source, r, again in read:
            handled = _handle(session, settings, source, r, again, by_source.get(source, []), now)
            report.messages.append(handled)
    return report


def _handle(
    session: Session,
    settings: Settings,
    source: str,
    r: Returned,
    again: bool,
    bounced: Sequence[Applied],
    now: dt.datetime,
) -> Handled:
    who = f"{r.sender} {r.subject!r}" if r.sender or r.subject else ""
    if r.kind is Kind.UNSUBSCRIBE:  # its subject holds the token, which unsubscribes its holder
        who = f"from {r.sender}"
    if again:
        return Handled(source, r.kind, DUPLICATE, detail=who)
    if r.kind is Kind.DSN:
        if not bounced:
            return Handled(source, r.kind, IGNORED, detail="reports no failed or delayed recipient")
        outcomes = ", ".join(dict.fromkeys(str(a.outcome) for a in bounced))
        emails = ", ".join(dict.fromkeys(a.email for a in bounced if a.email))
        reasons = "; ".join(dict.fromkeys(a.reason for a in bounced if a.reason))
        return Handled(source, r.kind, outcomes, emails, reasons)
    if r.kind is Kind.COMPLAINT and r.complaint is not None:
        done, email = returned_mail.complain(session, settings.secret, r.complaint)
        return Handled(source, r.kind, str(done), email, r.complaint.message_id)
    if r.kind is Kind.UNSUBSCRIBE:
        done, email = returned_mail.unsubscribe_by_mail(session, settings.secret, r.token, now=now)
        return Handled(source, r.kind, str(done), email, who)
    if r.kind is Kind.AUTO_REPLY:
        return Handled(source, r.kind, IGNORED, detail=f"{who}: {r.why}")
    return Handled(
        source, r.kind, LEFT, detail=f"{who}: {r.why}" if r.kind is Kind.UNREADABLE else who
    )


def ingest_inbox(
    settings: Settings,
    paths: Sequence[Path],
    *,
    actor: Actor,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    db: Engine | None = None,
) -> InboxReport:
    """Every message under `paths` (eml, folders of eml, mbox, maildir), sorted and acted on."""
    messages = list(read_messages(paths))  # every path is checked before anything changes
    report = _act(settings, messages, dry_run=dry_run, now=now or utcnow(), db=db)
    _log(actor, report, f"{len(paths)} paths")
    return report


def fetch_inbox(
    settings: Settings,
    *,
    actor: Actor,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    db: Engine | None = None,
) -> InboxReport:
    """The new messages of `[inbox] folder`, acted on, then marked on the server (not in a dry
    run) so the next fetch skips them."""
    inbox = settings.inbox
    with imap.open_mailbox(inbox) as box:
        fetched = box.unread()
        where = f"imap://{inbox.host}/{inbox.folder}"
        messages = [(f"{where};uid={m.uid}", m.data) for m in fetched]
        report = _act(settings, messages, dry_run=dry_run, now=now or utcnow(), db=db)
        if not dry_run:
            for m, handled in zip(fetched, report.messages, strict=True):
                box.taken(m.uid, acted=handled.outcome != LEFT)
    _log(actor, report, f"imap {inbox.host}")
    return report


def _log(actor: Actor, report: InboxReport, where: str) -> None:
    log.info(
        "%s (via %s) read %d returned messages from %s%s",
        actor.label, actor.via, len(report.messages), where, " (dry run)" if report.dry_run else "",
    )  # fmt: skip
