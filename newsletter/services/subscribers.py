"""Keeping the lists: add, edit, hand over, unsubscribe on request, erase, import and export.

Every service takes the `Actor` the audit trail records and the `Scope` of missions that actor
may see: a subscriber of another mission is "not found", exactly as one who does not exist, and
nothing is added or moved into a mission outside it. Each runs in one transaction, committed at
its end; subscription mail goes out only after that commit, so nobody is invited to a
subscription that was rolled back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from newsletter import addresses, cooperation_requests, directory, interests, runtime
from newsletter.actors import Actor, Scope
from newsletter.config import Settings
from newsletter.db import Engine, Session
from newsletter.delivery import campaigns
from newsletter.delivery.transports import deliver
from newsletter.errors import ListImportError, NewsletterError, NotFoundError
from newsletter.mail.subscription import MailKind, MailRequest, subscription_message
from newsletter.models import Subscriber, SubscriberStatus, utcnow
from newsletter.render.environment import make_environment
from newsletter.services.units import unit_of_work
from newsletter.subscriptions import erasure as erasing
from newsletter.subscriptions import export, lifecycle, store, suppression
from newsletter.subscriptions import handover as handing_over
from newsletter.subscriptions.lists import (
    LANGUAGES,
    BadRowsError,
    ListRow,
    RowError,
    check_text,
    decode_list,
    parse_list,
)
from newsletter.subscriptions.reasons import audit_reason

log = logging.getLogger(__name__)
_HINT = "see `newsletter subscribers list`"


class OutOfScopeError(ListImportError):
    """A mission the actor may not act for."""

    def __init__(self, mission: str) -> None:
        self.mission = mission
        super().__init__(f"mission {mission!r} is not one of yours; ask for access to it")


class RequestReasonError(NewsletterError, ValueError):
    """An unsubscribe on request needs a reason the audit trail can show."""


@dataclass(frozen=True)
class AuditEntry:
    at: dt.datetime
    action: str
    old_status: str
    new_status: str
    actor: str
    via: str
    detail: str


@dataclass(frozen=True)
class SubscriberDetails:
    id: int
    email: str
    name: str
    title: str
    embassy: str
    sectors: tuple[str, ...]
    language: str
    status: str
    consent_source: str
    created_at: dt.datetime
    confirmed_at: dt.datetime | None
    status_changed_at: dt.datetime
    history: tuple[AuditEntry, ...] = ()


@dataclass(frozen=True)
class MailResult:
    request: MailRequest
    accepted: bool
    reply: str


@dataclass
class ListImport:
    """What an import did (or, in a dry run, would do), and the bad rows it skipped."""

    report: store.ImportReport
    skipped: list[RowError] = field(default_factory=list)
    mail: list[MailResult] = field(default_factory=list)
    dry_run: bool = False
    encodings: dict[str, str] = field(default_factory=dict)  # files read as other than UTF-8

    @property
    def confirmations_sent(self) -> int:
        return sum(1 for m in self.mail if m.accepted)


@dataclass(frozen=True)
class HandedOver:
    old: SubscriberDetails
    new: SubscriberDetails
    mail: MailResult | None


# --- reading ----------------------------------------------------------------------------------


def _find(session: Session, email: str, scope: Scope) -> Subscriber:
    subscriber = store.find(session, email)
    if not scope.allows(subscriber.embassy_code):
        raise NotFoundError("subscriber", subscriber.email, _HINT)
    return subscriber


def _details(session: Session, subscriber: Subscriber, *, history: bool) -> SubscriberDetails:
    assert subscriber.id is not None
    events = store.history(session, subscriber.id) if history else []
    return SubscriberDetails(
        id=subscriber.id, email=subscriber.email, name=subscriber.name, title=subscriber.title,
        embassy=subscriber.embassy_code,
        sectors=interests.sectors_of(session, [subscriber.id]).get(subscriber.id, ()),
        language=subscriber.language, status=str(subscriber.status),
        consent_source=subscriber.consent_source, created_at=subscriber.created_at,
        confirmed_at=subscriber.confirmed_at, status_changed_at=subscriber.status_changed_at,
        history=tuple(
            AuditEntry(e.at, e.action, e.old_status, e.new_status, e.actor, e.via, e.detail)
            for e in events
        ),
    )  # fmt: skip


def personal_data(session: Session, subscriber: Subscriber) -> dict[str, object]:
    """What the system holds about one person, for them to download (their preferences page):
    their fields and sectors, every recorded change, every delivery and every "connect me".

    In the caller's session: the preferences page reads it under the link it has verified.
    """
    details = _details(session, subscriber, history=True)
    assert subscriber.id is not None
    requests = [r.row for r in cooperation_requests.listed(session, subscriber_id=subscriber.id)]
    return {
        "subscriber": {
            "email": details.email, "name": details.name, "title": details.title,
            "mission": details.embassy, "sectors": list(details.sectors),
            "language": details.language, "status": details.status,
            "delivery_mode": subscriber.delivery_mode, "paused_until": subscriber.paused_until,
            "consent_source": details.consent_source, "created_at": details.created_at,
            "confirmed_at": details.confirmed_at, "status_changed_at": details.status_changed_at,
        },
        "history": [
            {"at": e.at, "action": e.action, "old_status": e.old_status,
             "new_status": e.new_status, "via": e.via, "detail": e.detail}
            for e in details.history
        ],
        "deliveries": [
            {"issue": d.issue, "state": d.state, "sent_at": d.sent_at, "reply": d.reply}
            for d in campaigns.deliveries_of(session, subscriber.id)
        ],
        "cooperation_requests": [
            {"item": r.item_id, "mission": r.mission, "organisation": r.organisation,
             "country": r.country, "note": r.note, "state": r.state, "at": r.created_at}
            for r in requests
        ],
    }  # fmt: skip


def show_subscriber(
    settings: Settings, email: str, *, scope: Scope, db: Engine | None = None
) -> SubscriberDetails:
    """One subscriber with every recorded change (who, when, through what)."""
    with unit_of_work(settings, db, commit=False) as session:
        return _details(session, _find(session, email, scope), history=True)


def list_subscribers(
    settings: Settings,
    *,
    scope: Scope,
    embassy: str | None = None,
    sector: str | None = None,
    status: SubscriberStatus | None = None,
    db: Engine | None = None,
) -> list[store.SubscriberView]:
    """Listed subscribers of the actor's missions (never erased rows), by embassy and address.

    An unknown embassy or sector is `NotFoundError`, as for an export: an empty list would say
    "nobody" when the filter was mistyped. Another mission's code is "not found" as well.
    """
    if embassy and not scope.allows(embassy):
        raise NotFoundError("embassy", embassy, "see `newsletter embassies list`")
    with unit_of_work(settings, db, commit=False) as session:
        store.check_filters(session, embassy=embassy, sector=sector)
        views = store.list_views(
            session, embassy=embassy, sector=sector, status=status.value if status else None
        )
    return [v for v in views if scope.allows(v.embassy)]


def export_lists(
    settings: Settings,
    *,
    scope: Scope,
    embassy: str | None = None,
    sector: str | None = None,
    status: SubscriberStatus | None = None,
    db: Engine | None = None,
) -> list[ListRow]:
    """List rows that `import_lists` reads back, of the actor's missions only."""
    if embassy and not scope.allows(embassy):
        raise NotFoundError("embassy", embassy, "see `newsletter embassies list`")
    with unit_of_work(settings, db, commit=False) as session:
        rows = export.export_rows(
            session, embassy=embassy, sector=sector, status=status.value if status else None
        )
    return [r for r in rows if scope.allows(r.embassy)]


