"""Subscriber rows: add, import, list and change status, each change written to the audit log."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, insert
from sqlmodel import Session, SQLModel, col, select

from newsletter import audit_log
from newsletter.errors import ConfigError, ListImportError, NotFoundError
from newsletter.interests import sectors_of
from newsletter.models import (
    AuditEvent,
    Embassy,
    Sector,
    Subscriber,
    SubscriberSector,
    SubscriberStatus,
    utcnow,
)
from newsletter.subscriptions import suppression
from newsletter.subscriptions.lists import ListRow, normalise_email

# The person left, or their address does not work: an import never brings these back.
DEPARTED = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED}
)


def _table(model: type[SQLModel]) -> Table:
    """The model's table: Core executemany, without the ORM's bookkeeping per row."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set at class creation


Progress = Callable[[int, int], None]  # (rows done, rows in all)
PROGRESS_EVERY = 50
IMPORT_CHUNK = 1000  # new subscribers written per batch of statements


@dataclass(frozen=True)
class SubscriberView:
    email: str
    name: str
    title: str
    embassy: str
    sectors: tuple[str, ...]
    language: str
    status: str
    consent_source: str
    id: int


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (email, status kept)
    suppressed: list[str] = field(default_factory=list)  # erased addresses, not re-added
    created: list[Subscriber] = field(default_factory=list)  # new rows, for confirmation mail


def audit(
    session: Session,
    subscriber: Subscriber,
    action: str,
    *,
    old: str = "",
    actor: str,
    via: str,
    detail: str = "",
) -> None:
    """One event in the subscriber's timeline, and its link in the audit chain."""
    event, entry = _events(subscriber, action, old=old, actor=actor, via=via, detail=detail)
    session.execute(insert(_table(AuditEvent)), [event | {"at": utcnow()}])
    audit_log.append(session, entry)


def _events(
    subscriber: Subscriber, action: str, *, old: str = "", actor: str, via: str, detail: str = ""
) -> tuple[dict[str, object], audit_log.Entry]:
    """The timeline's event (its columns) and the chain's entry for one change of one
    subscriber.

    The chain gets no free text: details may quote an address, which an erasure scrubs from
    the timeline but could not scrub from a chained row without breaking the chain.
    """
    event: dict[str, object] = {
        "subscriber_id": subscriber.id, "action": action, "old_status": old,
        "new_status": str(subscriber.status), "actor": actor, "via": via, "detail": detail,
    }  # fmt: skip
    kind, actor_id = audit_log.split_label(actor)
    change = (
        {"old": old, "new": str(subscriber.status)} if old else {"status": str(subscriber.status)}
    )
    entry = audit_log.Entry(
        actor_kind=kind, actor_id=actor_id, via=via, action=f"subscriber.{action}",
        target=f"subscriber:{subscriber.id}", mission=subscriber.embassy_code, detail=change,
    )  # fmt: skip
    return event, entry


def audit_unlisted(session: Session, action: str, *, actor: str, via: str, detail: str) -> None:
    """An audit entry about an address with no subscriber row (a suppression made or lifted, a
    test send to a staff address), and its link in the audit chain.

    The chain records that it happened and who did it, never the address or the free text: a
    chained row cannot be scrubbed later without breaking the chain.
    """
    session.add(AuditEvent(subscriber_id=None, action=action, actor=actor, via=via, detail=detail))
    kind, actor_id = audit_log.split_label(actor)
    audit_log.append(session, audit_log.Entry(
        actor_kind=kind, actor_id=actor_id, via=via, action=f"address.{action}",
    ))  # fmt: skip


def set_status(
    session: Session,
    subscriber: Subscriber,
    status: SubscriberStatus,
    *,
    actor: str,
    via: str,
    detail: str = "",
) -> bool:
    """Move a subscriber to `status`; False (and nothing written) when already there."""
    if subscriber.status == status:
        return False
    old = str(subscriber.status)
    subscriber.status = status
    subscriber.status_changed_at = utcnow()
    if status == SubscriberStatus.ACTIVE and subscriber.confirmed_at is None:
        subscriber.confirmed_at = subscriber.status_changed_at
    session.add(subscriber)
    session.flush()
    audit(session, subscriber, "status", old=old, actor=actor, via=via, detail=detail)
    return True


def set_sectors(session: Session, subscriber_id: int, codes: Sequence[str]) -> None:
    current = session.exec(
        select(SubscriberSector).where(SubscriberSector.subscriber_id == subscriber_id)
    ).all()
    for link in current:
        if link.sector_code not in codes:
            session.delete(link)
    have = {link.sector_code for link in current}
    for code in codes:
        if code not in have:
            session.add(SubscriberSector(subscriber_id=subscriber_id, sector_code=code))


def by_address(session: Session, address: str) -> Subscriber | None:
    """The subscriber with this normalised address, if any."""
    return session.exec(select(Subscriber).where(Subscriber.email == address)).first()


