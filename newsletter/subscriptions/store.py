"""Subscriber rows: add, import, list and change status, each change written to the audit log."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from newsletter.errors import ListImportError, NotFoundError
from newsletter.models import (
    AuditEvent,
    Embassy,
    Sector,
    Subscriber,
    SubscriberSector,
    SubscriberStatus,
    utcnow,
)
from newsletter.subscriptions.lists import ListRow, normalise_email

# An import never brings these back: the person left, or their address does not work.
_NEVER_REACTIVATE = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED}
)


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
    session.add(
        AuditEvent(
            subscriber_id=subscriber.id, action=action, old_status=old,
            new_status=str(subscriber.status), actor=actor, via=via, detail=detail,
        )
    )  # fmt: skip


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


def _set_sectors(session: Session, subscriber_id: int, codes: Sequence[str]) -> None:
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


def sectors_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    ids = list(subscriber_ids)
    out: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.exec(
            select(SubscriberSector.subscriber_id, SubscriberSector.sector_code)
            .join(Sector, col(Sector.code) == col(SubscriberSector.sector_code))
            .where(col(SubscriberSector.subscriber_id).in_(chunk))
            .order_by(col(Sector.position))
        ).all()
        for subscriber_id, code in rows:
            out[subscriber_id].append(code)
    return {k: tuple(v) for k, v in out.items()}


def find(session: Session, email: str) -> Subscriber:
    try:
        address = normalise_email(email)
    except ValueError:
        raise NotFoundError("subscriber", email) from None
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if subscriber is None:
        raise NotFoundError("subscriber", address, "see `newsletter subscribers list`")
    return subscriber


def _validate_refs(session: Session, embassy: str, sectors: Sequence[str]) -> None:
    if session.get(Embassy, embassy) is None:
        raise ListImportError(f"unknown embassy {embassy!r}; see `newsletter embassies list`")
    for code in sectors:
        if session.get(Sector, code) is None:
            raise ListImportError(f"unknown sector {code!r}; see `newsletter sectors list`")


def upsert(
    session: Session,
    row: ListRow,
    *,
    status: SubscriberStatus,
    actor: str,
    via: str,
    consent: str,
    report: ImportReport,
) -> Subscriber:
    """Insert a new subscriber or update an existing one by address (no commit)."""
    existing = session.exec(select(Subscriber).where(Subscriber.email == row.email)).first()
    if existing is None:
        subscriber = Subscriber(
            email=row.email, name=row.name, title=row.title, embassy_code=row.embassy,
            language=row.language, status=status, token_key=secrets.token_urlsafe(24),
            consent_source=consent,
            confirmed_at=utcnow() if status == SubscriberStatus.ACTIVE else None,
        )  # fmt: skip
        session.add(subscriber)
        session.flush()
        assert subscriber.id is not None
        _set_sectors(session, subscriber.id, row.sectors)
        audit(session, subscriber, "created", actor=actor, via=via, detail=consent)
        report.added += 1
        return subscriber
    assert existing.id is not None
    if existing.status in _NEVER_REACTIVATE:
        report.refused.append((existing.email, str(existing.status)))
        return existing
    before = (existing.name, existing.title, existing.embassy_code, existing.language)
    current = sectors_of(session, [existing.id]).get(existing.id, ())
    after = (row.name, row.title, row.embassy, row.language)
    if before == after and set(current) == set(row.sectors):
        report.unchanged += 1
        return existing
    existing.name, existing.title, existing.embassy_code, existing.language = after
    session.add(existing)
    _set_sectors(session, existing.id, row.sectors)
    audit(session, existing, "updated", actor=actor, via=via, detail=consent)
    report.updated += 1
    return existing


def import_rows(
    session: Session,
    rows: Sequence[ListRow],
    *,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    actor: str = "staff",
    via: str = "import",
    commit: bool = True,
) -> ImportReport:
    """All rows in one transaction: either every row is stored or none (`commit=False`: a dry run)."""
    report = ImportReport()
    try:
        for row in rows:
            upsert(
                session, row, status=status, actor=actor, via=via,
                consent=f"import:{row.source}", report=report,
            )  # fmt: skip
        if commit:
            session.commit()
        else:
            session.rollback()
    except Exception:
        session.rollback()
        raise
    return report


def add(
    session: Session, row: ListRow, *, status: SubscriberStatus, actor: str, via: str
) -> Subscriber:
    _validate_refs(session, row.embassy, row.sectors)
    if session.exec(select(Subscriber).where(Subscriber.email == row.email)).first():
        raise ListImportError(
            f"{row.email} is already subscribed; see `newsletter subscribers show`"
        )
    report = ImportReport()
    subscriber = upsert(
        session, row, status=status, actor=actor, via=via, consent=f"{via}:{actor}", report=report
    )
    session.commit()
    return subscriber


def list_views(
    session: Session,
    *,
    embassy: str | None = None,
    sector: str | None = None,
    status: str | None = None,
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