# --- one person -------------------------------------------------------------------------------


def _text(value: str, option: str) -> str:
    text = value.strip()
    problem = check_text(text, option)
    if problem:
        raise ListImportError(f"--{option}: {problem}")
    return text


def _language(language: str) -> str:
    if language not in LANGUAGES:
        raise ListImportError(f"--language {language!r}: use {' or '.join(LANGUAGES)}")
    return language


def add_subscriber(
    settings: Settings,
    email: str,
    *,
    embassy: str,
    actor: Actor,
    scope: Scope,
    name: str = "",
    title: str = "",
    sectors: Sequence[str] = (),
    language: str = "zh",
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    db: Engine | None = None,
) -> SubscriberDetails:
    """Add one subscriber; refused when listed already, erased on request, or out of scope."""
    address = addresses.normalise(email)  # AddressError: one line naming the address and fault
    if not scope.allows(embassy):
        raise OutOfScopeError(embassy)
    row = ListRow(
        address, _text(name, "name"), _text(title, "title"), embassy, tuple(sectors),
        _language(language), actor.via, 0,
    )  # fmt: skip
    with unit_of_work(settings, db) as session:
        subscriber = store.add(
            session, row, status=status, actor=actor.label, via=actor.via, secret=settings.secret
        )
        return _details(session, subscriber, history=False)