def by_token_key(session: Session, token_key: str) -> Subscriber | None:
    return session.exec(select(Subscriber).where(Subscriber.token_key == token_key)).first()


def find(session: Session, email: str) -> Subscriber:
    try:
        address = normalise_email(email)
    except ValueError:
        raise NotFoundError("subscriber", email) from None
    subscriber = by_address(session, address)
    if subscriber is None:
        raise NotFoundError("subscriber", address, "see `newsletter subscribers list`")
    return subscriber


def history(session: Session, subscriber_id: int) -> list[AuditEvent]:
    """Every recorded change of one subscriber, oldest first."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.subscriber_id == subscriber_id)
        .order_by(col(AuditEvent.at), col(AuditEvent.id))
    )
    return list(session.exec(query).all())


def check_filters(session: Session, *, embassy: str | None, sector: str | None) -> None:
    """`NotFoundError` for a filter naming an embassy or sector that does not exist."""
    if embassy and session.get(Embassy, embassy) is None:
        raise NotFoundError("embassy", embassy, "see `newsletter embassies list`")
    if sector and session.get(Sector, sector) is None:
        raise NotFoundError("sector", sector, "see `newsletter sectors list`")


def validate_refs(session: Session, embassy: str, sectors: Sequence[str]) -> None:
    if session.get(Embassy, embassy) is None:
        raise ListImportError(f"unknown embassy {embassy!r}; see `newsletter embassies list`")
    for code in sectors:
        if session.get(Sector, code) is None:
            raise ListImportError(f"unknown sector {code!r}; see `newsletter sectors list`")


def create(
    session: Session,
    row: ListRow,
    *,
    status: SubscriberStatus,
    actor: str,
    via: str,
    consent: str,
    detail: str = "",
) -> Subscriber:
    """A new subscriber row with its sectors and a `created` audit entry (no commit)."""
    return create_many(session, [(row, status, consent)], actor=actor, via=via, detail=detail)[0]


def create_many(
    session: Session,
    rows: Sequence[tuple[ListRow, SubscriberStatus, str]],
    *,
    actor: str,
    via: str,
    detail: str = "",
) -> list[Subscriber]:
    """New subscribers (row, status, consent), their sectors and `created` audit entries, in
    a few batched statements whatever their number (no commit)."""
    now = utcnow()
    made = [
        Subscriber(
            email=row.email, name=row.name, title=row.title, embassy_code=row.embassy,
            language=row.language, status=status, token_key=secrets.token_urlsafe(24),
            consent_source=consent, created_at=now, status_changed_at=now,
            confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
        )
        for row, status, consent in rows
    ]  # fmt: skip
    session.add_all(made)
    session.flush()  # one batched INSERT, ids back
    # The rest as plain rows: an ORM object each would cost more than the row's own INSERT.
    links = [
        {"subscriber_id": s.id, "sector_code": code}
        for s, (row, _, _) in zip(made, rows, strict=True)
        for code in dict.fromkeys(row.sectors)
    ]
    if links:
        session.execute(insert(_table(SubscriberSector)), links)
    events = [
        _events(s, "created", actor=actor, via=via, detail=detail or consent)
        for s, (_, _, consent) in zip(made, rows, strict=True)
    ]
    session.execute(insert(_table(AuditEvent)), [event | {"at": now} for event, _ in events])
    audit_log.append_many(session, [entry for _, entry in events], at=now)
    return made


def _new_status(row: ListRow, default: SubscriberStatus) -> SubscriberStatus:
    # A list may say a person left (kept, so they are never mailed) or still has to confirm;
    # it can never skip the confirmation the import asks for.
    if row.status and SubscriberStatus(row.status) in DEPARTED:
        return SubscriberStatus(row.status)
    if row.status == SubscriberStatus.PENDING:
        return SubscriberStatus.PENDING
    return default


def _update(
    session: Session,
    existing: Subscriber,
    row: ListRow,
    *,
    actor: str,
    via: str,
    consent: str,
    current: Sequence[str] | None = None,
) -> bool:
    """`current`: the subscriber's sectors if the caller read them already (an import reads
    every listed subscriber's at once)."""
    assert existing.id is not None
    before = (existing.name, existing.title, existing.embassy_code, existing.language)
    if current is None:
        current = sectors_of(session, [existing.id]).get(existing.id, ())
    after = (row.name, row.title, row.embassy, row.language)
    if before == after and set(current) == set(row.sectors):
        return False
    existing.name, existing.title, existing.embassy_code, existing.language = after
    session.add(existing)
    set_sectors(session, existing.id, row.sectors)
    audit(session, existing, "updated", actor=actor, via=via, detail=consent)
    return True