def edit_subscriber(
    settings: Settings,
    email: str,
    *,
    actor: Actor,
    scope: Scope,
    name: str | None = None,
    title: str | None = None,
    sectors: Sequence[str] | None = None,
    language: str | None = None,
    mission: str | None = None,
    db: Engine | None = None,
) -> tuple[SubscriberDetails, bool]:
    """Change what staff keep about a person (not their status); (details, whether changed)."""
    if mission is not None and not scope.allows(mission):
        raise OutOfScopeError(mission)
    with unit_of_work(settings, db) as session:
        subscriber = _find(session, email, scope)
        assert subscriber.id is not None
        current = interests.sectors_of(session, [subscriber.id]).get(subscriber.id, ())
        store.validate_refs(session, mission or subscriber.embassy_code, sectors or ())
        wanted_sectors = current
        if sectors is not None:  # in the taxonomy's order, as `sectors_of` reads them back
            wanted_sectors = tuple(c for c in directory.sectors(session) if c in set(sectors))
        before = {
            "name": subscriber.name, "title": subscriber.title, "language": subscriber.language,
            "mission": subscriber.embassy_code, "sectors": ";".join(current),
        }  # fmt: skip
        after = {
            "name": before["name"] if name is None else _text(name, "name"),
            "title": before["title"] if title is None else _text(title, "title"),
            "language": before["language"] if language is None else _language(language),
            "mission": mission or before["mission"],
            "sectors": ";".join(wanted_sectors),
        }
        changed = [key for key in before if before[key] != after[key]]
        if changed:
            subscriber.name, subscriber.title = after["name"], after["title"]
            subscriber.language, subscriber.embassy_code = after["language"], after["mission"]
            session.add(subscriber)
            store.set_sectors(session, subscriber.id, wanted_sectors)
            detail = "; ".join(f"{key}: {after[key] or '-'}" for key in changed)
            store.audit(
                session, subscriber, "updated", actor=actor.label, via=actor.via, detail=detail
            )
            session.flush()
        return _details(session, subscriber, history=False), bool(changed)


def request_reason(reason: str) -> str:
    """The reason given for an unsubscribe on someone's behalf: the audit's answer to "why"."""
    return audit_reason(
        reason,
        error=RequestReasonError,
        missing="give a --reason: the audit log records why they were unsubscribed",
    )


def unsubscribe_on_request(
    settings: Settings,
    email: str,
    *,
    reason: str,
    actor: Actor,
    scope: Scope,
    db: Engine | None = None,
) -> tuple[SubscriberDetails, bool]:
    """Unsubscribe someone who asked staff to (by letter, phone, in person); (details, changed).

    Idempotent: someone already unsubscribed or who complained stays as they are.
    """
    why = request_reason(reason)
    with unit_of_work(settings, db) as session:
        subscriber = _find(session, email, scope)
        changed = False
        if subscriber.status not in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED):
            changed = lifecycle.change(
                session, subscriber, SubscriberStatus.UNSUBSCRIBED, actor=actor,
                detail=f"on request: {why}",
            )  # fmt: skip
        return _details(session, subscriber, history=False), changed


class WholeListError(NewsletterError, PermissionError):
    """The suppression list is shared by every mission: only an actor who sees them all edits it."""


def _needs_every_mission(scope: Scope, what: str) -> None:
    if scope.missions is not None:
        raise WholeListError(f"{what} needs access to every mission; ask an administrator")


def erase_subscriber(
    settings: Settings,
    email: str,
    *,
    actor: Actor,
    scope: Scope,
    suppress: bool = False,
    db: Engine | None = None,
) -> erasing.Erasure:
    """Erase a person's data; only a keyed hash of the address stays, so no import re-adds it.

    An address not on the list is `NotListedError` (nothing written) unless `suppress`: then it
    goes on the suppression list all the same, which only an actor of every mission may do. One
    of another mission is "not found", word for word as an address nobody has.
    """
    with unit_of_work(settings, db) as session:
        listed = store.by_address(session, addresses.normalise(email))
        if listed is not None and not scope.allows(listed.embassy_code):
            if suppress:
                _needs_every_mission(scope, "suppressing an address none of your missions lists")
            raise erasing.NotListedError(listed.email)
        if listed is None and suppress:
            _needs_every_mission(scope, "suppressing an address none of your missions lists")
        if listed is None and scope.missions is not None:
            raise erasing.NotListedError(addresses.normalise(email))  # suppressed or not: unsaid
        return erasing.erase(
            session, settings.secret, email, actor=actor, suppress_unlisted=suppress
        )


@dataclass(frozen=True)
class Unsuppressed:
    address: str
    suppressed_at: dt.datetime
    reason: str  # why it was suppressed ("erased on request")


class NotSuppressedError(NotFoundError):
    def __init__(self, address: str) -> None:
        super().__init__("suppressed address", address, "it can be added or imported as it is")


def unsuppress(
    settings: Settings,
    email: str,
    *,
    reason: str,
    actor: Actor,
    scope: Scope,
    db: Engine | None = None,
) -> Unsuppressed:
    """Take an address off the suppression list, with the reason the audit trail keeps.

    For a mistake (a typo suppressed) or a person who asks to come back: the address may then
    be added or imported again; nothing else changes (an erased person's data stays erased).
    """
    why = audit_reason(
        reason, error=RequestReasonError,
        missing="give a --reason: the audit log records why the suppression was lifted",
    )  # fmt: skip
    address = addresses.normalise(email)
    _needs_every_mission(scope, "lifting a suppression")
    with unit_of_work(settings, db) as session:
        entry = suppression.lift(session, settings.secret, address)
        if entry is None:
            raise NotSuppressedError(address)
        store.audit_unlisted(
            session, "unsuppressed", actor=actor.label, via=actor.via,
            detail=f"suppression {entry.email_hash[:16]} of {address} lifted: {why}",
        )  # fmt: skip
        session.flush()
    log.info("%s (via %s) lifted the suppression of %s", actor.label, actor.via, address)
    return Unsuppressed(address, entry.at, entry.reason)


def hand_over(
    settings: Settings,
    old_email: str,
    new_email: str,
    *,
    actor: Actor,
    scope: Scope,
    name: str = "",
    mail: bool = True,
    db: Engine | None = None,
) -> HandedOver:
    """Give a post's sectors and language to the successor (pending) and retire the old address.

    The successor, the old address's unsubscribe and the audit entry are one transaction; the
    link to confirm goes to the successor only once it is committed (`mail=False`: none).
    """
    with unit_of_work(settings, db) as session:
        _find(session, old_email, scope)
        done = handing_over.handover(
            session, settings.secret, old_email=old_email, new_email=new_email, name=name,
            actor=actor,
        )  # fmt: skip
        old = _details(session, done.old, history=False)
        new = _details(session, done.new, history=False)
        invite = MailRequest.about(MailKind.INVITE, done.new)
    sent = send_subscription_mail(settings, [invite])[0] if mail else None
    return HandedOver(old, new, sent)