def _merge(
    session: Session,
    existing: Subscriber,
    row: ListRow,
    wanted: SubscriberStatus,
    *,
    actor: str,
    via: str,
    consent: str,
    report: ImportReport,
    current: Sequence[str] | None = None,
) -> None:
    """A listed row for a subscriber we have: refused, unchanged or updated, as it says."""
    if existing.status in DEPARTED:
        if wanted not in DEPARTED:
            report.refused.append((existing.email, str(existing.status)))
        else:
            report.unchanged += 1
        return
    changed = _update(
        session, existing, row, actor=actor, via=via, consent=consent, current=current
    )
    if wanted in DEPARTED:
        changed = (
            set_status(session, existing, wanted, actor=actor, via=via, detail=consent) or changed
        )
    if changed:
        report.updated += 1
    else:
        report.unchanged += 1


def _check_secret(session: Session, secret: bytes | None) -> None:
    if secret is None and suppression.has_entries(session):
        # Without the secret the suppression list cannot be read: refuse rather than re-add
        # someone who asked to be erased.
        raise ConfigError("this import needs the instance secret to check the suppression list")


def import_rows(
    session: Session,
    rows: Sequence[ListRow],
    *,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    actor: str = "staff",
    via: str = "import",
    secret: bytes | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Store every row in the caller's transaction (no commit: a dry run rolls it back).

    Addresses on the suppression list are reported in `suppressed` and never stored.
    `progress(done, total)` hears every PROGRESS_EVERY rows and at the end.
    """
    report = ImportReport()
    _check_secret(session, secret)
    blocked = suppression.suppressed(session, secret, (r.email for r in rows)) if secret else set()
    # Everyone the lists name whom we have already, and their sectors: two reads per chunk of
    # addresses instead of two per row; new people are written a chunk at a time.
    have = _by_addresses(session, [r.email for r in rows if r.email not in blocked])
    sectors = sectors_of(session, [s.id for s in have.values() if s.id is not None])
    waiting: list[tuple[ListRow, SubscriberStatus, str]] = []

    def write_waiting() -> None:
        made = create_many(session, waiting, actor=actor, via=via)
        report.added += len(made)
        report.created.extend(made)
        waiting.clear()

    for done, row in enumerate(rows, 1):
        consent = f"import:{row.source}"
        existing = have.get(row.email)
        if row.email in blocked:
            report.suppressed.append(row.email)
        elif existing is None:
            waiting.append((row, _new_status(row, status), consent))
            if len(waiting) >= IMPORT_CHUNK:
                write_waiting()
        else:
            _merge(
                session, existing, row, _new_status(row, status), actor=actor, via=via,
                consent=consent, report=report, current=sectors.get(existing.id or 0, ()),
            )  # fmt: skip
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(rows)):
            progress(done, len(rows))
    if waiting:
        write_waiting()
    session.flush()
    return report


def _by_addresses(session: Session, emails: Sequence[str]) -> dict[str, Subscriber]:
    found: dict[str, Subscriber] = {}
    for start in range(0, len(emails), 500):
        chunk = emails[start : start + 500]
        query = select(Subscriber).where(col(Subscriber.email).in_(chunk))
        found.update((s.email, s) for s in session.exec(query))
    return found


def add(
    session: Session,
    row: ListRow,
    *,
    status: SubscriberStatus,
    actor: str,
    via: str,
    secret: bytes | None = None,
) -> Subscriber:
    """A new subscriber, unless the address is listed or suppressed (no commit)."""
    validate_refs(session, row.embassy, row.sectors)
    _check_secret(session, secret)
    if secret is not None and suppression.is_suppressed(session, secret, row.email):
        raise suppression.SuppressedAddressError(row.email)
    if by_address(session, row.email):
        raise ListImportError(
            f"{row.email} is already subscribed; see `newsletter subscribers show`"
        )
    return create(session, row, status=status, actor=actor, via=via, consent=f"{via}:{actor}")


def list_views(
    session: Session,
    *,
    embassy: str | None = None,
    sector: str | None = None,
    status: str | None = None,
    include_erased: bool = False,
) -> list[SubscriberView]:
    query = select(Subscriber).order_by(col(Subscriber.embassy_code), col(Subscriber.email))
    if embassy:
        query = query.where(Subscriber.embassy_code == embassy)
    if status:
        query = query.where(Subscriber.status == status)
    if sector:
        query = query.join(
            SubscriberSector, col(SubscriberSector.subscriber_id) == col(Subscriber.id)
        ).where(SubscriberSector.sector_code == sector)
    if not include_erased:
        query = query.where(col(Subscriber.email).not_like(suppression.erased_pattern()))
    subscribers = session.exec(query).all()
    sectors = sectors_of(session, [s.id for s in subscribers if s.id is not None])
    return [
        SubscriberView(
            email=s.email, name=s.name, title=s.title, embassy=s.embassy_code,
            sectors=sectors.get(s.id or 0, ()), language=s.language, status=str(s.status),
            consent_source=s.consent_source, id=s.id or 0,
        )
        for s in subscribers
    ]  # fmt: skip