# --- lists ------------------------------------------------------------------------------------


def _list_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.csv")))
        elif path.is_file():
            files.append(path)
        else:
            raise ListImportError(f"{path} not found")
    if not files:
        raise ListImportError(f"no .csv files in {', '.join(map(str, paths))}")
    return files


def _read_text(file: Path) -> tuple[str, str]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ListImportError(f"cannot read {file}: {exc.strerror}") from None
    return decode_list(data, source=str(file))


def _cross_file_duplicates(rows: list[ListRow], errors: list[RowError]) -> list[ListRow]:
    first: dict[str, ListRow] = {}
    for row in rows:
        if row.email in first:
            other = first[row.email]
            reason = f"{row.email} also in {other.source}:{other.line}"
            errors.append(RowError(row.source, row.line, "email", reason))
        else:
            first[row.email] = row
    return list(first.values())


def _out_of_scope(session: Session, rows: list[ListRow], scope: Scope) -> list[RowError]:
    """Rows for another mission, or that would move someone out of another mission."""
    if scope.missions is None:
        return []
    errors = []
    for row in rows:
        existing = store.by_address(session, row.email)
        if not scope.allows(row.embassy) or (
            existing is not None and not scope.allows(existing.embassy_code)
        ):
            errors.append(RowError(row.source, row.line, "embassy", "not one of your missions"))
    return errors


@dataclass
class ReadLists:
    rows: list[ListRow]
    errors: list[RowError]
    encodings: dict[str, str]  # file -> encoding, for files not in UTF-8


def read_lists(session: Session, paths: Sequence[Path], *, scope: Scope) -> ReadLists:
    """Every row of every list, and every bad row (bad cells, duplicates, other missions)."""
    embassies = set(directory.embassies(session))
    sectors = set(directory.sectors(session))
    rows: list[ListRow] = []
    errors: list[RowError] = []
    encodings: dict[str, str] = {}
    for file in _list_files(paths):
        embassy = file.stem if file.stem in embassies else None
        text, encoding = _read_text(file)
        if not encoding.startswith("UTF-8"):
            encodings[str(file)] = encoding
        got, bad = parse_list(
            text, source=str(file), embassy=embassy, embassies=embassies, sectors=sectors
        )
        rows.extend(got)
        errors.extend(bad)
    unique = _cross_file_duplicates(rows, errors)
    outside = _out_of_scope(session, unique, scope)
    errors.extend(outside)
    refused = {(e.source, e.line) for e in outside}
    kept = [r for r in unique if (r.source, r.line) not in refused]
    return ReadLists(kept, errors, encodings)


def import_lists(
    settings: Settings,
    paths: Sequence[Path],
    *,
    actor: Actor,
    scope: Scope,
    dry_run: bool = False,
    skip_invalid: bool = False,
    require_confirmation: bool = False,
    mail: bool = True,
    progress: store.Progress | None = None,
    db: Engine | None = None,
) -> ListImport:
    """Import per-mission lists in one transaction: every row stored, or none.

    Bad rows stop the import (`BadRowsError` carries them all) unless `skip_invalid`. A dry
    run reports what would change and changes nothing. New pending subscribers are sent a link
    to confirm once the import is committed (`mail=False`: not). `progress(done, total)` is
    told how far the storing has gone, for a bar on long lists.
    """
    status = SubscriberStatus.PENDING if require_confirmation else SubscriberStatus.ACTIVE
    with unit_of_work(settings, db, commit=not dry_run) as session:
        read = read_lists(session, paths, scope=scope)
        rows, errors = read.rows, read.errors
        if errors and not skip_invalid:
            raise BadRowsError(errors)
        report = store.import_rows(
            session, rows, status=status, actor=actor.label, via="import",
            secret=settings.secret, progress=progress,
        )  # fmt: skip
        invites = [
            MailRequest.about(MailKind.INVITE, s)
            for s in report.created
            if s.status == SubscriberStatus.PENDING
        ]
    log.info("%s (via %s) imported %d rows", actor.label, actor.via, len(rows))
    sent = [] if dry_run or not mail else send_subscription_mail(settings, invites)
    return ListImport(report, errors, sent, dry_run, read.encodings)


def send_subscription_mail(settings: Settings, requests: Sequence[MailRequest]) -> list[MailResult]:
    """Send subscription mail now, one result per request (a refusal is a result, not an error)."""
    if not requests:
        return []
    env = make_environment(runtime.templates_dir(settings))
    dkim = runtime.load_dkim(settings)
    now = utcnow()
    messages = [subscription_message(settings, env, r, now=now, dkim=dkim) for r in requests]
    replies = asyncio.run(deliver(runtime.make_transport(settings), messages))
    return [
        MailResult(request, 200 <= reply.code < 300, str(reply))
        for request, reply in zip(requests, replies, strict=True)
    ]


# --- approval of web sign-ups ([web] approval = "mission") -------------------------------------


@dataclass(frozen=True)
class AwaitingApproval:
    """A confirmed web sign-up a list manager or the mission's liaison has yet to decide on."""

    email: str
    name: str
    embassy: str
    language: str
    sectors: tuple[str, ...]
    waiting_since: dt.datetime
    days_waiting: int


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)  # SQLite keeps no zone


def pending_approvals(
    settings: Settings,
    *,
    scope: Scope,
    embassy: str | None = None,
    older_than_days: int | None = None,
    now: dt.datetime | None = None,
    db: Engine | None = None,
) -> list[AwaitingApproval]:
    """Sign-ups awaiting approval in the actor's missions, longest waiting first.

    `older_than_days`: only those waiting at least that many days (the reminder list).
    """
    if older_than_days is not None and older_than_days < 0:
        raise NewsletterError(f"--older-than {older_than_days}: give a number of days, 0 or more")
    if embassy and not scope.allows(embassy):
        raise NotFoundError("embassy", embassy, "see `newsletter embassies list`")
    at = now or utcnow()
    with unit_of_work(settings, db, commit=False) as session:
        store.check_filters(session, embassy=embassy, sector=None)
        views = store.list_views(session, embassy=embassy, status=SubscriberStatus.AWAITING.value)
        views = [v for v in views if scope.allows(v.embassy)]
        # A queue of a few people: one lookup each for when they began to wait.
        waiting = {v.email: store.find(session, v.email).status_changed_at for v in views}
    found = []
    for view in views:
        since = _aware(waiting[view.email])
        days = (at - since).days
        if older_than_days is not None and days < older_than_days:
            continue
        found.append(AwaitingApproval(
            email=view.email, name=view.name, embassy=view.embassy, language=view.language,
            sectors=view.sectors, waiting_since=since, days_waiting=days,
        ))  # fmt: skip
    return sorted(found, key=lambda a: (a.waiting_since, a.email))


def approve_signup(
    settings: Settings, email: str, *, actor: Actor, scope: Scope, db: Engine | None = None
) -> tuple[SubscriberDetails, bool]:
    """Let a confirmed sign-up in: from now on the issues reach them; (details, changed)."""
    with unit_of_work(settings, db) as session:
        subscriber = _find(session, email, scope)
        changed = lifecycle.approve(session, subscriber, actor=actor)
        return _details(session, subscriber, history=False), changed


def reject_signup(
    settings: Settings,
    email: str,
    *,
    actor: Actor,
    scope: Scope,
    reason: str = "",
    db: Engine | None = None,
) -> SubscriberDetails:
    """Refuse a confirmed sign-up: it ends unsubscribed, the reason in the audit trail."""
    with unit_of_work(settings, db) as session:
        subscriber = _find(session, email, scope)
        lifecycle.reject(session, subscriber, actor=actor, reason=reason)
        return _details(session, subscriber, history=False)
